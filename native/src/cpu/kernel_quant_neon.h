// The int8 and int4 kernels of the neon_dotprod ISA (kernel_quant_rows.h has the arrangement, the Q8_0 activations
// and the tile loop), with sdot (four signed byte products summed into each 32-bit lane), as llama.cpp's NEON Q8_0 /
// Q4_0 x Q8_0 kernels do. sdot multiplies signed by signed, so int8's stored codes q + 128 are turned back into q
// (the top bit flipped) and int4's u = q + 8 (at most 15) are taken as they are, the sum started at -8 S so that it
// ends centred. The panels are core/weight_formats.h's int8 / int4 layouts with nr = 8 (a group: 8 float16 scales,
// then the quads or octets of nibbles, a 16-byte vector 4 rows x 4 inputs). Included inside the anonymous namespace
// of cpu_neon_dotprod.cpp, after kernel_impl.h and kernel_quant_rows.h.
#pragma once

template <int Bits>
struct QuantNeon {
  using K = KernelImpl<SimdNeon>;
  static constexpr int kBits = Bits;
  static constexpr int W = K::W, NV = K::NV, NR = K::NR;
  static_assert(W == 4 && NV == 2, "a panel is two vectors of 4 rows");

  // sum += the 4 rows' dot products of a quad's codes with the row's 4 activation codes (one word, broadcast).
  static int32x4_t dot_quad(int32x4_t sum, int8x16_t codes, const int8_t* aq) {
    int32_t word;
    std::memcpy(&word, aq, 4);
    return vdotq_s32(sum, codes, vreinterpretq_s8_s32(vdupq_n_s32(word)));
  }

  // acc[NR] (+)= one row's products with groups g0 .. g1 of a panel (qa, da, sa: the row's codes, scales and sums).
  // With stream_end (decode), each group prefetches its size of the stream kStreamAhead bytes on.
  static void row_q(const int8_t* qa, const float* da, const int32_t* sa, const uint8_t* panel, int64_t gbytes,
                    int64_t gp, int64_t g0, int64_t g1, float* acc, bool first, const uint8_t* stream_end) {
    float32x4_t c[NV];
    for (int v = 0; v < NV; ++v) c[v] = first ? vdupq_n_f32(0.0f) : vld1q_f32(acc + v * W);
    for (int64_t grp = g0; grp < g1; ++grp) {
      const uint8_t* base = panel + grp * gbytes;
      if (stream_end) prefetch_until(base + kStreamAhead, gbytes, stream_end);
      const uint8_t* codes = base + 2 * NR;
      const int8_t* a = qa + grp * gp;
      int32x4_t sum[NV];
      for (int v = 0; v < NV; ++v) sum[v] = vdupq_n_s32(Bits == 4 ? -8 * sa[grp] : 0);  // (int4: u = q + 8)
      if constexpr (Bits == 8) {
        for (int64_t qd = 0; qd < gp / 4; ++qd)
          for (int v = 0; v < NV; ++v) {
            const uint8x16_t stored = vld1q_u8(codes + (qd * NR + v * W) * 4);
            sum[v] = dot_quad(sum[v], vreinterpretq_s8_u8(veorq_u8(stored, vdupq_n_u8(0x80))), a + 4 * qd);
          }
      } else {
        for (int64_t od = 0; od < gp / 8; ++od)
          for (int v = 0; v < NV; ++v) {
            const uint8x16_t w = vld1q_u8(codes + (od * NR + v * W) * 4);
            sum[v] = dot_quad(sum[v], vreinterpretq_s8_u8(vandq_u8(w, vdupq_n_u8(0x0f))), a + 8 * od);
            sum[v] = dot_quad(sum[v], vreinterpretq_s8_u8(vshrq_n_u8(w, 4)), a + 8 * od + 4);
          }
      }
      const float32x4_t d_a = vdupq_n_f32(da[grp]);
      for (int v = 0; v < NV; ++v) {
        const float32x4_t d = SimdNeon::load_f16(reinterpret_cast<const uint16_t*>(base) + v * W);
        c[v] = vfmaq_f32(c[v], vcvtq_f32_s32(sum[v]), vmulq_f32(d, d_a));
      }
    }
    for (int v = 0; v < NV; ++v) vst1q_f32(acc + v * W, c[v]);
  }
};
