// The int8 and int4 kernels of the avx2 ISA (kernel_quant_rows.h has the arrangement, the Q8_0 activations and
// the tile loop), with vpmaddubsw (unsigned bytes x signed bytes, pairs summed in int16) and vpmaddwd by ones standing
// in for AVX512-VNNI's vpdpbusd, as llama.cpp's AVX2 Q8_0 / Q4_0 x Q8_0 kernels do:
//   int4: the stored codes u = q + 8 (at most 15) as they are, an octet's two quads' pair sums added in int16 (at
//   most 2 x 2 x 15 x 127), the sum started at -8 S so that it ends centred.
//   int8: the stored codes are q + 128, past vpmaddubsw's unsigned x signed pairs (255 x 127 x 2 > 2^15): q's
//   magnitude times the activations with q's sign (vpsignb), at most 2 x 128 x 127 a pair, as llama.cpp does.
// The panels are core/weight_formats.h's int8 / int4 layouts with nr = 16 (a group: 16 float16 scales, then the
// quads (int8) or octets of nibbles (int4), a 32-byte vector 8 rows x 4 inputs). Included inside the anonymous
// namespace of cpu_avx2.cpp, after kernel_impl.h and kernel_quant_rows.h.
#pragma once

template <int Bits>
struct QuantAvx2 {
  using K = KernelImpl<SimdAvx2>;
  static constexpr int kBits = Bits;
  static constexpr int W = K::W, NV = K::NV, NR = K::NR;
  static_assert(W == 8 && NV == 2, "a panel is two vectors of 8 rows");

  // int8: sum += a quad's stored codes (q + 128; 8 rows x 4 inputs) times the row's activation codes aq[0..3].
  static __m256i dot_quad(__m256i sum, __m256i stored, const int8_t* aq) {
    int32_t word;
    std::memcpy(&word, aq, 4);
    const __m256i q = _mm256_xor_si256(stored, _mm256_set1_epi8(static_cast<char>(0x80)));
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(_mm256_set1_epi32(word), q));
    return _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  // int4: sum += an octet's two quads of codes (lo, hi: 8 rows x 4 inputs each) times the row's codes aq[0..7].
  static __m256i dot_octet(__m256i sum, __m256i lo, __m256i hi, const int8_t* aq) {
    int32_t a0, a1;
    std::memcpy(&a0, aq, 4);
    std::memcpy(&a1, aq + 4, 4);
    const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(a0)),
                                           _mm256_maddubs_epi16(hi, _mm256_set1_epi32(a1)));
    return _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }

  // acc[NR] (+)= one row's products with groups g0 .. g1 of a panel (qa, da, sa: the row's codes, scales and sums).
  // With stream_end (decode), each group prefetches its size of the stream kStreamAhead bytes on.
  static void row_q(const int8_t* qa, const float* da, const int32_t* sa, const uint8_t* panel, int64_t gbytes,
                    int64_t gp, int64_t g0, int64_t g1, float* acc, bool first, const uint8_t* stream_end) {
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256 c[NV];
    for (int v = 0; v < NV; ++v) c[v] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + v * W);
    for (int64_t grp = g0; grp < g1; ++grp) {
      const uint8_t* base = panel + grp * gbytes;
      if (stream_end) prefetch_until(base + kStreamAhead, gbytes, stream_end);
      const uint8_t* codes = base + 2 * NR;
      const int8_t* a = qa + grp * gp;
      __m256i sum[NV];
      for (int v = 0; v < NV; ++v) sum[v] = _mm256_set1_epi32(Bits == 4 ? -8 * sa[grp] : 0);  // (int4: u = q + 8)
      if constexpr (Bits == 8) {
        for (int64_t qd = 0; qd < gp / 4; ++qd)
          for (int v = 0; v < NV; ++v)
            sum[v] =
                dot_quad(sum[v], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + (qd * NR + v * W) * 4)),
                         a + 4 * qd);
      } else {
        for (int64_t od = 0; od < gp / 8; ++od)
          for (int v = 0; v < NV; ++v) {
            const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + (od * NR + v * W) * 4));
            sum[v] =
                dot_octet(sum[v], _mm256_and_si256(w, low), _mm256_and_si256(_mm256_srli_epi32(w, 4), low), a + 8 * od);
          }
      }
      const __m256 d_a = _mm256_set1_ps(da[grp]);
      for (int v = 0; v < NV; ++v) {
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 2 * v * W)));
        c[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[v]), _mm256_mul_ps(d, d_a), c[v]);
      }
    }
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(acc + v * W, c[v]);
  }
};
