// The K-quants' integer kernel of the avx2 ISA (q4_k, q5_k, q6_k; kernel_kquant_rows.h has the arrangement, the
// Q8_K activations and the loop over a tile): the codes multiplied by vpmaddubsw (unsigned codes x signed activations,
// pairs summed in int16: at most 63 x 127 x 2, no saturation) and vpmaddwd by ones (quads summed in int32), standing
// in for AVX512-VNNI's vpdpbusd, as llama.cpp's AVX2 Q*_K x Q8_K kernels do. The panels are core/weight_formats.h's
// K-quant layout with nr = 16: a 32-byte vector is 8 rows x 4 inputs. One row at a time (16 ymm registers hold one
// row's sums, totals, mins and accumulators). Included inside the anonymous namespace of cpu_avx2.cpp, after
// kernel_impl.h and kernel_kquant_rows.h.
#pragma once

struct KQuantAvx2 {
  using K = KernelImpl<SimdAvx2>;
  static constexpr int W = K::W, NV = K::NV, NR = K::NR;
  static_assert(W == 8 && NV == 2, "a panel is two vectors of 8 rows");
  static constexpr int64_t kSuper = 256;

  // 256 floats x to Q8_K codes (cvtps rounds to nearest even, as the AVX-512 kernel's quantization does); d_a returned.
  static float quantize_block(const float* x, int8_t* codes) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps();
    for (int64_t c = 0; c < kSuper; c += W) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + c)));
    alignas(32) float lanes[W];
    _mm256_store_ps(lanes, mx);
    float amax = 0.0f;
    for (float v : lanes) amax = std::max(amax, v);
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t c = 0; c < kSuper; c += W) {
      const __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + c), _mm256_set1_ps(id)));
      alignas(32) int32_t w[W];
      _mm256_store_si256(reinterpret_cast<__m256i*>(w), v);
      for (int l = 0; l < W; ++l) codes[c + l] = static_cast<int8_t>(w[l]);
    }
    return amax / 127.0f;
  }

  // Quad Qd's high bits out of a sub-block's plane onto its nibbles (code = nibble | high << 4), as lifted() in
  // kernel_dot_avx512.h: the 16-bit shifts move bits across a byte only into places the mask drops.
  template <int High>
  static __m256i lifted(__m256i nibbles, __m256i plane, int qd) {
    const int s = 4 - High * qd;
    const __m256i at = s > 0 ? _mm256_slli_epi16(plane, s) : s < 0 ? _mm256_srli_epi16(plane, -s) : plane;
    return _mm256_or_si256(nibbles, _mm256_and_si256(at, _mm256_set1_epi8(High == 2 ? 0x30 : 0x10)));
  }
  // sum += the 8 rows' dot products of a quad's codes with the row's 4 activation codes (one int32 word, broadcast).
  static __m256i dot_quad(__m256i sum, __m256i codes, const int8_t* aq) {
    int32_t word;
    std::memcpy(&word, aq, 4);
    const __m256i pairs = _mm256_maddubs_epi16(codes, _mm256_set1_epi32(word));
    return _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }

  // acc[NR] (+)= one row's products with super-blocks sb0 .. sb1 of a panel. With stream_end (decode), each sub-block
  // prefetches its share of the stream kStreamAhead bytes on.
  template <int High, int Off>
  static void row_k(const int8_t* qa, const float* da, const int32_t* sums, const uint8_t* panel, int64_t sb0,
                    int64_t sb1, float* acc, bool first, const uint8_t* stream_end) {
    constexpr moe::KPanel kp = moe::k_panel_of_high(High, NR);
    constexpr int64_t subs = kp.subs, g = kp.g, slice = (kp.block() / subs + 63) / 64 * 64;
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256 c[NV];
    for (int v = 0; v < NV; ++v) c[v] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + v * W);
    for (int64_t sb = sb0; sb < sb1; ++sb) {
      const uint8_t* h = panel + sb * kp.block();
      const int8_t* a = qa + sb * kSuper;
      __m256i total[NV], mins[NV];
      for (int v = 0; v < NV; ++v) total[v] = _mm256_setzero_si256(), mins[v] = _mm256_setzero_si256();
      for (int64_t j = 0; j < subs; ++j) {
        if (stream_end) prefetch_until(h + kStreamAhead + j * slice, slice, stream_end);
        const int32_t s_j = sums[sb * subs + j];
        const uint8_t* codes = h + kp.codes_at(j);
        __m256i sum[NV], plane[NV];
        for (int v = 0; v < NV; ++v) {
          sum[v] = _mm256_set1_epi32(-Off * s_j);
          plane[v] = High > 0 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + kp.plane_at(j) + v * W * 4))
                              : _mm256_setzero_si256();
        }
        for (int64_t o = 0; o < g / 8; ++o) {  // octets: the low nibbles are quad 2o, the high ones quad 2o + 1
          for (int v = 0; v < NV; ++v) {
            const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + (o * NR + v * W) * 4));
            __m256i lo = _mm256_and_si256(w, low), hi = _mm256_and_si256(_mm256_srli_epi32(w, 4), low);
            if constexpr (High > 0)
              lo = lifted<High>(lo, plane[v], static_cast<int>(2 * o)),
              hi = lifted<High>(hi, plane[v], static_cast<int>(2 * o + 1));
            sum[v] = dot_quad(dot_quad(sum[v], lo, a + j * g + 8 * o), hi, a + j * g + 8 * o + 4);
          }
        }
        for (int v = 0; v < NV; ++v) {
          const __m128i sc8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(h + kp.scale_at(j) + v * W));
          const __m256i sc = Off ? _mm256_cvtepi8_epi32(sc8) : _mm256_cvtepu8_epi32(sc8);
          total[v] = _mm256_add_epi32(total[v], _mm256_mullo_epi32(sum[v], sc));
          if (!Off) {
            const __m128i mn8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(h + kp.min_at(j) + v * W));
            mins[v] = _mm256_add_epi32(mins[v], _mm256_mullo_epi32(_mm256_set1_epi32(s_j), _mm256_cvtepu8_epi32(mn8)));
          }
        }
      }
      const __m256 d_a = _mm256_set1_ps(da[sb]);
      for (int v = 0; v < NV; ++v) {
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 2 * v * W)));
        c[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total[v]), _mm256_mul_ps(d, d_a), c[v]);
        if (!Off) {
          const __m256 dmin =
              _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + kp.dmin_at() + 2 * v * W)));
          c[v] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins[v]), _mm256_mul_ps(dmin, d_a), c[v]);
        }
      }
    }
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(acc + v * W, c[v]);
  }
};
