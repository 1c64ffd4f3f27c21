// The kernel template compiled for a portable 16-lane vector (GCC vector extensions) with the AVX-512
// geometry (12 rows x 2 vectors). It lets machines without AVX-512 test the template logic that the
// AVX-512 path uses (tiles, tails, gated panels); only the intrinsic mapping in simd_avx512.h is not covered.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../src/core/weight_formats.h"
#include "../src/cpu/half.h"
#include "../src/cpu/kernel_table.h"
#include "../src/cpu/simd_exp.h"

struct SimdWide16 {
  typedef float reg __attribute__((vector_size(64)));
  typedef int32_t ireg __attribute__((vector_size(64)));
  static constexpr int kLanes = 16, kVectors = 2, kMicroRows = 12;
  static reg zero() { return reg{} * 0.0f; }
  static reg set1(float x) { return reg{} + x; }
  static reg load(const float* p) {
    reg r;
    std::memcpy(&r, p, sizeof r);
    return r;
  }
  static void store(float* p, reg x) { std::memcpy(p, &x, sizeof x); }
  static reg load_f16(const uint16_t* p) {
    reg r;
    for (int i = 0; i < kLanes; ++i) r[i] = moe::cpu::half_to_float(p[i]);
    return r;
  }
  static reg load_bf16_pair(const uint32_t* p, int high) {
    reg r;
    for (int i = 0; i < kLanes; ++i)
      r[i] = moe::cpu::bfloat16_to_float(static_cast<uint16_t>(high ? p[i] >> 16 : p[i] & 0xffffu));
    return r;
  }
  static reg load_bytes(const uint8_t* p, bool is_signed) {
    reg r;
    for (int i = 0; i < kLanes; ++i)
      r[i] = is_signed ? static_cast<float>(static_cast<int8_t>(p[i])) : static_cast<float>(p[i]);
    return r;
  }
  static reg load_code(const uint8_t* p, int shift, int mask, int offset) {
    reg r;
    for (int i = 0; i < kLanes; ++i) {
      uint32_t word;
      std::memcpy(&word, p + 4 * i, sizeof word);
      r[i] = static_cast<float>(static_cast<int>((word >> shift) & static_cast<uint32_t>(mask)) - offset);
    }
    return r;
  }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg div(reg a, reg b) { return a / b; }
  static reg fma(reg a, reg b, reg c) { return a * b + c; }
  static reg max(reg a, reg b) { return a > b ? a : b; }
  static reg min(reg a, reg b) { return a < b ? a : b; }
  static reg copysign(reg m, reg s) {
    reg r;
    for (int i = 0; i < kLanes; ++i) r[i] = std::copysign(m[i], s[i]);
    return r;
  }
  struct IntOps {
    static reg round(reg x) {
      reg r;
      for (int i = 0; i < kLanes; ++i) r[i] = std::nearbyint(x[i]);
      return r;
    }
    static reg pow2(reg n) {
      reg r;
      for (int i = 0; i < kLanes; ++i) r[i] = std::ldexp(1.0f, static_cast<int>(n[i]));
      return r;
    }
  };
  static reg exp(reg x) { return simd_exp<SimdWide16, IntOps>(x); }
};

namespace moe::cpu {
namespace {
#include "../src/cpu/kernel_impl.h"
}  // namespace
const KernelTable* kernels_wide16_for_tests() { return KernelImpl<SimdWide16>::table(Isa::scalar); }
}  // namespace moe::cpu
