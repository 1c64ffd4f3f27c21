// The expert cache and store (issue 32): a layer reading its routed experts from a store through a cache gives
// outputs bitwise equal to the layer holding them, for every weight dtype, any budget (one expert's bytes, some,
// all), either policy, from several threads at once; a damaged or truncated store is an error for that forward, and
// the layer works again once the file is whole.
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "../src/core/expert_store.h"
#include "../src/core/store_file.h"
#include "moe/expert_cache.h"
#include "test_support.h"

using moe_test::Case;
using moe_test::CaseData;

namespace {

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / ("moe-cache-test-" + std::to_string(moe::process_id()) + "-" + name))
      .string();
}

struct Outputs {
  std::vector<float> out, logits, weights;
  std::vector<int32_t> experts, counts;
};

Outputs run(moe::Layer& layer, const CaseData& data, int64_t tokens) {
  const moe::LayerConfig& c = data.config;
  Outputs o;
  o.out.resize(tokens * c.experts.d_model), o.logits.resize(tokens * c.experts.num_experts);
  o.weights.resize(tokens * c.top_k), o.experts.resize(tokens * c.top_k), o.counts.resize(c.experts.num_experts);
  layer.forward(data.x.data(), tokens,
                {o.out.data(), o.logits.data(), o.experts.data(), o.weights.data(), o.counts.data()});
  return o;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::shared_ptr<moe::Layer> cached_layer(const CaseData& data, const std::shared_ptr<moe::ExpertCache>& cache,
                                         const std::string& path, const char* label) {
  moe::LayerSpec spec;
  spec.config = data.config;
  spec.router = data.router.data();
  spec.store = {cache, path, "fingerprint-1", label};
  return moe::make_layer(spec);
}

void test_dtype(moe::WeightDtype dtype, const Case& shape, uint32_t seed) {
  CaseData data = moe_test::make_case(shape, seed);
  data.config.experts.weight_dtype = dtype;
  const char* name = moe::weight_dtype_name(dtype);
  moe::CpuLayer resident(data.config, data.router.data(), data.weights);
  const std::string path = temp_path(name);
  resident.write_expert_store(path, "fingerprint-1");
  CHECK(moe::expert_store_matches(path, "fingerprint-1", data.config.experts), "%s: the store matches", name);
  CHECK(!moe::expert_store_matches(path, "fingerprint-2", data.config.experts), "%s: another source's", name);
  moe::ExpertShape other = data.config.experts;
  other.d_hidden += 8;
  CHECK(!moe::expert_store_matches(path, "fingerprint-1", other), "%s: another shape's", name);

  const size_t stride = moe::store_layout(data.config.experts).stride();
  for (const size_t budget : {size_t{1}, 2 * stride, shape.e * stride})
    for (const moe::CachePolicy policy : {moe::CachePolicy::lru, moe::CachePolicy::lfru}) {
      auto cache = std::make_shared<moe::ExpertCache>(moe::ExpertCacheOptions{budget, policy, 2, 4.0});
      auto layer = cached_layer(data, cache, path, "layer");
      int64_t asked = 0;
      for (int round = 0; round < 2; ++round)
        for (const int64_t tokens : {int64_t{1}, int64_t{7}, shape.tokens}) {
          const Outputs want = run(resident, data, tokens), got = run(*layer, data, tokens);
          CHECK(same_bits(want.out, got.out), "%s, budget %zu, %d tokens: outputs bitwise equal", name, budget,
                static_cast<int>(tokens));
          for (int32_t n : got.counts) asked += n > 0;
        }
      const moe::ExpertCacheStats s = cache->stats();
      CHECK(s.total.hits + s.total.misses == asked, "%s: every expert asked for is a hit or a miss", name);
      CHECK(s.total.bytes_read == static_cast<double>(s.total.misses * stride), "%s: a miss reads one record", name);
      CHECK(s.resident_bytes <= std::max(budget, size_t{0}) || budget < stride, "%s: within the budget", name);
      CHECK(budget < shape.e * stride || s.total.misses <= shape.e, "%s: a budget of all reads each once", name);
      CHECK(s.layers.size() == 1 && s.layers[0].label == "layer", "%s: stats per layer", name);
    }
  std::remove(path.c_str());
}

// Two layers on one cache of two experts' bytes, forwarding from two threads at once.
void test_concurrent() {
  const Case shape{9, 64, 96, 8, 2, moe::Activation::swiglu, true};
  CaseData a = moe_test::make_case(shape, 501), b = moe_test::make_case(shape, 601);
  a.config.experts.weight_dtype = b.config.experts.weight_dtype = moe::WeightDtype::int4;
  moe::CpuLayer ra(a.config, a.router.data(), a.weights), rb(b.config, b.router.data(), b.weights);
  const std::string pa = temp_path("a"), pb = temp_path("b");
  ra.write_expert_store(pa, "fingerprint-1");
  rb.write_expert_store(pb, "fingerprint-1");
  const size_t stride = moe::store_layout(a.config.experts).stride();
  auto cache = std::make_shared<moe::ExpertCache>(moe::ExpertCacheOptions{2 * stride, moe::CachePolicy::lfru, 3, 8.0});
  auto la = cached_layer(a, cache, pa, "a"), lb = cached_layer(b, cache, pb, "b");
  const Outputs wa = run(ra, a, shape.tokens), wb = run(rb, b, shape.tokens);
  std::atomic<int> bad{0};
  std::thread other([&] {
    for (int i = 0; i < 20; ++i) bad += !same_bits(run(*lb, b, shape.tokens).out, wb.out);
  });
  for (int i = 0; i < 20; ++i) bad += !same_bits(run(*la, a, shape.tokens).out, wa.out);
  other.join();
  CHECK(bad == 0, "concurrent forwards of two layers on one cache: %d differ", bad.load());
  CHECK(cache->stats().layers.size() == 2, "two layers in the stats");
  std::remove(pa.c_str());
  std::remove(pb.c_str());
}

// A record damaged, then the file truncated: errors for those forwards; whole again, the layer works.
void test_damaged_store() {
  const Case shape{1, 64, 96, 4, 4, moe::Activation::gelu, true};  // (k = E: every expert in every forward)
  CaseData data = moe_test::make_case(shape, 701);
  moe::CpuLayer resident(data.config, data.router.data(), data.weights);
  const std::string path = temp_path("damaged");
  resident.write_expert_store(path, "fingerprint-1");
  const size_t stride = moe::store_layout(data.config.experts).stride();
  auto cache = std::make_shared<moe::ExpertCache>(moe::ExpertCacheOptions{1, moe::CachePolicy::lru, 2, 32.0});
  auto layer = cached_layer(data, cache, path, "damaged");
  const Outputs want = run(resident, data, 1);
  // (bytes changed through a stream of their own, as another process would: portable, Windows included)
  const auto patch = [&](uint64_t at, const void* bytes, size_t n) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(at));
    f.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
    return static_cast<bool>(f);
  };
  const auto peek = [&](uint64_t at, void* bytes, size_t n) {
    std::ifstream f(path, std::ios::binary);
    f.seekg(static_cast<std::streamoff>(at));
    f.read(static_cast<char*>(bytes), static_cast<std::streamsize>(n));
    return static_cast<bool>(f);
  };
  const uint64_t size = std::filesystem::file_size(path), at = size - stride + 100;
  unsigned char byte = 0;
  CHECK(peek(at, &byte, 1), "read a byte");
  const unsigned char flipped = byte ^ 0x40;
  CHECK(patch(at, &flipped, 1), "damage a byte");
  std::string error;
  try {
    run(*layer, data, 1);
  } catch (const std::runtime_error& e) {
    error = e.what();
  }
  CHECK(error.find("checksum") != std::string::npos, "a damaged record is an error naming its checksum: '%s'",
        error.c_str());
  CHECK(patch(at, &byte, 1), "repair the byte");
  CHECK(same_bits(run(*layer, data, 1).out, want.out), "the layer works once the file is whole");
  std::vector<unsigned char> tail(stride);
  CHECK(peek(size - stride, tail.data(), stride), "tail");
  std::error_code failed;
  std::filesystem::resize_file(path, size - stride / 2, failed);
  CHECK(!failed, "truncate: %s", failed.message().c_str());
  error.clear();
  try {
    run(*layer, data, 1);
  } catch (const std::runtime_error& e) {
    error = e.what();
  }
  CHECK(error.find("expected to read expert") != std::string::npos, "a short read is an error: '%s'", error.c_str());
  CHECK(patch(size - stride, tail.data(), stride), "restore");
  CHECK(same_bits(run(*layer, data, 1).out, want.out), "the layer works again after a short read");
  CHECK(cache->stats().total.read_errors == 2, "two failed reads counted");
  bool refused = false;
  try {
    moe::ExpertStore("/nonexistent/store", "fingerprint-1", data.config.experts);
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  CHECK(refused, "a missing store is refused when the layer is built");
  std::remove(path.c_str());
}

}  // namespace

void test_expert_cache() {
  uint32_t seed = 300;
  const Case small{33, 64, 96, 6, 2, moe::Activation::swiglu, true};
  for (moe::WeightDtype d : {moe::WeightDtype::float32, moe::WeightDtype::bfloat16, moe::WeightDtype::float16,
                             moe::WeightDtype::int8, moe::WeightDtype::int4})
    test_dtype(d, small, seed += 10);
  const Case super{17, 256, 256, 5, 3, moe::Activation::swiglu, false};  // (K-quant rows are super-blocks of 256)
  for (moe::WeightDtype d : {moe::WeightDtype::q4_k, moe::WeightDtype::q5_k, moe::WeightDtype::q6_k})
    test_dtype(d, super, seed += 10);
  test_concurrent();
  test_damaged_store();
}
