#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <new>

#include "aligned_buffer.h"
#include "expert_cache_impl.h"

namespace moe {

namespace {
using clock = std::chrono::steady_clock;
double ms_since(clock::time_point t) { return std::chrono::duration<double, std::milli>(clock::now() - t).count(); }

void add(CacheCounts& a, const CacheCounts& b) {
  a.hits += b.hits, a.misses += b.misses, a.prefetches += b.prefetches, a.prefetch_hits += b.prefetch_hits;
  a.reads += b.reads, a.read_errors += b.read_errors, a.bytes_read += b.bytes_read, a.read_ms += b.read_ms;
  a.wait_ms += b.wait_ms, a.evictions += b.evictions;
}
}  // namespace

ExpertCache::ExpertCache(const ExpertCacheOptions& options) : impl_(std::make_unique<Impl>(options)) {}
ExpertCache::~ExpertCache() = default;
ExpertCacheStats ExpertCache::stats() const { return impl_->stats(); }
void ExpertCache::reset_stats() { impl_->reset_stats(); }
void ExpertCache::clear() { impl_->clear(); }
const ExpertCacheOptions& ExpertCache::options() const { return impl_->options; }

ExpertCache::Impl::Impl(const ExpertCacheOptions& o) : options(o) {
  for (int i = 0; i < std::max(1, o.io_threads); ++i) io_.emplace_back([this] { io_loop(); });
}

ExpertCache::Impl::~Impl() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closing_ = true;
  }
  work_.notify_all();
  for (auto& t : io_) t.join();
  for (auto& [k, e] : entries_) aligned_free(e->bytes), e->bytes = nullptr;
  for (auto& [size, p] : free_) aligned_free(p);
}

int ExpertCache::Impl::attach(std::shared_ptr<const ExpertStore> store, const std::string& label) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int id = next_store_++;
  Store& s = stores_[id];
  s.file = std::move(store);
  s.label = label;
  return id;
}

void ExpertCache::Impl::forget_idle(int store) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    CachedExpert& e = *it->second;
    if ((store < 0 || e.store == store) && e.pins == 0 && e.state != CachedExpert::State::loading) {
      forget(e);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

void ExpertCache::Impl::detach(int store) {
  std::lock_guard<std::mutex> lock(mutex_);
  forget_idle(store);
  // (an expert still pinned or loading leaves when released)
  Store& s = stores_[store];
  add(detached_, s.counts);
  s.counts = CacheCounts{};
  s.detached = true;
  s.file.reset();
}

double ExpertCache::Impl::score_now(const CachedExpert& e) const {
  const int64_t now = stores_.at(e.store).clock;
  // 2^(-age / half_life), through exp: exp2 would need glibc 2.29, past the prebuilt binaries' floor
  // (native/binding/glibc_floor.cpp keeps exp at the old version).
  constexpr double kLn2 = 0.69314718055994530942;
  return e.score * std::exp(-static_cast<double>(now - e.score_at) * kLn2 / std::max(1e-9, options.half_life));
}

void ExpertCache::Impl::forget(CachedExpert& e) {
  if (e.bytes) give_buffer(e.bytes, e.size), e.bytes = nullptr;
  if (e.counted) {
    e.counted = false;
    used_ -= e.size;
    Store& s = stores_[e.store];
    s.resident_bytes -= e.size;
    s.resident_experts -= 1;
  }
}

unsigned char* ExpertCache::Impl::take_buffer(size_t size) {
  const auto it = free_.find(size);
  if (it != free_.end()) {
    unsigned char* p = it->second;
    free_.erase(it);
    free_bytes_ -= size;
    return p;
  }
  // Free buffers of other sizes count against the budget too: let them go before a fresh one is allocated.
  while (!free_.empty() && used_ + free_bytes_ + size > options.bytes) {
    aligned_free(free_.begin()->second);
    free_bytes_ -= free_.begin()->first;
    free_.erase(free_.begin());
  }
  return nullptr;  // (the I/O thread allocates it, outside the lock: new_buffer)
}

unsigned char* ExpertCache::Impl::new_buffer(size_t size) {
  // 2 MiB-aligned and advised to use a transparent huge page: fewer faults when the read first touches it and fewer
  // TLB entries for the GEMM's stream. (kStoreAlign divides the alignment: O_DIRECT reads into it.) A read into fresh
  // memory still costs more than one into a reused buffer (~4.5 ms against ~1.9 for 2.67 MB on this VM, which faults
  // fresh memory in from its host): the price of a cache that is still filling (docs/expert-cache.md).
  void* p = aligned_malloc(kHugePageBytes, size);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, size, MADV_HUGEPAGE);
#endif
  return static_cast<unsigned char*>(p);
}

