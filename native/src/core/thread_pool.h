// One persistent pool of worker threads for the whole process, sized to the cores by default.
// run() hands out work items 0..count-1 dynamically; the calling thread works too. Each item must write
// disjoint outputs, so results never depend on which thread ran what.
// Split::dynamic (the default) hands out the next item to whichever thread asks, so the threads move through the
// items together, in order. Split::contiguous gives each thread a run of consecutive items, which it takes in
// order, and a thread whose run is done steals the second half of the longest run left: where consecutive items
// read consecutive memory (the weight panels of a decode step), each thread's loads then stay one stream, which the
// hardware prefetchers follow from item to item.
// Two stages in one job (`second`, the first item of the second stage): an item of the second stage may wait for
// items of the first (a forward's down projection for its expert's up projection) without a barrier between the
// stages. Every thread meets its first-stage items before its second-stage ones (contiguous: each thread's run is its
// share of the first stage, then its share of the second; a thief takes the back of a run), so a thread that waits
// never holds first-stage items it has not run, and the waits always end.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace moe {

// Limits the threads that run() uses on the calling thread while in scope (0 = the whole pool); a layer's
// `threads` option is applied this way, without resizing the shared pool.
class ThreadLimit {
 public:
  explicit ThreadLimit(int threads);
  ~ThreadLimit();
  static int current();

 private:
  int previous_;
};

class ThreadPool {
 public:
  enum class Split { dynamic, contiguous };
  static ThreadPool& instance();
  // Calls fn(item) for item in [0, count), spread over the pool; returns when all are done. Type-erased
  // through a plain function pointer, so a call allocates nothing (once a two-stage job's order has grown).
  // second: where the second stage begins (items [second, count)), or count for one stage.
  template <class F>
  void run(int64_t count, F&& fn, Split split = Split::dynamic, int64_t second = -1) {
    using Fn = std::remove_reference_t<F>;
    run_erased(
        count, [](void* ctx, int64_t item) { (*static_cast<Fn*>(ctx))(item); },
        const_cast<void*>(static_cast<const void*>(&fn)), split, second < 0 ? count : second);
  }
  // Spins until done() holds, yielding now and then: for an item of a job's second stage waiting for items of its
  // first that other threads run.
  template <class Done>
  static void wait_until(Done done) {
    for (int spins = 0; !done(); ++spins) {
      if (spins % 64 == 63) std::this_thread::yield();
      pause();
    }
  }
  void resize(int threads);  // total threads including the caller
  // Wakes sleeping workers ahead of a job that another thread is about to publish (an async call, run by a
  // libuv thread that is itself waking up), so the two wake-ups overlap instead of adding up.
  void prewake();
  int size();

 private:
  using Task = void (*)(void* context, int64_t item);
  static void pause();  // the CPU's spin-wait hint
  void run_erased(int64_t count, Task task, void* context, Split split, int64_t second);
  ThreadPool();
  ~ThreadPool();
  void start(int threads);
  void stop();
  void worker_loop(int id, uint64_t seen_generation, uint64_t seen_prewakes);
  void work(int id);
  void work_contiguous(int id);

  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;      // guards sleeping and waking
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  // The current job, published by a release increment of generation_.
  Task job_ = nullptr;
  void* job_context_ = nullptr;
  int64_t job_count_ = 0;
  int job_threads_ = 0;  // workers with id < job_threads_ join the current job
  std::atomic<int64_t> next_{0};
  // Split::contiguous: thread t's items left, [begin, end) as begin | end << 32, a cache line each.
  struct alignas(64) Run {
    std::atomic<uint64_t> items{0};
  };
  std::unique_ptr<Run[]> runs_;
  bool contiguous_ = false;
  // A two-stage contiguous job: the runs index this order (each thread's shares of the two stages back to back),
  // or null for the items in their own order. Grow-only.
  std::vector<int64_t> order_;
  const int64_t* job_order_ = nullptr;
  std::atomic<int> active_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> prewakes_{0};
  std::atomic<bool> stopping_{false};
  int threads_ = 1;
};

}  // namespace moe
