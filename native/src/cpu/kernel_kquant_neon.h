// The K-quants' integer kernel of the neon_dotprod ISA (q4_k, q5_k, q6_k; kernel_kquant_rows.h has the arrangement,
// the Q8_K activations and the loop over a tile): the codes multiplied by sdot (ARMv8.2's dot product: four signed
// byte products summed into each 32-bit lane), as llama.cpp's NEON Q*_K x Q8_K kernels do. The codes (at most 63)
// are non-negative signed bytes as they are, so no offset is needed for the instruction itself. The panels are
// core/weight_formats.h's K-quant layout with nr = 8: a 16-byte vector is 4 rows x 4 inputs, a row's word of a quad
// against the row's four activation codes broadcast. One row at a time, as the avx2 kernel. Included inside the
// anonymous namespace of cpu_neon_dotprod.cpp, after kernel_impl.h and kernel_kquant_rows.h.
#pragma once

struct KQuantNeon {
  using K = KernelImpl<SimdNeon>;
  static constexpr int W = K::W, NV = K::NV, NR = K::NR;
  static_assert(W == 4 && NV == 2, "a panel is two vectors of 4 rows");
  static constexpr int64_t kSuper = 256;

  // 256 floats x to Q8_K codes (vcvtnq rounds to nearest even, as the x86 kernels' quantization does); d_a returned.
  static float quantize_block(const float* x, int8_t* codes) {
    float32x4_t mx = vdupq_n_f32(0.0f);
    for (int64_t c = 0; c < kSuper; c += W) mx = vmaxq_f32(mx, vabsq_f32(vld1q_f32(x + c)));
    const float amax = vmaxvq_f32(mx), id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t c = 0; c < kSuper; c += 2 * W) {  // (|code| <= 127: the narrowing moves are exact)
      const int32x4_t lo = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + c), id));
      const int32x4_t hi = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + c + W), id));
      vst1_s8(codes + c, vmovn_s16(vcombine_s16(vmovn_s32(lo), vmovn_s32(hi))));
    }
    return amax / 127.0f;
  }

  // 4 bytes at p widened to int32 lanes, signed or unsigned (a sub-block's scales or mins for 4 rows).
  static int32x4_t bytes_to_lanes(const uint8_t* p, bool is_signed) {
    uint32_t word;
    std::memcpy(&word, p, sizeof word);
    const uint8x8_t b = vcreate_u8(word);
    if (is_signed) return vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u8(b))));
    return vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(b))));
  }
  // Quad qd's high bits out of a sub-block's plane onto its nibbles (code = nibble | high << 4): bytes shift on their
  // own here, so one shift by 4 - High qd (left or right) and a mask place them.
  template <int High>
  static uint8x16_t lifted(uint8x16_t nibbles, uint8x16_t plane, int qd) {
    const uint8x16_t at = vshlq_u8(plane, vdupq_n_s8(static_cast<int8_t>(4 - High * qd)));
    return vorrq_u8(nibbles, vandq_u8(at, vdupq_n_u8(High == 2 ? 0x30 : 0x10)));
  }
  // sum += the 4 rows' dot products of a quad's codes with the row's 4 activation codes (one word, broadcast).
  static int32x4_t dot_quad(int32x4_t sum, uint8x16_t codes, const int8_t* aq) {
    int32_t word;
    std::memcpy(&word, aq, 4);
    return vdotq_s32(sum, vreinterpretq_s8_u8(codes), vreinterpretq_s8_s32(vdupq_n_s32(word)));
  }

  // acc[NR] (+)= one row's products with super-blocks sb0 .. sb1 of a panel. With stream_end (decode), each sub-block
  // prefetches its share of the stream kStreamAhead bytes on.
  template <int High, int Off>
  static void row_k(const int8_t* qa, const float* da, const int32_t* sums, const uint8_t* panel, int64_t sb0,
                    int64_t sb1, float* acc, bool first, const uint8_t* stream_end) {
    constexpr moe::KPanel kp = moe::k_panel_of_high(High, NR);
    constexpr int64_t subs = kp.subs, g = kp.g, slice = (kp.block() / subs + 63) / 64 * 64;
    const uint8x16_t low = vdupq_n_u8(0x0f);
    float32x4_t c[NV];
    for (int v = 0; v < NV; ++v) c[v] = first ? vdupq_n_f32(0.0f) : vld1q_f32(acc + v * W);
    for (int64_t sb = sb0; sb < sb1; ++sb) {
      const uint8_t* h = panel + sb * kp.block();
      const int8_t* a = qa + sb * kSuper;
      int32x4_t total[NV], mins[NV];
      for (int v = 0; v < NV; ++v) total[v] = vdupq_n_s32(0), mins[v] = vdupq_n_s32(0);
      for (int64_t j = 0; j < subs; ++j) {
        if (stream_end) prefetch_until(h + kStreamAhead + j * slice, slice, stream_end);
        const int32_t s_j = sums[sb * subs + j];
        const uint8_t* codes = h + kp.codes_at(j);
        int32x4_t sum[NV];
        uint8x16_t plane[NV];
        for (int v = 0; v < NV; ++v) {
          sum[v] = vdupq_n_s32(-Off * s_j);  // (q6_k's codes are q + 32: the sum ends centred)
          plane[v] = High > 0 ? vld1q_u8(h + kp.plane_at(j) + v * W * 4) : vdupq_n_u8(0);
        }
        for (int64_t o = 0; o < g / 8; ++o) {  // octets: the low nibbles are quad 2o, the high ones quad 2o + 1
          for (int v = 0; v < NV; ++v) {
            const uint8x16_t w = vld1q_u8(codes + (o * NR + v * W) * 4);
            uint8x16_t lo = vandq_u8(w, low), hi = vshrq_n_u8(w, 4);
            if constexpr (High > 0)
              lo = lifted<High>(lo, plane[v], static_cast<int>(2 * o)),
              hi = lifted<High>(hi, plane[v], static_cast<int>(2 * o + 1));
            sum[v] = dot_quad(dot_quad(sum[v], lo, a + j * g + 8 * o), hi, a + j * g + 8 * o + 4);
          }
        }
        for (int v = 0; v < NV; ++v) {
          total[v] = vmlaq_s32(total[v], sum[v], bytes_to_lanes(h + kp.scale_at(j) + v * W, Off != 0));
          if (!Off) mins[v] = vmlaq_n_s32(mins[v], bytes_to_lanes(h + kp.min_at(j) + v * W, false), s_j);
        }
      }
      const float32x4_t d_a = vdupq_n_f32(da[sb]);
      for (int v = 0; v < NV; ++v) {
        const uint16_t* d16 = reinterpret_cast<const uint16_t*>(h) + v * W;
        c[v] = vfmaq_f32(c[v], vcvtq_f32_s32(total[v]), vmulq_f32(SimdNeon::load_f16(d16), d_a));
        if (!Off) {
          const float32x4_t dmin = SimdNeon::load_f16(reinterpret_cast<const uint16_t*>(h + kp.dmin_at()) + v * W);
          c[v] = vfmsq_f32(c[v], vcvtq_f32_s32(mins[v]), vmulq_f32(dmin, d_a));
        }
      }
    }
    for (int v = 0; v < NV; ++v) vst1q_f32(acc + v * W, c[v]);
  }
};
