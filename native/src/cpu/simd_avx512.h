// AVX-512F: 16 floats per register; microkernel 12 rows x 2 vectors (24 accumulators of 32 registers).
#pragma once
#include <immintrin.h>

#include "simd_exp.h"

struct SimdAvx512 {
  using reg = __m512;
  static constexpr int kLanes = 16, kVectors = 2, kMicroRows = 12;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg x) { _mm512_storeu_ps(p, x); }
  // kLanes float16 values widened exactly to float32.
  static reg load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  // Packed-weight words (core/weight_formats.h), kLanes at p: the bfloat16 of one k of a pair, widened; an int8
  // quad's byte `sub` (stored q + 128) as q; an int4 octet's nibble at bit `shift` (stored u) as u - 8.
  static reg load_bf16_pair(const uint32_t* p, int high) {
    const __m512i x = _mm512_loadu_si512(p);
    return _mm512_castsi512_ps(high ? _mm512_and_si512(x, _mm512_set1_epi32(static_cast<int>(0xffff0000u)))
                                    : _mm512_slli_epi32(x, 16));
  }
  // kLanes bytes widened to float32, unsigned or signed (a K-quant's 6- or 8-bit sub-block factors).
  static reg load_bytes(const uint8_t* p, bool is_signed) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_cvtepi32_ps(is_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b));
  }
  static reg load_code(const uint8_t* p, int shift, int mask, int offset) {
    const __m512i x = _mm512_srl_epi32(_mm512_loadu_si512(p), _mm_cvtsi32_si128(shift));
    return _mm512_cvtepi32_ps(
        _mm512_sub_epi32(_mm512_and_si512(x, _mm512_set1_epi32(mask)), _mm512_set1_epi32(offset)));
  }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg copysign(reg magnitude, reg sign) {
    const __m512i mask = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m512i m = _mm512_andnot_si512(mask, _mm512_castps_si512(magnitude));
    const __m512i s = _mm512_and_si512(mask, _mm512_castps_si512(sign));
    return _mm512_castsi512_ps(_mm512_or_si512(m, s));
  }
  struct IntOps {
    static reg round(reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static reg pow2(reg n) {
      const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
      return _mm512_castsi512_ps(e);
    }
  };
  static reg exp(reg x) { return simd_exp<SimdAvx512, IntOps>(x); }
  // dst row i = src column i, a kLanes x kLanes tile (rows ss and ds floats apart): two rounds of unpacks within
  // 128-bit lanes, then two of 128-bit lane shuffles between rows 4 and 8 apart.
  static void transpose_tile(const float* src, int64_t ss, float* dst, int64_t ds) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ss);
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
      const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
      const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
      r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
      r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
      r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
      r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 16; i += 8)
      for (int j = 0; j < 4; ++j) {
        t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
        t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
      }
    for (int j = 0; j < 8; ++j) {
      r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
      r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
    for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ds, r[i]);
  }
};