void ExpertCache::Impl::give_buffer(unsigned char* p, size_t size) {
  // Kept for the next miss (of the same size: every expert of a layer, and of a model's layers alike), whose
  // fresh memory would otherwise fault in page by page.
  free_.emplace(size, p);
  free_bytes_ += size;
}

bool ExpertCache::Impl::evict_one() {
  std::unordered_map<uint64_t, std::shared_ptr<CachedExpert>>::iterator victim = entries_.end();
  double best = 0;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const CachedExpert& e = *it->second;
    if (e.pins > 0 || e.state == CachedExpert::State::loading) continue;
    // (an expert of a disposed layer first: nothing will use it, and its layer's clock, which its score decays by,
    // has stopped)
    const double s = stores_.at(e.store).detached         ? -1.0
                     : options.policy == CachePolicy::lru ? static_cast<double>(e.last_tick)
                                                          : score_now(e);
    if (victim == entries_.end() || s < best) victim = it, best = s;
  }
  if (victim == entries_.end()) return false;
  CachedExpert& e = *victim->second;
  stores_[e.store].counts.evictions += 1;
  forget(e);
  entries_.erase(victim);
  return true;
}

std::shared_ptr<CachedExpert> ExpertCache::Impl::admit(int store, int64_t expert, bool prefetch) {
  const size_t size = stores_[store].file->layout().stride();
  while (used_ + size > options.bytes && evict_one()) {
  }
  if (prefetch && used_ + size > options.bytes) return nullptr;  // (a guess never goes past the budget)
  auto e = std::make_shared<CachedExpert>();
  e->store = store, e->expert = expert, e->size = size, e->prefetched = prefetch;
  e->file = stores_[store].file;
  e->bytes = take_buffer(size);
  e->pins = 1;  // (the read's own pin)
  e->counted = true;
  used_ += size;
  peak_ = std::max(peak_, used_);
  Store& s = stores_[store];
  s.resident_bytes += size;
  s.resident_experts += 1;
  entries_[key(store, expert)] = e;
  if (prefetch)
    queue_.push_back(e), s.counts.prefetches += 1;
  else
    queue_.push_front(e);  // (a forward waits for it: ahead of guesses)
  work_.notify_one();
  return e;
}

void ExpertCache::Impl::acquire(int store, const std::vector<int64_t>& experts,
                                std::vector<std::shared_ptr<CachedExpert>>& out) {
  std::lock_guard<std::mutex> lock(mutex_);
  Store& s = stores_[store];
  s.clock += 1;
  out.clear();
  for (int64_t x : experts) {
    auto it = entries_.find(key(store, x));
    std::shared_ptr<CachedExpert> e;
    if (it != entries_.end()) {
      e = it->second;
      s.counts.hits += 1;
      if (e->prefetched) s.counts.prefetch_hits += 1, e->prefetched = false;
    } else {
      s.counts.misses += 1;
      e = admit(store, x, false);
    }
    e->pins += 1;
    e->last_tick = ++tick_;
    e->score = score_now(*e) + 1, e->score_at = s.clock;
    out.push_back(std::move(e));
  }
}

