// NEON (AArch64): 4 floats per register; microkernel 8 rows x 2 vectors (16 accumulators of 32 registers).
#pragma once
#include <arm_neon.h>

#include <cstring>

#include "simd_exp.h"

struct SimdNeon {
  using reg = float32x4_t;
  static constexpr int kLanes = 4, kVectors = 2, kMicroRows = 8;
  static reg zero() { return vdupq_n_f32(0.0f); }
  static reg set1(float x) { return vdupq_n_f32(x); }
  static reg load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, reg x) { vst1q_f32(p, x); }
  // kLanes float16 values widened exactly to float32.
  static reg load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  // Packed-weight words (core/weight_formats.h), kLanes at p: the bfloat16 of one k of a pair, widened; a code
  // field ((word >> shift) & mask) - offset (int8: byte of a quad stored q + 128; int4: nibble stored u, value u - 8).
  static reg load_bf16_pair(const uint32_t* p, int high) {
    const uint32x4_t x = vld1q_u32(p);
    return vreinterpretq_f32_u32(high ? vandq_u32(x, vdupq_n_u32(0xffff0000u)) : vshlq_n_u32(x, 16));
  }
  // kLanes bytes widened to float32, unsigned or signed (a K-quant's 6- or 8-bit sub-block factors).
  static reg load_bytes(const uint8_t* p, bool is_signed) {
    uint32_t word;
    std::memcpy(&word, p, sizeof word);
    const uint8x8_t b = vcreate_u8(word);
    if (is_signed) return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u8(b)))));
    return vcvtq_f32_u32(vmovl_u16(vget_low_u16(vmovl_u8(b))));
  }
  static reg load_code(const uint8_t* p, int shift, int mask, int offset) {
    const uint32x4_t x = vshlq_u32(vld1q_u32(reinterpret_cast<const uint32_t*>(p)), vdupq_n_s32(-shift));
    const int32x4_t v = vreinterpretq_s32_u32(vandq_u32(x, vdupq_n_u32(static_cast<uint32_t>(mask))));
    return vcvtq_f32_s32(vsubq_s32(v, vdupq_n_s32(offset)));
  }
  static reg add(reg a, reg b) { return vaddq_f32(a, b); }
  static reg sub(reg a, reg b) { return vsubq_f32(a, b); }
  static reg mul(reg a, reg b) { return vmulq_f32(a, b); }
  static reg div(reg a, reg b) { return vdivq_f32(a, b); }
  static reg fma(reg a, reg b, reg c) { return vfmaq_f32(c, a, b); }
  static reg max(reg a, reg b) { return vmaxq_f32(a, b); }
  static reg min(reg a, reg b) { return vminq_f32(a, b); }
  static reg copysign(reg magnitude, reg sign) { return vbslq_f32(vdupq_n_u32(0x80000000u), sign, magnitude); }
  struct IntOps {
    static reg round(reg x) { return vrndnq_f32(x); }
    static reg pow2(reg n) {
      const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
      return vreinterpretq_f32_s32(e);
    }
  };
  static reg exp(reg x) { return simd_exp<SimdNeon, IntOps>(x); }
};
