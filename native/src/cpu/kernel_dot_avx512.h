// The dot-product GEMMs of the AVX-512 ISAs. avx512_bf16 (compiled with AVX512-BF16 and AVX512-VNNI): bfloat16
// weights with vdpbf16ps, int8, int4 and the K-quants with vpdpbusd. avx512 (AVX512F and AVX512BW without VNNI:
// Skylake-SP and Skylake-X): int4 and the K-quants, with vpmaddubsw and vpmaddwd standing in for vpdpbusd (dot_quad,
// dot_octet), as llama.cpp's AVX-512 kernels do without VNNI. Each dot instruction does two (bf16) or four (int8)
// multiply-adds per 32-bit lane where an FMA does one, and the weights stay in their stored form in the registers: the
// packed layouts of core/weight_formats.h are these instructions' operands. The price is in the activations, converted
// per row chunk from the float32 packed A that every GEMM receives (KernelImpl::pack_a's layout):
//   bfloat16: rounded to bfloat16 (nearest even), as oneDNN and PyTorch's bf16 matmuls do; sums stay float32.
//   int8 / int4: quantized per row and weight group, symmetric: d_a = max|a| / 127, q_a = round(a / d_a) (nearest
//   even), the llama.cpp way (its Q8_0 activations for Q8_0 and Q4_0 weights). A group's integer dot product is
//   exact; it is then scaled by d_a * d_w and added in float32.
// The reduction order is fixed by the row's position alone (not the thread split), so results stay bitwise the
// same for any thread count. Included inside the anonymous namespace of cpu_avx512_bf16.cpp and cpu_avx512.cpp,
// after kernel_impl.h; which parts are compiled follows the compiler's flags there (__AVX512BF16__, __AVX512VNNI__).
#pragma once

struct DotKernels {
  using K = KernelImpl<SimdAvx512>;
  static constexpr int W = K::W, NV = K::NV, NR = K::NR, MR = K::MR;
  static constexpr int64_t kChunk = moe::cpu::kChunkRows;
  static constexpr int kQuantRows = 6;        // rows per int8 / int4 microkernel: 6 x 2 int32 + 6 x 2 float sums
  static constexpr int64_t kPairBlock = 128;  // k pairs per bf16 sub-panel: 128 x 32 words, 16 KB, stays in L1
  static constexpr int64_t kGroupBlockBytes = 32 << 10;  // bytes of int8 / int4 sub-panel, groups at a time
  static_assert(kChunk % kQuantRows == 0 && kChunk % MR == 0, "chunks hold whole blocks");

  // Where chunk row i's floats k .. k + W - 1 (k a multiple of W) lie in a chunk of `rows` rows of packed A.
  static const float* a_chunk(const float* ac, int64_t rows, int64_t depthp, int64_t i, int64_t k) {
    const int64_t blk = i / MR, m = i % MR, mc = K::block_rows(rows - blk * MR);
    return ac + blk * MR * depthp + k * mc + m * W;
  }
  // The valid lanes of the float chunk starting at k (packed A leaves the lanes past the row's end unwritten).
  static __mmask16 valid(int64_t k, int64_t depth) {
    return depth - k >= W ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (depth - k)) - 1);
  }

  // The int8 / int4 GEMM prefetches the next sub-panel of weights while this one is in use, a slice per row block,
  // as KernelImpl::gemm_tile does (there, and in the bf16 kernel, spread over the k steps): weights stream from
  // memory at prefill, and the first row block of a sub-panel would otherwise wait on them. [next, next + bytes) is
  // clipped to the item's panels.
  static void prefetch_slice(const char* stream, int64_t stream_bytes, int64_t next, int64_t bytes, int64_t blocks,
                             int64_t block) {
    if (blocks <= 0) return;
    const int64_t slice = (bytes / 64 + blocks - 1) / blocks * 64;
    const int64_t from = next + block * slice, to = std::min({next + bytes, from + slice, stream_bytes});
    for (int64_t at = from; at < to; at += 64) __builtin_prefetch(stream + at, 0, 3);
  }

