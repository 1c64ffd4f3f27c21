// The int8 and int4 GEMMs (llama.cpp's Q8_0 / Q4_0 blocks) of the ISAs whose integer kernel computes one row at a
// time (avx2: kernel_quant_avx2.h; neon_dotprod: kernel_quant_neon.h), as llama.cpp's Q8_0 / Q4_0 x Q8_0 kernels do:
// each row's activations quantized per weight group (Q8_0: d_a = max|a| / 127, q_a = round(a / d_a), nearest even,
// and the group's sum of codes S), the codes multiplied by the ISA's byte dot product, then c += d_a d_w (the
// group's integer sum) in float32 once per group, as kernel_dot_avx512.h's gemm_q does with vpdpbusd. This is the
// part they share: the activations' quantization and the tile (gemm_by_rows in kernel_impl.h, a panel's groups
// 16 KB at a time). Row, the ISA's kernel, gives K (its KernelImpl), kBits (8 or 4) and
//   row_q(codes, scales, sums, panel, group bytes, padded group, g0, g1, acc, first, stream_end)
// (one row's products with groups g0 .. g1 of a panel). Included inside the anonymous namespace of the ISA's
// translation unit, after kernel_impl.h.
#pragma once

template <class Row>
struct QuantByRows {
  using K = typename Row::K;
  static constexpr int Bits = Row::kBits, W = K::W, NR = K::NR, MR = K::MR;

  // A chunk's rows as Q8_0 per group: codes[row][group][padded group] (zeros past g), scales and sums[row][group].
  struct QuantA {
    std::vector<int8_t> codes;
    std::vector<float> scales;
    std::vector<int32_t> sums;
  };

  static void quantize(const float* ac, int64_t rows, int64_t k, int64_t g, QuantA& q) {
    const int64_t depthp = K::packed_depth(k), groups = k / g, gp = moe::padded_group(g);
    if (q.codes.size() < static_cast<size_t>(rows * groups * gp)) q.codes.resize(rows * groups * gp);
    if (q.scales.size() < static_cast<size_t>(rows * groups)) q.scales.resize(rows * groups);
    if (q.sums.size() < static_cast<size_t>(rows * groups)) q.sums.resize(rows * groups);
    thread_local std::vector<float> row;
    if (row.size() < static_cast<size_t>(depthp)) row.resize(depthp);
    for (int64_t i = 0; i < rows; ++i) {
      // (pack_a's layout: blocks of MR rows, each W-wide chunk of k the block's rows one after another)
      const int64_t blk = i / MR, m = i % MR, mc = K::block_rows(rows - blk * MR);
      const float* src = ac + blk * MR * depthp + m * W;
      for (int64_t c = 0; c < depthp / W; ++c) std::memcpy(row.data() + c * W, src + c * W * mc, W * sizeof(float));
      for (int64_t grp = 0; grp < groups; ++grp) {
        const float* x = row.data() + grp * g;
        float amax = 0.0f;
        for (int64_t j = 0; j < g; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int8_t* codes = q.codes.data() + (i * groups + grp) * gp;
        int32_t sum = 0;
        // (nearbyint rounds to nearest even, as the vector kernels' conversions do)
        for (int64_t j = 0; j < g; ++j) sum += codes[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
        std::fill(codes + g, codes + gp, int8_t{0});
        q.scales[i * groups + grp] = amax / 127.0f;
        q.sums[i * groups + grp] = sum;
      }
    }
  }

  // A tile (gemm_by_rows's loop), a panel's groups 16 KB at a time.
  static void gemm(const moe::cpu::GemmProblem& p, const float* a, int64_t row_begin, int64_t row_end,
                   int64_t panel_begin, int64_t panel_end) {
    const int64_t g = p.group, gp = moe::padded_group(g), groups = p.k / g;
    // A group's int32 sum holds gp products of at most 8 x 127 (int4, centred) or 128 x 127 (int8): past 2^20 or
    // 2^16 inputs it could overflow, and such groups (one scale for a very long row) take the float32 path instead.
    if (gp > (Bits == 4 ? int64_t{1} << 20 : int64_t{1} << 16))
      return K::template gemm_tile<typename K::template QuantPanel<Bits>>(p, a, row_begin, row_end, panel_begin,
                                                                          panel_end);
    const int64_t gbytes = 2 * NR + gp * NR * Bits / 8;
    thread_local QuantA qa;
    gemm_by_rows<K>(
        p, a, row_begin, row_end, panel_begin, panel_end, groups, std::max<int64_t>(1, (int64_t{16} << 10) / gbytes),
        [&](const float* chunk, int64_t rows) { quantize(chunk, rows, p.k, g, qa); },
        [&](int64_t r, const uint8_t* b, int64_t g0, int64_t g1, float* acc, bool first, const uint8_t* end) {
          Row::row_q(qa.codes.data() + r * groups * gp, qa.scales.data() + r * groups, qa.sums.data() + r * groups, b,
                     gbytes, gp, g0, g1, acc, first, end);
        });
  }
};