int64_t ExpertCache::Impl::prefetch(int store, const std::vector<int64_t>& experts) {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t started = 0;
  for (int64_t x : experts) {
    if (entries_.count(key(store, x))) continue;
    auto e = admit(store, x, true);
    if (!e) break;
    ++started;
    e->last_tick = ++tick_;
    e->score = 1, e->score_at = stores_[store].clock;
  }
  return started;
}

void ExpertCache::Impl::wait_any(int store, const std::vector<std::shared_ptr<CachedExpert>>& entries,
                                 std::vector<char>& seen) {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto fresh = [&] {
    bool any = false;
    for (size_t i = 0; i < entries.size(); ++i)
      if (!seen[i] && entries[i]->state != CachedExpert::State::loading) seen[i] = 1, any = true;
    return any;
  };
  if (fresh()) return;
  const auto t = clock::now();
  done_.wait(lock, fresh);
  stores_[store].counts.wait_ms += ms_since(t);
}

void ExpertCache::Impl::release(const std::vector<std::shared_ptr<CachedExpert>>& entries) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& e : entries) {
    e->pins -= 1;
    if (e->pins == 0 && e->state == CachedExpert::State::ready && stores_[e->store].detached) {
      entries_.erase(key(e->store, e->expert));
      forget(*e);
    }
  }
  // Past the budget (a forward needed more at once than it holds): back within it now that they are free.
  while (used_ > options.bytes && evict_one()) {
  }
}

void ExpertCache::Impl::io_loop() {
  for (;;) {
    std::shared_ptr<CachedExpert> e;
    std::shared_ptr<const ExpertStore> file;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_.wait(lock, [&] { return closing_ || !queue_.empty(); });
      if (closing_) return;
      e = std::move(queue_.front());
      queue_.pop_front();
      file = e->file;
    }
    const auto t = clock::now();
    std::string error;
    try {
      if (!e->bytes) e->bytes = new_buffer(e->size);  // (only this thread touches it while loading)
      file->read(e->expert, e->bytes);
    } catch (const std::exception& x) {
      error = x.what();
    }
    const double ms = ms_since(t);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      Store& s = stores_[e->store];
      s.counts.reads += 1, s.counts.read_ms += ms;
      e->pins -= 1;
      if (error.empty()) {
        s.counts.bytes_read += static_cast<double>(e->size);
        e->state = CachedExpert::State::ready;
        if (s.detached && e->pins == 0) {  // (a prefetch for a layer disposed meanwhile)
          entries_.erase(key(e->store, e->expert));
          forget(*e);
        }
      } else {
        // The failure is that forward's error; the entry leaves, so the next forward reads it again.
        s.counts.read_errors += 1;
        e->error = error;
        e->state = CachedExpert::State::failed;
        auto it = entries_.find(key(e->store, e->expert));
        if (it != entries_.end() && it->second == e) entries_.erase(it);
        forget(*e);
      }
    }
    done_.notify_all();
  }
}

ExpertCacheStats ExpertCache::Impl::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ExpertCacheStats out;
  out.total = detached_;
  out.budget = options.bytes, out.resident_bytes = used_, out.peak_bytes = peak_;
  out.over_budget_bytes = used_ > options.bytes ? used_ - options.bytes : 0;
  for (const auto& [id, s] : stores_) {
    if (s.detached) continue;
    add(out.total, s.counts);
    out.resident_experts += s.resident_experts;
    out.layers.push_back({s.label, s.counts, s.resident_bytes, s.resident_experts});
  }
  return out;
}

void ExpertCache::Impl::reset_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  detached_ = CacheCounts{};
  for (auto& [id, s] : stores_) s.counts = CacheCounts{};
  peak_ = used_;
}

void ExpertCache::Impl::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  forget_idle(-1);
  for (auto& [size, p] : free_) aligned_free(p);
  free_.clear();
  free_bytes_ = 0;
}

}  // namespace moe
