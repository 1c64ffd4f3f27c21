// The int8 and int4 GEMMs (llama.cpp's Q8_0 / Q4_0 blocks) of the ISAs whose integer kernel computes one row at a
// time (avx2: kernel_quant_avx2.h; neon_dotprod: kernel_quant_neon.h), as llama.cpp's Q8_0 / Q4_0 x Q8_0 kernels do:
// each row's activations quantized per weight group (Q8_0: d_a = max|a| / 127, q_a = round(a / d_a), nearest even,
// and the group's sum of codes S), the codes multiplied by the ISA's byte dot product, then c += d_a d_w (the
// group's integer sum) in float32 once per group, as kernel_dot_avx512.h's gemm_q does with vpdpbusd. This is the
// part they share, with kernel_impl.h's RowCodes (the activations' quantization) and gemm_by_rows (the tile, a
// panel's groups 16 KB at a time). Row, the ISA's kernel, gives K (its KernelImpl), kBits (8 or 4) and
//   row_q(codes, scales, sums, panel, group bytes, padded group, g0, g1, acc, first, stream_end)
// (one row's products with groups g0 .. g1 of a panel). Included inside the anonymous namespace of the ISA's
// translation unit, after kernel_impl.h.
#pragma once

template <class Row>
struct QuantByRows {
  using K = typename Row::K;
  static constexpr int Bits = Row::kBits, NR = K::NR;

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
    thread_local RowCodes qa;
    gemm_by_rows<K>(
        p, a, row_begin, row_end, panel_begin, panel_end, groups, std::max<int64_t>(1, (int64_t{16} << 10) / gbytes),
        [&](const float* chunk, int64_t rows) { qa.quantize<K>(chunk, rows, p.k, g, gp, g, RowCodes::block_codes); },
        [&](int64_t r, const uint8_t* b, int64_t g0, int64_t g1, float* acc, bool first, const uint8_t* end) {
          Row::row_q(qa.codes.data() + r * groups * gp, qa.scales.data() + r * groups, qa.sums.data() + r * groups, b,
                     gbytes, gp, g0, g1, acc, first, end);
        });
  }
};
