// Models larger than memory (issue 32): decode through an ExpertCache against the same stores read through the OS
// page cache, at equal resident memory. No Node; `npm run bench -- --expert-cache` runs it.
//   build/moe_expert_cache_bench generate DIR [layers]      write int4 stores of Qwen3-30B-A3B-shaped layers (128
//                                                           experts of 768, dModel 2048), random codes
//   build/moe_expert_cache_bench run DIR [layers] [tokens] [budgets%,...] [threads]
//                                                           (each run decodes `tokens` untimed first: the cache fills)
// Routing is synthetic, with the skew of real MoE traffic (see `Router`): each layer has its own Zipf popularity
// (s = 0.9) over a random order of its experts, and each of a token's k choices repeats one of the previous token's
// choices in that layer with probability 0.35 (temporal locality). Both paths see the same choices.
//   cache:      the layers built on their stores and one ExpertCache (lfru, 4 I/O threads) of the budget; O_DIRECT
//               reads, so the page cache holds nothing of the stores.
//   page cache: every store mmapped (what llama.cpp does); each expert computed from the mapping where it lies
//               (page faults read it, with the kernel's readahead); resident memory capped at the budget by
//               evicting the least recently used experts' pages (madvise + posix_fadvise DONTNEED), as a memory
//               cgroup's reclaim would (LRU at the granularity of an expert instead of a page).
// Before each run every store's pages are dropped from the page cache (posix_fadvise DONTNEED; this VM does not
// let /proc/sys/vm/drop_caches be written).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "../../native/src/core/expert_store.h"
#include "../../native/src/core/experts.h"
#include "moe/expert_cache.h"
#include "moe/moe.h"

