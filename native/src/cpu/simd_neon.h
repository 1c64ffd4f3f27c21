// NEON (AArch64): 4 floats per register; microkernel 8 rows x 2 vectors (16 accumulators of 32 registers).
#pragma once
#include <arm_neon.h>

#include "simd_exp.h"

struct SimdNeon {
  using reg = float32x4_t;
  static constexpr int kLanes = 4, kVectors = 2, kMicroRows = 8;
  static reg zero() { return vdupq_n_f32(0.0f); }
  static reg set1(float x) { return vdupq_n_f32(x); }
  static reg load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, reg x) { vst1q_f32(p, x); }
  // kLanes bfloat16 values widened exactly to float32 (a bfloat16 is the top half of a float32's bits).
  static reg load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static reg load_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
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
