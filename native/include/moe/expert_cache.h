// An expert cache shared by the layers of a model whose routed experts live on disk (issue 32): each layer's experts
// in a packed store file (core/expert_store.h), read on a miss into memory drawn from one byte budget for all
// layers. A forward routes first, asks for its experts at once (misses start reading on the cache's I/O threads),
// computes the resident ones while the others arrive, and each missing one as soon as its bytes are in.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moe {

// Which expert leaves when the budget is full (pinned experts, in use by a forward, never do):
//   lru:  the least recently used (Mixtral-offloading's policy; the baseline).
//   lfru: the lowest frequency-with-recency score, each use adding 1 to a count that halves every `half_life`
//         forwards of its layer (LRFU, Lee et al. 2001): experts a layer keeps choosing stay through bursts of others,
//         and a once-hot expert fades instead of staying forever as under plain counts.
enum class CachePolicy { lru, lfru };

struct ExpertCacheOptions {
  size_t bytes = 0;  // the budget for every layer's routed experts together
  CachePolicy policy = CachePolicy::lfru;
  int io_threads = 4;       // positional reads in flight at once
  double half_life = 32.0;  // lfru: forwards of a layer after which a use counts half
};

// Counts since the cache was made (or reset_stats); per layer, by the label its layer was attached with.
struct CacheCounts {
  int64_t hits = 0, misses = 0;               // experts a forward found resident / had to read (prefetched ones: hits)
  int64_t prefetches = 0, prefetch_hits = 0;  // reads started by a prefetch, and of those, ones a forward then used
  int64_t reads = 0, read_errors = 0;
  double bytes_read = 0, read_ms = 0;  // bytes and summed milliseconds of the reads (on the I/O threads)
  double wait_ms = 0;                  // milliseconds forwards waited for bytes with nothing left to compute
  int64_t evictions = 0;
};
struct LayerCacheCounts {
  std::string label;
  CacheCounts counts;
  size_t resident_bytes = 0;
  int64_t resident_experts = 0;
};
struct ExpertCacheStats {
  CacheCounts total;
  size_t budget = 0, resident_bytes = 0, peak_bytes = 0;
  int64_t resident_experts = 0;
  // Bytes admitted past the budget because every resident expert was in use by a forward (a budget smaller than one
  // forward's experts); they leave as soon as that forward is done.
  size_t over_budget_bytes = 0;
  std::vector<LayerCacheCounts> layers;
};

class ExpertCache {
 public:
  explicit ExpertCache(const ExpertCacheOptions& options);
  ~ExpertCache();
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;
  ExpertCacheStats stats() const;
  void reset_stats();
  // Drops every expert no forward is using (memory back to the system); stats are kept.
  void clear();
  const ExpertCacheOptions& options() const;

  struct Impl;  // core/expert_cache_impl.h: what the layers use
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
