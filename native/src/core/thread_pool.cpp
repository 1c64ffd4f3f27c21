#include "thread_pool.h"

#include <atomic>
#include <cstdlib>

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
}  // namespace

ThreadLimit::ThreadLimit(int threads) : previous_(tls_thread_limit) { tls_thread_limit = threads; }
ThreadLimit::~ThreadLimit() { tls_thread_limit = previous_; }
int ThreadLimit::current() { return tls_thread_limit; }

ThreadPool& ThreadPool::instance() {
  static ThreadPool pool;
  return pool;
}

ThreadPool::ThreadPool() { start(default_threads()); }
ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::start(int threads) {
  threads_ = threads;
  stopping_ = false;
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
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

// Takes items until none are left. Items are claimed under the mutex: they are coarse (a tile of a GEMM),
// so the lock is not contended enough to matter, and it keeps the bookkeeping obvious.
void ThreadPool::work() {
  for (;;) {
    int64_t item;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_ >= job_count_) return;
      item = next_++;
    }
    job_(job_context_, item);
  }
}

void ThreadPool::worker_loop(int id) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if (id >= job_threads_) continue;
      ++active_;
    }
    work();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }
}

void ThreadPool::run_erased(int64_t count, Task task, void* context) {
  if (count <= 0) return;
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  const int limit = ThreadLimit::current();
  const int threads = limit > 0 && limit < threads_ ? limit : threads_;
  if (threads == 1 || count == 1) {
    for (int64_t i = 0; i < count; ++i) task(context, i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = task;
    job_context_ = context;
    job_count_ = count;
    job_threads_ = threads;
    next_ = 0;
    ++generation_;
  }
  wake_.notify_all();
  work();
  std::unique_lock<std::mutex> lock(mutex_);
  // Workers that woke late find no item and leave at once; wait until every one that joined has left.
  done_.wait(lock, [&] { return active_ == 0 && next_ >= job_count_; });
  job_ = nullptr;
}

}  // namespace moe