namespace {

constexpr int64_t kExperts = 128, kDModel = 2048, kDHidden = 768;
constexpr int kTopK = 8;
const char* kFingerprint = "expert-cache-bench-1";

moe::ExpertShape shape() {
  moe::ExpertShape s{kExperts, kDModel, kDHidden, moe::Activation::swiglu};
  s.weight_dtype = moe::WeightDtype::int4;
  s.group_size = 32;
  return s;
}
std::string store_path(const std::string& dir, int layer) {
  return dir + "/layer" + std::to_string(layer) + ".moestore";
}

uint64_t next(uint64_t& s) {  // xorshift64*
  s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
  return s * 2685821657736338717ull;
}

void generate(const std::string& dir, int layers) {
  const moe::ExpertShape s = shape();
  const int64_t up = kExperts * kDHidden * kDModel, down = kExperts * kDModel * kDHidden;
  std::vector<uint8_t> c1(up / 2), c3(up / 2), c2(down / 2);
  std::vector<uint16_t> s1(up / 32), s3(up / 32), s2(down / 32);
  std::vector<float> router(kExperts * kDModel, 0.0f);
  for (int l = 0; l < layers; ++l) {
    const auto t = std::chrono::steady_clock::now();
    uint64_t seed = 0x9e3779b97f4a7c15ull * (l + 1);
    for (auto* v : {&c1, &c3, &c2})
      for (auto& b : *v) b = static_cast<uint8_t>(next(seed) >> 56);
    // scales around 0.01 (float16 bits 0x2000..0x23ff): the outputs stay finite whatever the codes
    for (auto* v : {&s1, &s3, &s2})
      for (auto& h : *v) h = static_cast<uint16_t>(0x2000 | (next(seed) >> 54));
    moe::ExpertWeights w;
    w.q1 = {c1.data(), s1.data()}, w.q3 = {c3.data(), s3.data()}, w.q2 = {c2.data(), s2.data()};
    moe::LayerConfig config{s, kTopK, true, 0, {}};
    moe::CpuLayer layer(config, router.data(), w);
    layer.write_expert_store(store_path(dir, l), kFingerprint);
    std::printf("layer %d written in %.1f s\n", l,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
    std::fflush(stdout);
  }
}

// Synthetic routing with skew and temporal locality (see the top of the file).
struct Router {
  Router(int layers, uint64_t seed) : rng(seed), last(layers) {
    std::vector<double> weights(kExperts);
    for (int64_t r = 0; r < kExperts; ++r) weights[r] = 1.0 / std::pow(double(r + 1), 0.9);
    zipf = std::discrete_distribution<int>(weights.begin(), weights.end());
    for (int l = 0; l < layers; ++l) {
      std::vector<int32_t> order(kExperts);
      for (int64_t e = 0; e < kExperts; ++e) order[e] = static_cast<int32_t>(e);
      std::shuffle(order.begin(), order.end(), rng);
      rank_to_expert.push_back(order);
    }
  }
  std::vector<int32_t> route(int layer) {
    std::vector<int32_t> chosen;
    std::vector<int32_t>& prev = last[layer];
    while (static_cast<int>(chosen.size()) < kTopK) {
      int32_t e;
      if (!prev.empty() && std::bernoulli_distribution(0.35)(rng))
        e = prev[std::uniform_int_distribution<size_t>(0, prev.size() - 1)(rng)];
      else
        e = rank_to_expert[layer][zipf(rng)];
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    prev = chosen;
    return chosen;
  }
  std::mt19937_64 rng;
  std::discrete_distribution<int> zipf;
  std::vector<std::vector<int32_t>> rank_to_expert, last;
};

void drop_page_cache(const std::string& dir, int layers) {
  for (int l = 0; l < layers; ++l) {
    const int fd = ::open(store_path(dir, l).c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Result {
  double tokens_per_s = 0, hit_rate = 0, bytes_per_token = 0, wait_share = 0, read_ms = 0;
};

// The decode loop: per token, every layer in turn on x (the previous layer's output, rescaled).
template <class Forward>
Result decode(int layers, int tokens, int warmup, Forward forward, Router& router, std::vector<float>& x) {
  std::vector<float> y(kDModel), w(kTopK, 1.0f / kTopK);
  double start = 0;
  for (int t = 0; t < warmup + tokens; ++t) {
    if (t == warmup) start = now_s();
    for (int l = 0; l < layers; ++l) {
      const std::vector<int32_t> e = router.route(l);
      forward(l, x.data(), e.data(), w.data(), y.data(), t == warmup && l == 0);
      double n = 0;
      for (float v : y) n += double(v) * v;
      const float scale = n > 0 ? static_cast<float>(1.0 / std::sqrt(n / kDModel)) : 1.0f;
      for (int64_t i = 0; i < kDModel; ++i) x[i] = y[i] * scale;
    }
  }
  Result r;
  r.tokens_per_s = tokens / (now_s() - start);
  return r;
}

Result run_cache(const std::string& dir, int layers, int tokens, int warmup, size_t budget, uint64_t seed) {
  drop_page_cache(dir, layers);
  auto cache = std::make_shared<moe::ExpertCache>(moe::ExpertCacheOptions{budget, moe::CachePolicy::lfru, 4, 32.0});
  std::vector<float> router(kExperts * kDModel, 0.0f);
  std::vector<std::shared_ptr<moe::Layer>> built;
  for (int l = 0; l < layers; ++l) {
    moe::LayerSpec spec;
    spec.config = moe::LayerConfig{shape(), kTopK, true, 0, {}};
    spec.router = router.data();
    spec.store = {cache, store_path(dir, l), kFingerprint, "layer " + std::to_string(l)};
    built.push_back(moe::make_layer(spec));
  }
  Router routes(layers, seed);
  std::vector<float> x(kDModel, 1.0f), counts(kExperts);
  std::vector<int32_t> tpe(kExperts);
  double wall0 = 0;
  Result r = decode(
      layers, tokens, warmup,
      [&](int l, const float* in, const int32_t* e, const float* w, float* out, bool measuring) {
        if (measuring) cache->reset_stats(), wall0 = now_s();
        built[l]->forward_routed(in, 1, kTopK, e, w, out, tpe.data());
      },
      routes, x);
  const moe::ExpertCacheStats s = cache->stats();
  const double wall = now_s() - wall0;
  r.hit_rate = double(s.total.hits) / std::max<int64_t>(1, s.total.hits + s.total.misses);
  r.bytes_per_token = s.total.bytes_read / tokens;
  r.wait_share = s.total.wait_ms / 1e3 / wall;
  r.read_ms = s.total.read_ms / std::max<int64_t>(1, s.total.reads);
  return r;
}

// The page-cache baseline: every store mapped; experts computed where they lie; LRU eviction at the budget.
Result run_page_cache(const std::string& dir, int layers, int tokens, int warmup, size_t budget, uint64_t seed) {
  drop_page_cache(dir, layers);
  const moe::StoreLayout layout = moe::store_layout(shape());
  const size_t stride = layout.stride();
  struct Mapped {
    int fd;
    unsigned char* base;
    size_t bytes;
    size_t header;
  };
  std::vector<Mapped> maps;
  for (int l = 0; l < layers; ++l) {
    const int fd = ::open(store_path(dir, l).c_str(), O_RDONLY);
    struct stat st;
    ::fstat(fd, &st);
    auto* base = static_cast<unsigned char*>(::mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0));
    maps.push_back({fd, base, static_cast<size_t>(st.st_size), static_cast<size_t>(st.st_size) - kExperts * stride});
  }
  const moe::PackedExperts geometry(shape());
  moe::FfnWorkspace ws;
  std::list<int64_t> lru;  // layer * kExperts + expert, most recent first
  std::unordered_map<int64_t, std::list<int64_t>::iterator> resident;
  const size_t capacity = std::max<size_t>(1, budget / stride);
  int64_t hits = 0, misses = 0;
  std::vector<const unsigned char*> records(kExperts, nullptr);
  std::vector<float> slot_out(kTopK * kDModel);
  std::vector<int32_t> counts(kExperts), offsets(kExperts + 1), order(kTopK);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in_core(kExperts * stride / page + 1);
  int64_t read_around = 0;
  // The least recently used expert's pages leave memory.
  const auto evict = [&] {
    const int64_t victim = lru.back();
    lru.pop_back();
    resident.erase(victim);
    const Mapped& m = maps[victim / kExperts];
    const size_t at = m.header + (victim % kExperts) * stride;
    ::madvise(m.base + at, stride, MADV_DONTNEED);
    ::posix_fadvise(m.fd, static_cast<off_t>(at), static_cast<off_t>(stride), POSIX_FADV_DONTNEED);
  };
  Router routes(layers, seed);
  std::vector<float> x(kDModel, 1.0f);
  Result r = decode(
      layers, tokens, warmup,
      [&](int l, const float* in, const int32_t* e, const float* w, float* out, bool measuring) {
        if (measuring) hits = misses = read_around = 0;
        for (int j = 0; j < kTopK; ++j) {
          const int64_t key = int64_t{l} * kExperts + e[j];
          auto it = resident.find(key);
          if (it != resident.end()) {
            ++hits;
            lru.erase(it->second);
          } else {
            ++misses;
            if (resident.size() >= capacity) evict();
          }
          lru.push_front(key);
          resident[key] = lru.begin();
          records[e[j]] = maps[l].base + maps[l].header + e[j] * stride;
        }
        moe::dispatch(e, kTopK, kExperts, counts.data(), offsets.data(), order.data());
        const moe::ExpertRecords rec{records.data(), layout};
        moe::expert_ffn(geometry, in, 1, kTopK, offsets.data(), order.data(), slot_out.data(), ws, nullptr, &rec);
        moe::combine(slot_out.data(), w, 1, kTopK, kDModel, out);
        for (int j = 0; j < kTopK; ++j) records[e[j]] = nullptr;
        // The faults read around what they touched (read_ahead_kb): experts beside a miss came in too, and hold
        // memory as a capped page cache would count it, at the cold end of the list (they leave first).
        const Mapped& m = maps[l];
        ::mincore(m.base + m.header, kExperts * stride, in_core.data());
        for (int64_t x = 0; x < kExperts; ++x) {
          const int64_t key = int64_t{l} * kExperts + x;
          if (resident.count(key) || !(in_core[x * stride / page] & 1)) continue;
          lru.push_back(key);
          resident[key] = std::prev(lru.end());
          for (size_t q = x * stride / page; q < (x + 1) * stride / page; ++q) read_around += in_core[q] & 1;
        }
        while (resident.size() > capacity) evict();
      },
      routes, x);
  r.hit_rate = double(hits) / std::max<int64_t>(1, hits + misses);
  // (what the faults read: the misses, and the pages read around them)
  r.bytes_per_token = (double(misses) * stride + double(read_around) * page) / tokens;
  for (const Mapped& m : maps) ::munmap(m.base, m.bytes), ::close(m.fd);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s generate DIR [layers] | run DIR [layers] [tokens] [budgets%%,...] [threads]\n",
                 argv[0]);
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  const int layers = argc > 3 ? std::atoi(argv[3]) : 48;
  if (mode == "generate") {
    generate(dir, layers);
    return 0;
  }
  const int tokens = argc > 4 ? std::atoi(argv[4]) : 32;
  std::vector<double> budgets;
  for (const char* p = argc > 5 ? argv[5] : "100,50,25,10"; *p;) {
    budgets.push_back(std::strtod(p, const_cast<char**>(&p)));
    if (*p == ',') ++p;
  }
  if (argc > 6) moe::set_thread_count(std::atoi(argv[6]));
  for (int l = 0; l < layers; ++l)
    if (!moe::expert_store_matches(store_path(dir, l), kFingerprint, shape())) {
      std::fprintf(stderr, "no store of layer %d in %s: run `generate` first\n", l, dir.c_str());
      return 1;
    }
  const size_t stride = moe::store_layout(shape()).stride();
  const double all = double(stride) * kExperts * layers;
  std::printf(
      "%d layers x %lld experts x %.2f MB (int4) = %.1f GB of routed experts; %d tokens after %d warm-up, "
      "%d threads\n",
      layers, static_cast<long long>(kExperts), stride / 1e6, all / 1e9, tokens, tokens, moe::thread_count());
  std::printf(
      "| budget | cache tok/s | hit rate | MB read/token | ms/read | compute waited | page cache tok/s | "
      "hit rate | MB faulted/token | ratio |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (double pct : budgets) {
    const size_t budget = static_cast<size_t>(all * pct / 100.0);
    const Result c = run_cache(dir, layers, tokens, tokens, budget, 7);
    const Result p = run_page_cache(dir, layers, tokens, tokens, budget, 7);
    std::printf("| %g%% (%.1f GB) | %.2f | %.2f | %.0f | %.2f | %.0f%% | %.2f | %.2f | %.0f | %.2fx |\n", pct,
                budget / 1e9, c.tokens_per_s, c.hit_rate, c.bytes_per_token / 1e6, c.read_ms, 100 * c.wait_share,
                p.tokens_per_s, p.hit_rate, p.bytes_per_token / 1e6, c.tokens_per_s / p.tokens_per_s);
    std::fflush(stdout);
  }
  return 0;
}
