// A thread that runs posted jobs in order (moe::post_job has one for CPU work and one for GPU work). The Node
// binding's async calls run there, off the event loop, and a CPU one becomes the ThreadPool's caller. With
// libuv's pool instead, each job landed on whichever of its four threads woke, now and then on the core where a
// pool worker was starting the same job, and small async forwards took twice as long (benchmarks/NOTES.md rows
// 41-43). It sleeps as soon as the queue is empty: spinning for the next job kept the event loop's thread off that
// core just when it had to settle the last one (the same notes, rows 43 and 52).
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

namespace moe {

class JobThread {
 public:
  // Starts the thread, which lives as long as the process: destroy no JobThread (post_job never does).
  JobThread();
  // Queues `job`; it runs after every job posted before it. A job must not throw.
  void post(std::function<void()> job);

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
};

}  // namespace moe