#if defined(__AVX512BF16__)  // (avx512_bf16 only)
  // ---- bfloat16 -------------------------------------------------------------------------------------
  // A, converted: per block of MR rows (fewer in the last), chunks of 16 k pairs, each the block's rows of 16
  // words (a word: the bfloat16 of an even k in its low half, the next k in its high half), as pack_a's floats.
  static void convert_bf16(const float* ac, int64_t rows, int64_t k, uint32_t* out) {
    const int64_t depthp = K::packed_depth(k), pchunks = (k + 31) / 32, full = k / 32;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t blk = i / MR, m = i % MR, mc = K::block_rows(rows - blk * MR);
      const float* src = ac + blk * MR * depthp + m * W;  // float chunk c of the row at src + c * W * mc
      uint32_t* dst = out + blk * MR * pchunks * 16 + m * 16;
      for (int64_t pc = 0; pc < full; ++pc) {  // sixteen bfloat16 from lo then sixteen from hi: the pairs as words
        const __m512 lo = _mm512_loadu_ps(src + 2 * pc * W * mc), hi = _mm512_loadu_ps(src + (2 * pc + 1) * W * mc);
        _mm512_storeu_si512(dst + pc * mc * 16, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
      }
      if (full < pchunks) {  // the tail: lanes past k are zeros (packed A leaves them unwritten)
        const int64_t k0 = 32 * full, k1 = k0 + 16;
        const __m512 lo = _mm512_maskz_loadu_ps(valid(k0, k), src + 2 * full * W * mc);
        const __m512 hi =
            k1 < k ? _mm512_maskz_loadu_ps(valid(k1, k), src + (2 * full + 1) * W * mc) : _mm512_setzero_ps();
        _mm512_storeu_si512(dst + full * mc * 16, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
      }
    }
  }

  // acc[M][NR] (+)= pairs p0 .. p1 of A's block a (M rows) times the panel's pair rows b. One row (decode) uses
  // four chains per vector, as KernelImpl::micro_row does, so that the instruction's latency does not set the pace.
  template <int M>
  static void micro_bf16(const uint32_t* a, const uint32_t* b, int64_t p0, int64_t p1, float* acc, bool first,
                         const char* pf = nullptr, const char* pf_end = nullptr) {
    constexpr int C = M == 1 ? 4 : 1;  // chains per accumulator
    __m512 c[M][NV][C];
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < NV; ++v)
        for (int u = 0; u < C; ++u)
          c[m][v][u] = first || C > 1 ? _mm512_setzero_ps() : _mm512_loadu_ps(acc + m * NR + v * W);
    // ak: the block's 16-word chunk of pair p, at p's word; bk: the panel's pair row p.
    const auto step = [&](const uint32_t* ak, const uint32_t* bk, int u) {
      // a pair row's worth of the next sub-panel per step (two lines): the whole of it within one call
      for (int i = 0; i < 2 && pf < pf_end; ++i) __builtin_prefetch(pf, 0, 3), pf += 64;
      __m512i bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_si512(bk + v * W);
      for (int m = 0; m < M; ++m) {
        const __m512i av = _mm512_set1_epi32(static_cast<int>(ak[m * 16]));
        for (int v = 0; v < NV; ++v) c[m][v][u] = _mm512_dpbf16_ps(c[m][v][u], (__m512bh)av, (__m512bh)bv[v]);
      }
    };
    // p0 starts a chunk of 16 pairs (kPairBlock is a multiple of 16): whole chunks, then the tail.
    int64_t p = p0;
    for (; p + 16 <= p1; p += 16) {
      const uint32_t* ac = a + p / 16 * M * 16;
      for (int u = 0; u < 16; ++u) step(ac + u, b + (p + u) * NR, u % C);
    }
    for (int u = 0; p + u < p1; ++u) step(a + p / 16 * M * 16 + u, b + (p + u) * NR, u % C);
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < NV; ++v) {
        __m512 sum = c[m][v][0];
        if constexpr (C > 1) {
          for (int width = C / 2; width > 0; width /= 2)  // pairwise: a fixed order
            for (int u = 0; u < width; ++u) c[m][v][u] = _mm512_add_ps(c[m][v][u], c[m][v][u + width]);
          sum = c[m][v][0];
          if (!first) sum = _mm512_add_ps(_mm512_loadu_ps(acc + m * NR + v * W), sum);
        }
        _mm512_storeu_ps(acc + m * NR + v * W, sum);
      }
  }

  template <int M>
  static void micro_bf16_upto(int rows, const uint32_t* a, const uint32_t* b, int64_t p0, int64_t p1, float* acc,
                              bool first) {
    if constexpr (M > 1) {
      if (rows < M) return micro_bf16_upto<M - 1>(rows, a, b, p0, p1, acc, first);
    }
    micro_bf16<M>(a, b, p0, p1, acc, first);
  }

  static void gemm_bf16(const moe::cpu::GemmProblem& p, const float* a, int64_t row_begin, int64_t row_end,
                        int64_t panel_begin, int64_t panel_end) {
    const int64_t depthp = K::packed_depth(p.k), pairs = (p.k + 1) / 2, pchunks = (p.k + 31) / 32;
    thread_local std::vector<uint32_t> converted;
    thread_local Converted held;
    if (converted.size() < static_cast<size_t>(kChunk * pchunks * 16)) converted.resize(kChunk * pchunks * 16);
    alignas(64) float acc[kChunk * NR];
    const char* stream = static_cast<const char*>(p.panels);
    const int64_t stream_bytes = panel_end * p.panel_bytes;
    for (int64_t c0 = row_begin; c0 < row_end; c0 += kChunk) {
      const int64_t rows = std::min(kChunk, row_end - c0);
      const float* chunk = a + (c0 - row_begin) * depthp;
      if (!held.holds(p, chunk, rows)) convert_bf16(chunk, rows, p.k, converted.data()), held.set(p, chunk, rows);
      for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
        const uint32_t* b = reinterpret_cast<const uint32_t*>(stream + panel * p.panel_bytes);
        if (rows == 1) {
          // One row (decode) streams the panel in one call: nothing of it is reused, so sub-panels that stay in L1
          // buy nothing, and a call per 128 pairs (reducing its four chains, reloading the sums) ran 15-18% slower
          // on the Qwen3 shape (benchmarks/NOTES.md row 100).
          micro_bf16<1>(converted.data(), b, 0, pairs, acc, true);
          K::store_rows(p, acc, c0, rows, panel);
          continue;
        }
        for (int64_t p0 = 0; p0 < pairs; p0 += kPairBlock) {
          const int64_t p1 = std::min(pairs, p0 + kPairBlock);
          // The next sub-panel (in this panel or the next one), a slice per full block of rows, as gemm_tile does.
          const int64_t next = panel * p.panel_bytes + p1 * NR * 4;
          const int64_t next_bytes = std::max<int64_t>(0, std::min(kPairBlock * NR * 4, stream_bytes - next));
          const int64_t blocks = rows / MR, slice = blocks > 0 ? (next_bytes / 64 + blocks - 1) / blocks * 64 : 0;
          for (int64_t r = 0; r < rows; r += MR) {
            const uint32_t* ab = converted.data() + r * pchunks * 16;
            if (r + MR <= rows) {
              const int64_t from = std::min(next_bytes, r / MR * slice), to = std::min(next_bytes, from + slice);
              micro_bf16<MR>(ab, b, p0, p1, acc + r * NR, p0 == 0, stream + next + from, stream + next + to);
            } else {
              micro_bf16_upto<MR>(static_cast<int>(rows - r), ab, b, p0, p1, acc + r * NR, p0 == 0);
            }
          }
        }
        K::store_rows(p, acc, c0, rows, panel);
      }
    }
  }

