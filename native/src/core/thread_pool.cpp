#include "thread_pool.h"

#include <chrono>
#include <cstdlib>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define MOE_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define MOE_PAUSE() asm volatile("yield")
#else
#define MOE_PAUSE() ((void)0)
#endif

namespace moe {

namespace {
int default_threads() {
  if (const char* env = std::getenv("MOE_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1 && n <= 256) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}
thread_local int tls_thread_limit = 0;
// A worker spins this long for the next job before it sleeps, and the caller this long for the workers to
// finish before it sleeps: the phases of one forward follow each other within microseconds, and a futex
// wake-up costs tens of them (more in a VM). Both spins are short and yield, so that on a machine with more
// runnable threads than cores (a server, another library's pool) nobody spins while the thread it waits for
// is descheduled.
constexpr auto kSpin = std::chrono::microseconds(50);
// After prewake(): the thread that will publish the job (libuv's, for an async call) may itself be waking up,
// which after an idle spell takes hundreds of microseconds in a VM.
constexpr auto kPrewakeSpin = std::chrono::milliseconds(2);

// Spins until done() or `spin` is up, yielding now and then; true when done() held.
template <class Done>
bool spin_until(Done done, std::chrono::microseconds spin = kSpin) {
  const auto until = std::chrono::steady_clock::now() + spin;
  for (int round = 0; !done(); ++round) {
    if (std::chrono::steady_clock::now() >= until) return false;
    for (int i = 0; i < 32; ++i) MOE_PAUSE();
    if (round % 8 == 7) std::this_thread::yield();
  }
  return true;
}
}  // namespace

void ThreadPool::pause() { MOE_PAUSE(); }

ThreadLimit::ThreadLimit(int threads) : previous_(tls_thread_limit) { tls_thread_limit = threads; }
ThreadLimit::~ThreadLimit() { tls_thread_limit = previous_; }
int ThreadLimit::current() { return tls_thread_limit; }

ThreadPool& ThreadPool::instance() {
#ifdef _WIN32
  // Never destroyed on Windows: when a process exits there, every other thread is ended first and only then do the
  // DLL's static destructors run (under the loader lock), so joining the workers at that point waits forever. The
  // system reclaims them with the process.
  static ThreadPool* pool = new ThreadPool;
  return *pool;
#else
  static ThreadPool pool;
  return pool;
#endif
}

ThreadPool::ThreadPool() { start(default_threads()); }
ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::start(int threads) {
  threads_ = threads;
  runs_.reset(new Run[threads]);
  stopping_ = false;
  // A worker started by resize() must not take the last job, finished before it existed, for a new one: it
  // would acknowledge it (active_ then miscounts the next job: a caller that returns while a worker still runs
  // its items, or one that waits forever) and read that job's fields unsynchronised. Called under run_mutex_
  // (or before any job), so the generation cannot move meanwhile.
  const uint64_t generation = generation_.load(std::memory_order_acquire);
  const uint64_t prewakes = prewakes_.load(std::memory_order_relaxed);
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this, i, generation, prewakes] { worker_loop(i, generation, prewakes); });
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

int ThreadPool::size() {
  std::lock_guard<std::mutex> lock(run_mutex_);
  return threads_;
}

void ThreadPool::resize(int threads) {
  std::lock_guard<std::mutex> lock(run_mutex_);
  if (threads == threads_) return;
  stop();
  start(threads);
}

void ThreadPool::work(int id) {
  if (contiguous_) return work_contiguous(id);
  for (int64_t item = next_.fetch_add(1, std::memory_order_relaxed); item < job_count_;
       item = next_.fetch_add(1, std::memory_order_relaxed))
    job_(job_context_, item);
}

namespace {
constexpr uint64_t pack_run(uint64_t begin, uint64_t end) { return begin | end << 32; }
constexpr int64_t run_begin(uint64_t run) { return static_cast<int64_t>(run & 0xffffffffu); }
constexpr int64_t run_end(uint64_t run) { return static_cast<int64_t>(run >> 32); }
}  // namespace

// Every item moves out of a run by one compare-and-swap (the owner's from the front, a thief's of a back half), so
// each runs exactly once. A thread returns when it finds every run empty; items a thief holds between taking them
// and publishing them as its own run are run by that thief, and the caller's wait covers them.
void ThreadPool::work_contiguous(int id) {
  std::atomic<uint64_t>& own = runs_[id].items;
  for (;;) {
    uint64_t run = own.load(std::memory_order_relaxed);
    while (run_begin(run) < run_end(run)) {
      if (own.compare_exchange_weak(run, pack_run(run_begin(run) + 1, run_end(run)), std::memory_order_relaxed)) {
        job_(job_context_, job_order_ ? job_order_[run_begin(run)] : run_begin(run));
        run = own.load(std::memory_order_relaxed);
      }
    }
    // Steal the back half of the longest run (at least its last item).
    int victim = -1;
    int64_t longest = 0;
    for (int t = 0; t < job_threads_; ++t) {
      const uint64_t r = runs_[t].items.load(std::memory_order_relaxed);
      if (run_end(r) - run_begin(r) > longest) longest = run_end(r) - run_begin(r), victim = t;
    }
    if (victim < 0) return;
    uint64_t r = runs_[victim].items.load(std::memory_order_relaxed);
    const int64_t begin = run_begin(r), end = run_end(r);
    if (begin >= end) continue;
    const int64_t middle = begin + (end - begin) / 2;  // the victim keeps [begin, middle), which may be empty
    if (runs_[victim].items.compare_exchange_strong(r, pack_run(begin, middle), std::memory_order_relaxed))
      own.store(pack_run(middle, end), std::memory_order_relaxed);
  }
}

void ThreadPool::prewake() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    prewakes_.fetch_add(1, std::memory_order_relaxed);
  }
  wake_.notify_all();
}

void ThreadPool::worker_loop(int id, uint64_t seen, uint64_t seen_prewake) {
  std::chrono::microseconds spin = kSpin;
  const auto job_or_stop = [&] {
    return generation_.load(std::memory_order_acquire) != seen || stopping_.load(std::memory_order_relaxed);
  };
  for (;;) {
    // Spin briefly for the next job, then sleep until one is published (or a prewake asks for a longer spin).
    spin_until(job_or_stop, spin);
    spin = kSpin;
    if (!job_or_stop()) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return job_or_stop() || prewakes_.load(std::memory_order_relaxed) != seen_prewake; });
      seen_prewake = prewakes_.load(std::memory_order_relaxed);
      if (!job_or_stop()) {
        spin = kPrewakeSpin;
        continue;
      }
    }
    if (stopping_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    seen_prewake = prewakes_.load(std::memory_order_relaxed);  // a prewake for this job is spent
    if (id < job_threads_) work(id);
    // Every worker acknowledges every job, working or not; the last one wakes a caller that went to sleep.
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
  }
}

