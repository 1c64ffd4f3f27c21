// AVX2 + FMA: 8 floats per register; microkernel 6 rows x 2 vectors (12 accumulators of 16 registers).
#pragma once
#include <immintrin.h>

#include "simd_exp.h"

struct SimdAvx2 {
  using reg = __m256;
  static constexpr int kLanes = 8, kVectors = 2, kMicroRows = 6;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg x) { _mm256_storeu_ps(p, x); }
  // kLanes float16 values widened exactly to float32.
  static reg load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  // Packed-weight words (core/weight_formats.h), kLanes at p: the bfloat16 of one k of a pair, widened; a code
  // field ((word >> shift) & mask) - offset (int8: byte of a quad stored q + 128; int4: nibble stored u, value u - 8).
  static reg load_bf16_pair(const uint32_t* p, int high) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm256_castsi256_ps(high ? _mm256_and_si256(x, _mm256_set1_epi32(static_cast<int>(0xffff0000u)))
                                    : _mm256_slli_epi32(x, 16));
  }
  // kLanes bytes widened to float32, unsigned or signed (a K-quant's 6- or 8-bit sub-block factors).
  static reg load_bytes(const uint8_t* p, bool is_signed) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b));
  }
  static reg load_code(const uint8_t* p, int shift, int mask, int offset) {
    const __m256i x =
        _mm256_srl_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm_cvtsi32_si128(shift));
    return _mm256_cvtepi32_ps(
        _mm256_sub_epi32(_mm256_and_si256(x, _mm256_set1_epi32(mask)), _mm256_set1_epi32(offset)));
  }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg copysign(reg magnitude, reg sign) {
    const reg mask = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(mask, magnitude), _mm256_and_ps(mask, sign));
  }
  struct IntOps {
    static reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static reg pow2(reg n) {
      const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
      return _mm256_castsi256_ps(e);
    }
  };
  static reg exp(reg x) { return simd_exp<SimdAvx2, IntOps>(x); }
};