#endif

  // ---- int8 / int4 ----------------------------------------------------------------------------------
  // A, quantized: per block of kQuantRows rows (fewer in the last) and per weight group, the codes (quads of k as
  // words, the block's rows one after another per quad), then per group and row the scale d_a and the offset
  // correction (the weights are stored unsigned, q + 128 or u = q + 8: sum (q + o) a = sum q a + o sum a).
  struct QuantA {
    std::vector<uint32_t> codes;
    std::vector<float> scales;
    std::vector<int32_t> corrections;
    std::vector<int32_t> subsums;  // with `sub`: per group and row, the codes' sum over each run of `sub` inputs
    // Room for a chunk of kChunk rows of `groups` groups of `quads` quads (and `subs` sub-block sums a group).
    void reserve(int64_t groups, int64_t quads, int64_t subs = 0) {
      const auto grow = [](auto& v, int64_t n) {
        if (v.size() < static_cast<size_t>(n)) v.resize(n);
      };
      grow(codes, kChunk * groups * quads);
      grow(scales, kChunk * groups);
      grow(corrections, kChunk * groups);
      grow(subsums, kChunk * groups * subs);
    }
  };

  static void quantize_a(const float* ac, int64_t rows, int64_t k, int64_t g, int offset, QuantA& out,
                         int64_t sub = 0) {
    const int64_t depthp = K::packed_depth(k), groups = k / g, quads = moe::padded_group(g) / 4;
    thread_local std::vector<float> row;
    thread_local std::vector<int8_t> q;
    if (row.size() < static_cast<size_t>(depthp)) row.resize(depthp);
    if (q.size() < static_cast<size_t>(quads * 4)) q.resize(quads * 4);
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t kk = 0; kk < k; kk += W)
        _mm512_storeu_ps(row.data() + kk, _mm512_maskz_loadu_ps(valid(kk, k), a_chunk(ac, rows, depthp, i, kk)));
      const int64_t blk = i / kQuantRows, m = i % kQuantRows,
                    mc = std::min<int64_t>(kQuantRows, rows - blk * kQuantRows);
      uint32_t* codes = out.codes.data() + blk * kQuantRows * groups * quads;
      float* scales = out.scales.data() + blk * kQuantRows * groups;
      int32_t* corrections = out.corrections.data() + blk * kQuantRows * groups;
      for (int64_t grp = 0; grp < groups; ++grp) {
        const float* x = row.data() + grp * g;
        float amax = 0.0f;
        int64_t j = 0;
        if (g % W == 0) {
          __m512 mx = _mm512_setzero_ps();
          for (; j < g; j += W) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
          amax = _mm512_reduce_max_ps(mx);
        } else {
          for (; j < g; ++j) amax = std::max(amax, std::fabs(x[j]));
        }
        const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        std::fill(q.begin(), q.begin() + quads * 4, int8_t{0});
        j = 0;
        if (g % W == 0) {
          __m512i s = _mm512_setzero_si512();
          for (; j < g; j += W) {
            const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + j), _mm512_set1_ps(id)));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(q.data() + j), _mm512_cvtepi32_epi8(v));
            s = _mm512_add_epi32(s, v);
          }
          sum = _mm512_reduce_add_epi32(s);
        } else {
          for (; j < g; ++j) sum += q[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
        }
        for (int64_t qd = 0; qd < quads; ++qd) std::memcpy(codes + (grp * quads + qd) * mc + m, q.data() + 4 * qd, 4);
        scales[grp * mc + m] = d;
        corrections[grp * mc + m] = offset * sum;
        if (sub > 0) {  // (Q8_K's bsums: one per sub-block of a K-quant's super-block)
          int32_t* sums = out.subsums.data() + (blk * kQuantRows * groups + grp * mc + m) * (g / sub);
          for (int64_t s0 = 0; s0 < g; s0 += sub) {
            int32_t total = 0;
            for (int64_t t = s0; t < s0 + sub; ++t) total += q[t];
            sums[s0 / sub] = total;
          }
        }
      }
    }
  }

  // The codes of quad qd of a panel group (int8: a byte per input) for the panel's NV column vectors.
  static void load_quad(const uint8_t* codes, int64_t qd, __m512i (&b)[NV]) {
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_si512(codes + (qd * NR + v * W) * 4);
  }
  // Octet od's codes (int4, K-quants: nibbles): low nibbles are its first quad, high nibbles its second.
  // Pinned: the line loaded once into a register (see pinned), for the one-row K-quant kernel.
  template <bool Pinned = false>
  static void load_octet(const uint8_t* codes, int64_t od, __m512i (&lo)[NV], __m512i (&hi)[NV]) {
    const __m512i nibbles = _mm512_set1_epi32(0x0f0f0f0f);
    for (int v = 0; v < NV; ++v) {
      __m512i w = _mm512_loadu_si512(codes + (od * NR + v * W) * 4);
      if constexpr (Pinned) pinned(w);
      lo[v] = _mm512_and_si512(w, nibbles);
      hi[v] = _mm512_and_si512(_mm512_srli_epi32(w, 4), nibbles);
    }
  }
  // Keeps v in its register: the compiler otherwise folds the load into each instruction that uses it, and a line
  // of weights loaded 2-8 times over streamed slower at one token (the nibbles' two uses, q5_k's plane lifted for
  // 8 quads: forward 8-15% slower; benchmarks/NOTES.md row 131). Prefill is better with the folded loads.
  static void pinned(__m512i& v) { asm("" : "+v"(v)); }
  // to[m] += one quad's codes b times row m's four activation codes (aq[m], the rows' words of that quad in turn).
  // Without VNNI: vpmaddubsw (pairs in int16) then vpmaddwd by ones, exact while a pair's sum fits int16, i.e. for
  // codes below 128 (int4's at most 15, the K-quants' 63): int8's stored codes reach 255 and are not served so.
  template <int M>
  static void dot_quad(__m512i (&to)[M][NV], const __m512i (&b)[NV], const uint32_t* aq) {
    for (int m = 0; m < M; ++m) {
      const __m512i av = _mm512_set1_epi32(static_cast<int>(aq[m]));
      for (int v = 0; v < NV; ++v)
#if defined(__AVX512VNNI__)
        to[m][v] = _mm512_dpbusd_epi32(to[m][v], b[v], av);
#else
        to[m][v] = _mm512_add_epi32(to[m][v], _mm512_madd_epi16(_mm512_maddubs_epi16(b[v], av), _mm512_set1_epi16(1)));
#endif
    }
  }
  // to[m] += two quads' codes (lo: quad 2o of an octet, hi: 2o + 1) times row m's activation codes (aq: quad 2o's
  // words, `stride` rows a quad). Without VNNI: vpmaddubsw (unsigned codes x signed activations, pairs summed in
  // int16), both quads' pair sums added in int16, then vpmaddwd by ones (quads summed in int32) -- 2.5 instructions a
  // quad for vpdpbusd's one. Exact for the K-quants' codes (at most 63): 2 quads x 2 x 63 x 127 = 32004 < 2^15.
  template <int M>
  static void dot_octet(__m512i (&to)[M][NV], const __m512i (&lo)[NV], const __m512i (&hi)[NV], const uint32_t* aq,
                        int stride) {
#if defined(__AVX512VNNI__)
    dot_quad<M>(to, lo, aq);
    dot_quad<M>(to, hi, aq + stride);
#else
    for (int m = 0; m < M; ++m) {
      const __m512i a0 = _mm512_set1_epi32(static_cast<int>(aq[m])),
                    a1 = _mm512_set1_epi32(static_cast<int>(aq[stride + m]));
      for (int v = 0; v < NV; ++v) {
        const __m512i pairs = _mm512_add_epi16(_mm512_maddubs_epi16(lo[v], a0), _mm512_maddubs_epi16(hi[v], a1));
        to[m][v] = _mm512_add_epi32(to[m][v], _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)));
      }
    }
