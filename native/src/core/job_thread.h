// One thread for the whole process that runs posted jobs in order. The Node binding's async calls run here,
// off the event loop, and each becomes the ThreadPool's caller for its forward. With libuv's pool instead, each
// job landed on whichever of its four threads woke, now and then on the core where a pool worker was starting
// the same job (benchmarks/NOTES.md rows 41-43). It sleeps as soon as the queue is empty: spinning for the next
// job kept the event loop's thread off that core just when it had to settle the last one (row 43).
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

namespace moe {

class JobThread {
 public:
  // Created on first use and never destroyed: the thread sleeps when idle, and callers make sure that no job
  // they posted is still running when what it touches goes away.
  static JobThread& instance();
  // Queues `job`; it runs after every job posted before it. A job must not throw.
  void post(std::function<void()> job);

 private:
  JobThread();
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
};

}  // namespace moe
