// What the C++ test drivers share: a CHECK that counts failures and keeps going, and seeded normal data.
#pragma once
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace moe_test {

inline int failures = 0;

inline std::vector<float> randn(size_t n, uint32_t seed, float std) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

}  // namespace moe_test

#define CHECK(cond, ...)                                         \
  do {                                                           \
    if (!(cond)) {                                               \
      ++moe_test::failures;                                      \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                  \
      std::printf("\n");                                         \
    }                                                            \
  } while (0)