void ThreadPool::run_erased(int64_t count, Task task, void* context, Split split, int64_t second) {
  if (count <= 0) return;
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  const int limit = ThreadLimit::current();
  const int threads = limit > 0 && limit < threads_ ? limit : threads_;
  if (threads == 1 || count == 1) {
    for (int64_t i = 0; i < count; ++i) task(context, i);
    return;
  }
  job_ = task;
  job_context_ = context;
  job_count_ = count;
  job_threads_ = threads;
  next_.store(0, std::memory_order_relaxed);
  // (runs are 32-bit item indices: a job of more items than that takes items dynamically)
  contiguous_ = split == Split::contiguous && count < (int64_t{1} << 31);
  job_order_ = nullptr;
  if (contiguous_ && second > 0 && second < count) {
    // Thread t's run: its share of the first stage, then its share of the second, as positions in order_.
    order_.resize(static_cast<size_t>(count));
    const int64_t later = count - second;
    int64_t at = 0;
    for (int t = 0; t < threads_; ++t) {
      const int64_t begin = at;
      if (t < threads) {
        for (int64_t i = second * t / threads; i < second * (t + 1) / threads; ++i) order_[at++] = i;
        for (int64_t i = later * t / threads; i < later * (t + 1) / threads; ++i) order_[at++] = second + i;
      }
      runs_[t].items.store(pack_run(begin, at), std::memory_order_relaxed);
    }
    job_order_ = order_.data();
  } else if (contiguous_) {
    for (int t = 0; t < threads_; ++t)
      runs_[t].items.store(t < threads ? pack_run(count * t / threads, count * (t + 1) / threads) : 0,
                           std::memory_order_relaxed);
  }
  active_.store(threads_ - 1, std::memory_order_relaxed);  // every worker reports once per job
  {
    std::lock_guard<std::mutex> lock(mutex_);  // pairs with the sleepers' predicate check: no lost wake-up
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  work(0);
  // Every worker acknowledges (after its last item); the job fields stay valid and no worker can fall a job
  // behind until then.
  if (!spin_until([&] { return active_.load(std::memory_order_acquire) == 0; })) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return active_.load(std::memory_order_acquire) == 0; });
  }
}

}  // namespace moe
