// The scalar "vector": one float per register. Portable fallback and the reference for the SIMD paths.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "half.h"

struct SimdScalar {
  using reg = float;
  static constexpr int kLanes = 1, kVectors = 4, kMicroRows = 4;
  static reg zero() { return 0.0f; }
  static reg set1(float x) { return x; }
  static reg load(const float* p) { return *p; }
  static void store(float* p, reg x) { *p = x; }
  // float16 weights widened exactly to float32 (half.h).
  static reg load_f16(const uint16_t* p) { return moe::cpu::half_to_float(*p); }
  // Packed-weight words (core/weight_formats.h): the bfloat16 of one k of a pair, widened; a code field
  // ((word >> shift) & mask) - offset (int8: byte of a quad stored q + 128; int4: nibble stored u, value u - 8).
  static reg load_bf16_pair(const uint32_t* p, int high) {
    return moe::cpu::bfloat16_to_float(static_cast<uint16_t>(high ? *p >> 16 : *p & 0xffffu));
  }
  // kLanes bytes widened to float32, unsigned or signed (a K-quant's 6- or 8-bit sub-block factors).
  static reg load_bytes(const uint8_t* p, bool is_signed) {
    return is_signed ? static_cast<float>(static_cast<int8_t>(*p)) : static_cast<float>(*p);
  }
  static reg load_code(const uint8_t* p, int shift, int mask, int offset) {
    uint32_t word;
    std::memcpy(&word, p, sizeof word);
    return static_cast<float>(static_cast<int>((word >> shift) & static_cast<uint32_t>(mask)) - offset);
  }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg div(reg a, reg b) { return a / b; }
  static reg fma(reg a, reg b, reg c) { return a * b + c; }
  static reg max(reg a, reg b) { return std::max(a, b); }
  static reg min(reg a, reg b) { return std::min(a, b); }
  static reg copysign(reg magnitude, reg sign) { return std::copysign(magnitude, sign); }
  static reg exp(reg x) { return std::exp(std::min(x, 88.3762626647949f)); }
};