#endif
  }

  // acc[M][NR] (+)= groups g0 .. g1 of the block's quantized rows times the panel's codes, one float32 scaling and
  // addition per group.
  template <int M, int Bits>
  static void micro_q(const uint32_t* ac, const float* as, const int32_t* az, const uint8_t* panel, int64_t gbytes,
                      int64_t quads, int64_t g0, int64_t g1, float* acc, bool first) {
    __m512 c[M][NV];
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < NV; ++v) c[m][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(acc + m * NR + v * W);
    for (int64_t grp = g0; grp < g1; ++grp) {
      const uint8_t* base = panel + grp * gbytes;
      const uint8_t* codes = base + 2 * NR;
      const uint32_t* a = ac + grp * quads * M;
      // Few rows (decode): the quads' products go to S sums in turn (int4: an octet's low and high nibbles to two of
      // them), cutting the chain of dependent vpdpbusd a group makes to quads / S (where registers allow: S * M * NV
      // sums). One row takes four (two measured within noise of four from L2, 55-59 GB/s per thread: the chain is
      // not what holds decode back; benchmarks/NOTES.md row 95). Integer sums: the result is the same for any S.
      constexpr int S = M == 1 ? 4 : M <= 3 ? 2 : 1;
      __m512i sum[S][M][NV];
      for (int u = 0; u < S; ++u)
        for (int m = 0; m < M; ++m)
          for (int v = 0; v < NV; ++v) sum[u][m][v] = _mm512_setzero_si512();
      if constexpr (Bits == 8) {
        const auto quad = [&](int64_t qd, __m512i(&to)[M][NV]) {
          __m512i b[NV];
          load_quad(codes, qd, b);
          dot_quad<M>(to, b, a + qd * M);
        };
        int64_t qd = 0;
        for (; qd + S <= quads; qd += S) {
          quad(qd, sum[0]);
          if constexpr (S > 1) quad(qd + 1, sum[1]);
          if constexpr (S > 2) quad(qd + 2, sum[2]), quad(qd + 3, sum[3]);
        }
        for (; qd < quads; ++qd) quad(qd, sum[0]);  // (quads is even: S = 4 may leave two)
      } else {
        const auto octet = [&](int64_t od, __m512i(&low)[M][NV], __m512i(&high)[M][NV]) {
          __m512i lo[NV], hi[NV];
          load_octet(codes, od, lo, hi);
          dot_quad<M>(low, lo, a + 2 * od * M);
          dot_quad<M>(high, hi, a + (2 * od + 1) * M);
        };
        const int64_t octets = quads / 2;
        int64_t od = 0;
        if constexpr (S == 4)
          for (; od + 2 <= octets; od += 2) octet(od, sum[0], sum[1]), octet(od + 1, sum[2], sum[3]);
        for (; od < octets; ++od) octet(od, sum[0], sum[S > 1 ? 1 : 0]);
      }
      __m512i ia[M][NV];
      for (int m = 0; m < M; ++m)
        for (int v = 0; v < NV; ++v) {
          ia[m][v] = sum[0][m][v];
          if constexpr (S > 1) ia[m][v] = _mm512_add_epi32(ia[m][v], sum[1][m][v]);
          if constexpr (S > 2) ia[m][v] = _mm512_add_epi32(ia[m][v], _mm512_add_epi32(sum[2][m][v], sum[3][m][v]));
        }
      __m512 sw[NV];
      for (int v = 0; v < NV; ++v)
        sw[v] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 2 * v * W)));
      for (int m = 0; m < M; ++m) {
        const __m512 da = _mm512_set1_ps(as[grp * M + m]);
        const __m512i z = _mm512_set1_epi32(az[grp * M + m]);
        for (int v = 0; v < NV; ++v)
          c[m][v] =
              _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(ia[m][v], z)), _mm512_mul_ps(sw[v], da), c[m][v]);
      }
    }
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(acc + m * NR + v * W, c[m][v]);
  }

  template <int M, int Bits>
  static void micro_q_upto(int rows, const uint32_t* ac, const float* as, const int32_t* az, const uint8_t* panel,
                           int64_t gbytes, int64_t quads, int64_t g0, int64_t g1, float* acc, bool first) {
    if constexpr (M > 1) {
      if (rows < M) return micro_q_upto<M - 1, Bits>(rows, ac, as, az, panel, gbytes, quads, g0, g1, acc, first);
    }
    micro_q<M, Bits>(ac, as, az, panel, gbytes, quads, g0, g1, acc, first);
  }

  template <int Bits>
  static void gemm_q(const moe::cpu::GemmProblem& p, const float* a, int64_t row_begin, int64_t row_end,
                     int64_t panel_begin, int64_t panel_end) {
    const int64_t g = p.group, quads = moe::padded_group(g) / 4, groups = p.k / g;
    // A group's int32 sum holds 4 * quads products of at most 255 * 128: past 65536 inputs it could overflow, and
    // such groups (one scale for a very long row) take the float32 path instead.
    if (quads * 4 > 65536)
      return K::template gemm_tile<typename K::template QuantPanel<Bits>>(p, a, row_begin, row_end, panel_begin,
                                                                          panel_end);
    const int64_t gbytes = 2 * NR + quads * 4 * NR * Bits / 8;
    const int64_t group_block = std::max<int64_t>(1, kGroupBlockBytes / gbytes);
    const int offset = Bits == 8 ? 128 : 8;
    thread_local QuantA qa;
    thread_local Converted held;
    qa.reserve(groups, quads);
    alignas(64) float acc[kChunk * NR];
    for (int64_t c0 = row_begin; c0 < row_end; c0 += kChunk) {
      const int64_t rows = std::min(kChunk, row_end - c0);
      const float* chunk = a + (c0 - row_begin) * K::packed_depth(p.k);
      if (!held.holds(p, chunk, rows)) quantize_a(chunk, rows, p.k, g, offset, qa), held.set(p, chunk, rows);
      for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
        const uint8_t* b = static_cast<const uint8_t*>(p.panels) + panel * p.panel_bytes;
        for (int64_t g0 = 0; g0 < groups; g0 += group_block) {
          const int64_t g1 = std::min(groups, g0 + group_block), next = panel * p.panel_bytes + g1 * gbytes;
          for (int64_t r = 0; r < rows; r += kQuantRows) {
            prefetch_slice(static_cast<const char*>(p.panels), panel_end * p.panel_bytes, next, group_block * gbytes,
                           rows / kQuantRows, r / kQuantRows);
            micro_q_upto<kQuantRows, Bits>(static_cast<int>(std::min<int64_t>(kQuantRows, rows - r)),
                                           qa.codes.data() + r * groups * quads, qa.scales.data() + r * groups,
                                           qa.corrections.data() + r * groups, b, gbytes, quads, g0, g1, acc + r * NR,
                                           g0 == 0);
          }
        }
        K::store_rows(p, acc, c0, rows, panel);
      }
    }
  }

  // ---- K-quants (q4_k, q5_k, q6_k) ----------------------------------------------------------------------
  // llama.cpp's arrangement (its Q8_K activations): each row's activations quantized once per super-block of 256
  // (d_a, codes q_a, and per sub-block the codes' sum S_j), so that a super-block's sub-blocks combine in int32 and
  // the float work is once per 256 inputs: acc = sum_j sc_j (sum c q_a - Off S_j), mins = sum_j m_j S_j, then
  // c += d_a (d acc - dmin mins). Exact in int32 (|sc (c - Off) q_a| <= 127 * 63 * 127 per input, 256 inputs).
  // M rows at a time out of a quantized block of `stride` rows (the codes interleave a block's rows per quad).
  // With `stream_end` (the end of the item's panels), each sub-block prefetches its share of the bytes kStreamAhead
  // on (kernel_impl.h says why); at decode (fewer rows than a quantized block) nothing else does.
  // f(j) for each sub-block j, as a compile-time constant.
  template <class F, int64_t... J>
  static void unrolled_subs(F& f, std::integer_sequence<int64_t, J...>) {
    (f(std::integral_constant<int64_t, J>()), ...);
  }
  template <int M, int High, int Off>
  static void micro_k(const uint32_t* ac, int stride, const float* as, const int32_t* asum, const uint8_t* panel,
                      int64_t sb0, int64_t sb1, float* acc, bool first, const uint8_t* stream_end) {
    constexpr int64_t kQuads = 64;                              // quads of a super-block's activations
    constexpr int64_t sub_quads = High == 2 ? 4 : 8;            // (q6_k's sub-blocks are 16 inputs, the others' 32)
    constexpr moe::KPanel kp = moe::k_panel_of_high(High, NR);  // (constant offsets, and an unrolled prefetch below)
    constexpr int64_t subs = kp.subs, slice = (kp.block() / subs + 63) / 64 * 64;
    __m512 c[M][NV];
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < NV; ++v) c[m][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(acc + m * NR + v * W);
    for (int64_t sb = sb0; sb < sb1; ++sb) {
      const uint8_t* h = panel + sb * kp.block();
      const uint32_t* a = ac + sb * kQuads * stride;
      __m512i total[M][NV], mins[M][NV];
      for (int m = 0; m < M; ++m)
        for (int v = 0; v < NV; ++v) total[m][v] = _mm512_setzero_si512(), mins[m][v] = _mm512_setzero_si512();
      // Sub-block j of the super-block: j an integer, or a compile-time constant where unrolled below. (Called out
      // of line, its sums would go through memory: always inlined.)
      const auto sub_block = [&](auto j) __attribute__((always_inline)) {
        if (stream_end) {  // (decode: this sub-block's share of the stream kStreamAhead bytes on)
          const uint8_t* from = h + kStreamAhead + j * slice;
          if (from + slice <= stream_end) {
#pragma GCC unroll 16
            for (int64_t at = 0; at < slice; at += 64) __builtin_prefetch(from + at, 0, 3);
          } else {
            prefetch_until(from, slice, stream_end);
          }
        }
        const uint8_t* codes = h + kp.codes_at(j);
        // q6_k's codes are q + 32: each sum starts at -32 S_j, so that it ends centred (sum (q + 32) a - 32 S_j),
        // one broadcast a row instead of a multiply and a subtraction a vector (benchmarks/NOTES.md row 132).
        __m512i sum[M][NV], plane[NV] = {};
        for (int m = 0; m < M; ++m) {
          const __m512i start =
              Off ? _mm512_set1_epi32(-Off * asum[(sb * stride + m) * subs + j]) : _mm512_setzero_si512();
          for (int v = 0; v < NV; ++v) sum[m][v] = start;
        }
        if constexpr (High > 0)
          for (int v = 0; v < NV; ++v) {
            plane[v] = _mm512_loadu_si512(h + kp.plane_at(j) + v * W * 4);
            if constexpr (M == 1) pinned(plane[v]);
          }
        octets<M, High>(sum, codes, plane, a + j * sub_quads * stride, stride,
                        std::make_integer_sequence<int, sub_quads / 2>());
        for (int v = 0; v < NV; ++v) {
          const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + kp.scale_at(j) + v * W));
          const __m512i sc = Off ? _mm512_cvtepi8_epi32(sc8) : _mm512_cvtepu8_epi32(sc8);
          __m512i mn = _mm512_setzero_si512();
          if (!Off)
            mn = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + kp.min_at(j) + v * W)));
          for (int m = 0; m < M; ++m) {
            total[m][v] = _mm512_add_epi32(total[m][v], _mm512_mullo_epi32(sum[m][v], sc));
            if (!Off) {
              const __m512i s = _mm512_set1_epi32(asum[(sb * stride + m) * subs + j]);
              mins[m][v] = _mm512_add_epi32(mins[m][v], _mm512_mullo_epi32(s, mn));
            }
          }
        }
      };
      // One row (decode): the sub-blocks unrolled, so that their offsets are constants and the loop's counters,
      // bounds, branches and register copies go (see micro_k_row). Several rows keep the loop: unrolled, the
      // 3-row kernel ran 512 tokens 1.4x slower (its code and registers grow with M).
      if constexpr (M == 1)
        unrolled_subs(sub_block, std::make_integer_sequence<int64_t, kp.subs>());
      else
        for (int64_t j = 0; j < subs; ++j) sub_block(j);
      for (int v = 0; v < NV; ++v) {
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + 2 * v * W)));
        __m512 dmin = _mm512_setzero_ps();
        if (!Off)
          dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + kp.dmin_at() + 2 * v * W)));
        for (int m = 0; m < M; ++m) {
          const __m512 da = _mm512_set1_ps(as[sb * stride + m]);
          c[m][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total[m][v]), _mm512_mul_ps(d, da), c[m][v]);
          if (!Off) c[m][v] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins[m][v]), _mm512_mul_ps(dmin, da), c[m][v]);
        }
      }
    }
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(acc + m * NR + v * W, c[m][v]);
  }

  template <int M, int High, int Off>
  static void micro_k_upto(int rows, const uint32_t* ac, int stride, const float* as, const int32_t* asum,
                           const uint8_t* panel, int64_t sb0, int64_t sb1, float* acc, bool first,
                           const uint8_t* stream_end) {
    if constexpr (M > 1) {
      if (rows < M)
        return micro_k_upto<M - 1, High, Off>(rows, ac, stride, as, asum, panel, sb0, sb1, acc, first, stream_end);
    }
    if constexpr (M == 1)
      micro_k_row<High, Off>(ac, stride, as, asum, panel, sb0, sb1, acc, first, stream_end);
    else
      micro_k<M, High, Off>(ac, stride, as, asum, panel, sb0, sb1, acc, first, stream_end);
  }
  // The one-row (decode) kernel, its sub-blocks unrolled, out of line and flattened, so that all of it is inlined
  // into it and nothing of it into gemm_k: q6_k's decode took 0.69-0.75 of the loop's time, q5_k's 0.95-1.0, q4_k's
  // 0.97-1.05 (benchmarks/NOTES.md row 134). Inlined into gemm_k instead, the unrolled code grew the function past
  // GCC's inlining limits, which then called parts of it out of line (sums through memory) and slowed the
  // several-row kernels (q5_k prefill 15%).
  template <int High, int Off>
  __attribute__((noinline, flatten)) static void micro_k_row(const uint32_t* ac, int stride, const float* as,
                                                             const int32_t* asum, const uint8_t* panel, int64_t sb0,
                                                             int64_t sb1, float* acc, bool first,
                                                             const uint8_t* stream_end) {
    micro_k<1, High, Off>(ac, stride, as, asum, panel, sb0, sb1, acc, first, stream_end);
  }

  // Quad Qd's high bits out of a sub-block's plane onto its nibbles (code = nibble | high << 4): one shift by a
  // constant, then nibble | (shifted & bits) in one vpternlogd. The 16-bit shifts carry bits across a byte only
  // into places the mask drops (a shift by at most 4 towards bit 4 or 5 from bits 0..7 of the same byte).
  template <int High, int Qd>
  static __m512i lifted(__m512i nibbles, __m512i plane) {
    constexpr int s = 4 - High * Qd;
    __m512i at = plane;
    if constexpr (s > 0) at = _mm512_slli_epi16(plane, s);
    if constexpr (s < 0) at = _mm512_srli_epi16(plane, -s);
    return _mm512_ternarylogic_epi32(nibbles, at, _mm512_set1_epi8(High == 2 ? 0x30 : 0x10), 0xf8);  // a | (b & c)
  }
  // A K-quant sub-block's octets (each two quads of nibbles, lifted by the plane where High > 0) into sum; aq: the
  // sub-block's first quad of activation words (`stride` rows a quad).
  template <int M, int High, int... Od>
  static void octets(__m512i (&sum)[M][NV], const uint8_t* codes, const __m512i (&plane)[NV], const uint32_t* aq,
                     int stride, std::integer_sequence<int, Od...>) {
    const auto octet = [&](auto od) {
      constexpr int o = decltype(od)::value;
      __m512i lo[NV], hi[NV];
      load_octet<M == 1>(codes, o, lo, hi);
      if constexpr (High > 0)
        for (int v = 0; v < NV; ++v)
          lo[v] = lifted<High, 2 * o>(lo[v], plane[v]), hi[v] = lifted<High, 2 * o + 1>(hi[v], plane[v]);
      dot_octet<M>(sum, lo, hi, aq + 2 * o * stride, stride);
    };
    (octet(std::integral_constant<int, Od>()), ...);
  }

  // (three rows at a time: total, mins and the sub-block sums are M x NV registers each)
  static constexpr int kKRows = 3;
  static_assert(kQuantRows % kKRows == 0, "K-quant micro rows split a quantized block");

  template <int High, int Off>
  static void gemm_k(const moe::cpu::GemmProblem& p, const float* a, int64_t row_begin, int64_t row_end,
                     int64_t panel_begin, int64_t panel_end) {
    constexpr moe::KPanel kp = moe::k_panel_of_high(High, NR);
    constexpr int64_t kSuper = 256, kQuads = 64;
    const int64_t blocks = p.k / kSuper, subs = kp.subs;
    const int64_t block_group = std::max<int64_t>(1, kGroupBlockBytes / kp.block());  // super-blocks per call
    thread_local QuantA qa;
    thread_local Converted held;
    qa.reserve(blocks, kQuads, subs);
    alignas(64) float acc[kChunk * NR];
    const uint8_t* const stream_end = static_cast<const uint8_t*>(p.panels) + panel_end * p.panel_bytes;
    for (int64_t c0 = row_begin; c0 < row_end; c0 += kChunk) {
      const int64_t rows = std::min(kChunk, row_end - c0);
      const float* chunk = a + (c0 - row_begin) * K::packed_depth(p.k);
      const uint8_t* decode_end = rows < kQuantRows ? stream_end : nullptr;  // (prefetch_slice's blocks are 0 then)
      // (the codes' layout depends on the sub-block size through the sums: a q6_k chunk is not a q4_k one)
      if (!held.holds(p, chunk, rows)) quantize_a(chunk, rows, p.k, kSuper, 0, qa, kp.g), held.set(p, chunk, rows);
      for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
        const uint8_t* b = static_cast<const uint8_t*>(p.panels) + panel * p.panel_bytes;
        for (int64_t s0 = 0; s0 < blocks; s0 += block_group) {
          const int64_t s1 = std::min(blocks, s0 + block_group), next = panel * p.panel_bytes + s1 * kp.block();
          for (int64_t r = 0; r < rows; r += kQuantRows) {
            prefetch_slice(static_cast<const char*>(p.panels), panel_end * p.panel_bytes, next,
                           block_group * kp.block(), rows / kQuantRows, r / kQuantRows);
            const int mc = static_cast<int>(std::min<int64_t>(kQuantRows, rows - r));
            for (int r2 = 0; r2 < mc; r2 += kKRows)
              micro_k_upto<kKRows, High, Off>(std::min(kKRows, mc - r2), qa.codes.data() + r * blocks * kQuads + r2, mc,
                                              qa.scales.data() + r * blocks + r2,
                                              qa.subsums.data() + (r * blocks + r2) * subs, b, s0, s1,
                                              acc + (r + r2) * NR, s0 == 0, decode_end);
          }
        }
        K::store_rows(p, acc, c0, rows, panel);
      }
    }
  }

  // The generic table with the dot-product kernels these flags compile in place of its widening ones.
  static const moe::cpu::KernelTable* table() {
    static const moe::cpu::KernelTable t = [] {
#if defined(__AVX512BF16__) && defined(__AVX512VNNI__)
      moe::cpu::KernelTable x = *K::table(moe::Isa::avx512_bf16);
      x.replace({moe::WeightDtype::bfloat16, &gemm_bf16});
      x.replace({moe::WeightDtype::int8, &gemm_q<8>});
      x.replace({moe::WeightDtype::int4, &gemm_q<4>});
#else
      moe::cpu::KernelTable x = *K::table(moe::Isa::avx512);
      x.replace({moe::WeightDtype::int4, &gemm_q<4>});  // (int8 stays widened: see dot_quad)
#endif
      x.replace({moe::WeightDtype::q4_k, &gemm_k<0, 0>});
      x.replace({moe::WeightDtype::q5_k, &gemm_k<1, 0>});
      x.replace({moe::WeightDtype::q6_k, &gemm_k<2, 32>});
      return x;
    }();
    return &t;
  }
};
