// The K-quant GEMMs (q4_k, q5_k, q6_k) of the ISAs whose integer kernel computes one row at a time (avx2:
// kernel_kquant_avx2.h; neon_dotprod: kernel_kquant_neon.h), as llama.cpp's Q*_K x Q8_K kernels do: each row's
// activations quantized once per super-block of 256 (Q8_K: d_a = max|a| / 127, q_a = round(a / d_a), nearest even,
// and each sub-block's sum of codes S_j), the codes multiplied by the ISA's byte dot product, a super-block's
// sub-blocks combined in int32 (sum_j sc_j (sum c q_a - Off S_j) and sum_j m_j S_j, exact), then c += d_a (d acc -
// dmin mins) in float32, as kernel_dot_avx512.h does. This is the part they share, with kernel_impl.h's RowCodes (the
// activations' quantization) and gemm_by_rows (the tile loop). Row, the ISA's kernel, gives
//   K                                  its KernelImpl (the packed A's layout, store_rows, the generic table);
//   quantize_block(x, codes) -> d_a    256 floats to Q8_K codes, d_a returned;
//   row_k<High, Off>(...)              one row's products with a panel's super-blocks sb0 .. sb1 (see KQuantAvx2).
// Included inside the anonymous namespace of the ISA's translation unit, after kernel_impl.h.
#pragma once

template <class Row>
struct KQuantByRows {
  using K = typename Row::K;
  static constexpr int NR = K::NR;
  static constexpr int64_t kSuper = 256;

  // A tile (gemm_by_rows's loop), a panel's super-blocks 16 KB at a time.
  template <int High, int Off>
  static void gemm_k(const moe::cpu::GemmProblem& p, const float* a, int64_t row_begin, int64_t row_end,
                     int64_t panel_begin, int64_t panel_end) {
    constexpr moe::KPanel kp = moe::k_panel_of_high(High, NR);
    const int64_t blocks = p.k / kSuper, subs = kp.subs;
    const int64_t step = std::max<int64_t>(1, (int64_t{16} << 10) / kp.block());
    thread_local RowCodes qa;
    gemm_by_rows<K>(
        p, a, row_begin, row_end, panel_begin, panel_end, blocks, step,
        [&](const float* chunk, int64_t rows) {
          qa.quantize<K>(chunk, rows, p.k, kSuper, kSuper, kp.g,
                         [](const float* x, int64_t, int8_t* codes) { return Row::quantize_block(x, codes); });
        },
        [&](int64_t r, const uint8_t* b, int64_t s0, int64_t s1, float* acc, bool first, const uint8_t* end) {
          Row::template row_k<High, Off>(qa.codes.data() + r * p.k, qa.scales.data() + r * blocks,
                                         qa.sums.data() + r * blocks * subs, b, s0, s1, acc, first, end);
        });
  }

  // The generic table of `isa` with these kernels in place of its widening K-quant ones.
  static const moe::cpu::KernelTable* table(moe::Isa isa) {
    static const moe::cpu::KernelTable t = [isa] {
      moe::cpu::KernelTable x = *K::table(isa);
      x.replace({moe::WeightDtype::q4_k, &gemm_k<0, 0>});
      x.replace({moe::WeightDtype::q5_k, &gemm_k<1, 0>});
      x.replace({moe::WeightDtype::q6_k, &gemm_k<2, 32>});
      return x;
    }();
    return &t;
  }
};
