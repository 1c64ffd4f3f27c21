// The expert cache's inside, as the layers use it: stores registered per layer, experts pinned while a forward
// computes with them, reads on the cache's own I/O threads.
#pragma once
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "expert_store.h"
#include "moe/expert_cache.h"

namespace moe {

// One expert of one store in memory (or on its way there).
struct CachedExpert {
  enum class State { loading, ready, failed };
  int store = 0;
  int64_t expert = 0;
  std::shared_ptr<const ExpertStore> file;  // (its layer may be gone before its read is done)
  bool counted = false;                     // its size is in the budget's use (from admission until it leaves)
  unsigned char* bytes = nullptr;           // the record (StoreLayout), kStoreAlign-aligned; owned by the cache
  size_t size = 0;
  State state = State::loading;  // guarded by the cache's mutex
  std::string error;             // when failed
  int pins = 0;                  // forwards computing with it (and its read while loading)
  uint64_t last_tick = 0;        // lru: the cache's use counter at its last use
  double score = 0;              // lfru: uses, halving every half_life forwards of its layer ...
  int64_t score_at = 0;          // ... as of this forward of its layer
  bool prefetched = false;       // read by a prefetch and not used by a forward yet
};

struct ExpertCache::Impl {
  explicit Impl(const ExpertCacheOptions& options);
  ~Impl();

  // A layer's store joins the cache under `label` (its stats' name); returns its id.
  int attach(std::shared_ptr<const ExpertStore> store, const std::string& label);
  // The layer is gone: its experts leave (those in use or being read leave when done).
  void detach(int store);

  // One forward's experts of a store: each pinned, the missing ones' reads started at once (ahead of prefetches).
  // Counts the forward on the store's clock (lfru). out[i] is experts[i]'s entry.
  void acquire(int store, const std::vector<int64_t>& experts, std::vector<std::shared_ptr<CachedExpert>>& out);
  // Waits until one of `entries` that is not yet marked in `seen` is no longer loading, and marks every such one;
  // adds the time waited to the store's wait_ms.
  void wait_any(int store, const std::vector<std::shared_ptr<CachedExpert>>& entries, std::vector<char>& seen);
  void release(const std::vector<std::shared_ptr<CachedExpert>>& entries);
  // Starts reading experts not resident (a guess at a coming forward's); pins nothing, waits for nothing.
  int64_t prefetch(int store, const std::vector<int64_t>& experts);  // returns the reads it started

  ExpertCacheStats stats() const;
  void reset_stats();
  void clear();
  ExpertCacheOptions options;

 private:
  struct Store {
    std::shared_ptr<const ExpertStore> file;
    std::string label;
    CacheCounts counts;
    int64_t clock = 0;
    size_t resident_bytes = 0;
    int64_t resident_experts = 0;
    bool detached = false;
  };
  static uint64_t key(int store, int64_t expert) { return (static_cast<uint64_t>(store) << 40) | expert; }
  // A new entry for a miss: room made by evicting unpinned ready experts (past the budget if none can go), then
  // its read queued. Called with the mutex held.
  std::shared_ptr<CachedExpert> admit(int store, int64_t expert, bool prefetch);
  bool evict_one();              // (mutex held) false when no expert can leave
  void forget(CachedExpert& e);  // (mutex held) frees an entry's memory and accounting
  void forget_idle(int store);   // (mutex held) every expert of `store` (-1: of all) not pinned nor loading leaves
  unsigned char* take_buffer(size_t size);  // a freed buffer of this size, or null (then new_buffer)
  static unsigned char* new_buffer(size_t size);
  void give_buffer(unsigned char* p, size_t size);
  void io_loop();
  double score_now(const CachedExpert& e) const;

  mutable std::mutex mutex_;
  std::condition_variable done_;  // an entry stopped loading
  std::condition_variable work_;  // a read was queued (or the cache is closing)
  std::deque<std::shared_ptr<CachedExpert>> queue_;
  std::vector<std::thread> io_;
  bool closing_ = false;
  std::unordered_map<uint64_t, std::shared_ptr<CachedExpert>> entries_;
  std::map<int, Store> stores_;
  int next_store_ = 0;
  uint64_t tick_ = 0;
  size_t used_ = 0, peak_ = 0;
  std::multimap<size_t, unsigned char*> free_;  // buffers of evicted experts, reused by size
  size_t free_bytes_ = 0;
  CacheCounts detached_;  // the counts of layers gone, kept in the totals
};

}  // namespace moe
