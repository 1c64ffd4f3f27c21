// What the C++ test drivers share: a CHECK that counts failures and keeps going, and seeded normal data.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "moe/moe.h"

// The routing rules' tests (routing_rules_tests.cpp).
void test_routing_rules();
// The expert cache and store's tests (expert_cache_tests.cpp).
void test_expert_cache();

namespace moe_test {
inline int failures = 0;

inline std::vector<float> randn(size_t n, uint32_t seed, float std) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// A layer shape to test, and its seeded random weights and input (nn.Linear-like scales).
struct Case {
  int64_t tokens, d, h, e;
  int k;
  moe::Activation act;
  bool bias;
};

struct CaseData {
  std::vector<float> router, w1, w3, w2, b1, b3, b2, x;
  moe::LayerConfig config;
  moe::ExpertWeights weights;  // points into the vectors above
};

inline CaseData make_case(const Case& c, uint32_t seed) {
  const bool gated = moe::is_gated(c.act);
  CaseData data;
  data.router = randn(c.e * c.d, seed, 1.0f / std::sqrt(float(c.d)));
  data.w1 = randn(c.e * c.h * c.d, seed + 1, 1.0f / std::sqrt(float(c.d)));
  data.w3 = randn(c.e * c.h * c.d, seed + 2, 1.0f / std::sqrt(float(c.d)));
  data.w2 = randn(c.e * c.d * c.h, seed + 3, 1.0f / std::sqrt(float(c.h)));
  data.b1 = randn(c.e * c.h, seed + 4, 0.2f);
  data.b3 = randn(c.e * c.h, seed + 5, 0.2f);
  data.b2 = randn(c.e * c.d, seed + 6, 0.2f);
  data.x = randn(c.tokens * c.d, seed + 7, 1.0f);
  data.config = moe::LayerConfig{{c.e, c.d, c.h, c.act}, c.k, true, 0, {}};
  data.weights = moe::ExpertWeights{data.w1.data(),
                                    gated ? data.w3.data() : nullptr,
                                    data.w2.data(),
                                    c.bias ? data.b1.data() : nullptr,
                                    c.bias && gated ? data.b3.data() : nullptr,
                                    c.bias ? data.b2.data() : nullptr};
  return data;
}

}  // namespace moe_test

#define CHECK(cond, ...)                                          \
  do {                                                            \
    if (!(cond)) {                                                \
      ++moe_test::failures;                                       \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                   \
      std::printf("\n");                                          \
    }                                                             \
  } while (0)
