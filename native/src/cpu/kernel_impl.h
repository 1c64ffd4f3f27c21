// ISA-generic kernel bodies, written once against a small SIMD type V and compiled once per ISA by the
// cpu_<isa>.cpp translation units (the ggml / MLAS way). V provides: reg, kLanes, kVectors, kMicroRows,
// zero, set1, load, load_f16, load_bf16_pair, load_code, store, add, sub, mul, div, fma (a * b + c), max, min,
// copysign, exp. The GEMM is written once over a panel reader per weight dtype (PlainPanel, Bf16Panel, QuantPanel),
// which widens (and dequantizes) the stored weights in registers as they are loaded.
// Included inside an anonymous namespace of each cpu_<isa>.cpp, after the standard headers it uses.
#pragma once

// Which chunk of packed A a thread's converted copy holds (the dot-product kernels' activations, bfloat16 or
// quantized): the items of one GemmProblem::a_version that share a row chunk (a group's panel tiles) convert it
// once per thread instead of once per item.
struct Converted {
  uint64_t version = 0;
  const float* a = nullptr;
  int64_t rows = 0;
  bool holds(const moe::cpu::GemmProblem& p, const float* chunk, int64_t chunk_rows) const {
    return p.a_version != 0 && version == p.a_version && a == chunk && rows == chunk_rows;
  }
  void set(const moe::cpu::GemmProblem& p, const float* chunk, int64_t chunk_rows) {
    version = p.a_version, a = chunk, rows = chunk_rows;
  }
};

// Bytes ahead of a one-row (decode) weight stream that the integer kernels prefetch, each unit of the stream (a
// sub-block, a group) its own share of it: at decode nothing else does, and one thread streamed q4_k at 12-17 GB/s
// without it, 28-30 with it (benchmarks/NOTES.md row 109): the hardware prefetchers alone leave the kernel's loads
// waiting on memory, with its work added to the stream's time instead of hidden under it.
constexpr int64_t kStreamAhead = 6144;
// Prefetches [from, from + bytes) a line at a time, up to `end` (the end of the item's panels).
inline void prefetch_until(const uint8_t* from, int64_t bytes, const uint8_t* end) {
  for (const uint8_t* at = from; at < from + bytes && at < end; at += 64) __builtin_prefetch(at, 0, 3);
}

// Rows of packed A quantized as llama.cpp's Q8_0 / Q8_K activations, for the integer kernels that compute one row at
// a time (kernel_quant_rows.h: a block per weight group; kernel_kquant_rows.h: a block per super-block of 256): per
// row and block, d_a = max|a| / 127 and the codes q_a = round(a / d_a) (nearest even), zeros past the block's inputs
// up to `padded` codes, and each run of `sub` inputs' sum of codes. codes[row][block][padded],
// scales[row][block], sums[row][block][block inputs / sub].
struct RowCodes {
  std::vector<int8_t> codes;
  std::vector<float> scales;
  std::vector<int32_t> sums;

  // One block's n floats to codes; d_a returned (nearbyint rounds to nearest even, as the vector conversions do).
  static float block_codes(const float* x, int64_t n, int8_t* codes) {
    float amax = 0.0f;
    for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t j = 0; j < n; ++j) codes[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
    return amax / 127.0f;
  }

  // K: the KernelImpl whose pack_a wrote ac (blocks of MR rows, each W-wide chunk of k the block's rows one after
  // another). to_codes(x, n, codes) -> d_a quantizes a block: block_codes, or an ISA's vector form of it.
  template <class K, class ToCodes>
  void quantize(const float* ac, int64_t rows, int64_t k, int64_t block, int64_t padded, int64_t sub,
                ToCodes&& to_codes) {
    const int64_t depthp = K::packed_depth(k), blocks = k / block, subs = block / sub;
    if (codes.size() < static_cast<size_t>(rows * blocks * padded)) codes.resize(rows * blocks * padded);
    if (scales.size() < static_cast<size_t>(rows * blocks)) scales.resize(rows * blocks);
    if (sums.size() < static_cast<size_t>(rows * blocks * subs)) sums.resize(rows * blocks * subs);
    thread_local std::vector<float> row;
    if (row.size() < static_cast<size_t>(depthp)) row.resize(depthp);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t blk = i / K::MR, m = i % K::MR, mc = K::block_rows(rows - blk * K::MR);
      const float* src = ac + blk * K::MR * depthp + m * K::W;
      for (int64_t c = 0; c < depthp / K::W; ++c)
        std::memcpy(row.data() + c * K::W, src + c * K::W * mc, K::W * sizeof(float));
      for (int64_t b = 0; b < blocks; ++b) {
        int8_t* q = codes.data() + (i * blocks + b) * padded;
        scales[i * blocks + b] = to_codes(row.data() + b * block, block, q);
        std::fill(q + block, q + padded, int8_t{0});
        for (int64_t j = 0; j < subs; ++j) {
          int32_t s = 0;
          for (int64_t t = j * sub; t < (j + 1) * sub; ++t) s += q[t];
          sums[(i * blocks + b) * subs + j] = s;
        }
      }
    }
  }
};

// The tile loop of the integer kernels that compute one row at a time (kernel_kquant_rows.h, kernel_quant_avx2.h):
// rows kChunkRows at a time, quantized once a chunk (quantize(chunk, rows); kept for the next item of the same A),
// then panel by panel, `step` of a panel's `units` (super-blocks, groups) at a time for every row of the chunk, so
// that they are reused from L1: row(r, panel, u0, u1, acc, first, stream_end) adds row r's products with units
// u0 .. u1 to acc. One row (decode) gets the end of the item's panels, to prefetch the stream ahead of itself.
// (Each caller's lambdas make an instantiation of its own, and with it a Converted of its own.)
template <class K, class Quantize, class Row>
void gemm_by_rows(const moe::cpu::GemmProblem& p, const float* a, int64_t row_begin, int64_t row_end,
                  int64_t panel_begin, int64_t panel_end, int64_t units, int64_t step, Quantize&& quantize, Row&& row) {
  constexpr int64_t kChunk = moe::cpu::kChunkRows;
  thread_local Converted held;
  alignas(64) float acc[kChunk * K::NR];
  const uint8_t* const stream_end = static_cast<const uint8_t*>(p.panels) + panel_end * p.panel_bytes;
  for (int64_t c0 = row_begin; c0 < row_end; c0 += kChunk) {
    const int64_t rows = std::min(kChunk, row_end - c0);
    const float* chunk = a + (c0 - row_begin) * K::packed_depth(p.k);
    if (!held.holds(p, chunk, rows)) quantize(chunk, rows), held.set(p, chunk, rows);
    const uint8_t* decode_end = rows == 1 ? stream_end : nullptr;
    for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
      const uint8_t* b = static_cast<const uint8_t*>(p.panels) + panel * p.panel_bytes;
      for (int64_t u0 = 0; u0 < units; u0 += step)
        for (int64_t r = 0; r < rows; ++r)
          row(r, b, u0, std::min(units, u0 + step), acc + r * K::NR, u0 == 0, decode_end);
      K::store_rows(p, acc, c0, rows, panel);
    }
  }
}

template <class V>
struct KernelImpl {
  using reg = typename V::reg;
  static constexpr int W = V::kLanes;
  static constexpr int NV = V::kVectors;
  static constexpr int MR = V::kMicroRows;
  static constexpr int NR = W * NV;
  static_assert(NV % 2 == 0, "a gated panel splits its vectors in two");
  static_assert(moe::cpu::kTileRows % MR == 0, "tile rows must be a multiple of the micro rows");

  // Readers of one packed panel (core/weight_formats.h has the layouts): row(kk, v) is the float32 weights of
  // input kk for the panel's columns v * W .. v * W + W - 1, widened and, for int8 / int4, scaled: exactly the
  // weights the dtype stands for, so every dtype shares the float32 GEMM's sums and order. Built at a k0; enter(kk)
  // is called for kk = k0, k0 + 1, ... in order before that row is read (a quantized panel loads its group's scales
  // there). offset(k) is the byte offset of input k within a panel (k a multiple of kBlockDepth, or the end).
  template <class B>
  struct PlainPanel {  // float32, float16: k-major rows of NR weights
    const B* p;
    PlainPanel(const moe::cpu::GemmProblem&, const void* panel, int64_t) : p(static_cast<const B*>(panel)) {}
    void enter(int64_t) {}
    reg row(int64_t kk, int v) const {
      if constexpr (std::is_same_v<B, float>)
        return V::load(p + kk * NR + v * W);
      else
        return V::load_f16(reinterpret_cast<const uint16_t*>(p + kk * NR + v * W));
    }
    static int64_t offset(const moe::cpu::GemmProblem&, int64_t k) { return k * NR * int64_t{sizeof(B)}; }
  };
  struct Bf16Panel {  // k pairs of NR words
    const uint32_t* p;
    Bf16Panel(const moe::cpu::GemmProblem&, const void* panel, int64_t) : p(static_cast<const uint32_t*>(panel)) {}
    void enter(int64_t) {}
    reg row(int64_t kk, int v) const { return V::load_bf16_pair(p + kk / 2 * NR + v * W, static_cast<int>(kk & 1)); }
    static int64_t offset(const moe::cpu::GemmProblem&, int64_t k) { return (k + 1) / 2 * NR * 4; }
  };
  template <int Bits>  // int8 (quads of k) and int4 (octets of k): per group, NR float16 scales then the codes
  struct QuantPanel {
    static constexpr int kPerWord = 32 / Bits;  // inputs per 32-bit word
    const uint8_t* panel;
    const uint8_t* codes = nullptr;
    int64_t g, group_bytes, group_start = 0, next = 0;
    reg scale[NV];
    QuantPanel(const moe::cpu::GemmProblem& p, const void* base, int64_t k0)
        : panel(static_cast<const uint8_t*>(base)), g(p.group), group_bytes(bytes_per_group(p.group)) {
      load(k0 / g);
    }
    static int64_t bytes_per_group(int64_t g) { return 2 * NR + (g + 7) / 8 * 8 * NR * Bits / 8; }
    void load(int64_t group) {
      const uint8_t* base = panel + group * group_bytes;
      for (int v = 0; v < NV; ++v) scale[v] = V::load_f16(reinterpret_cast<const uint16_t*>(base) + v * W);
      codes = base + 2 * NR;
      group_start = group * g;
      next = group_start + g;
    }
    void enter(int64_t kk) {
      if (kk == next) load(kk / g);
    }
    reg row(int64_t kk, int v) const {
      const int64_t j = kk - group_start, r = j % kPerWord;
      const uint8_t* word = codes + (j / kPerWord * NR + v * W) * 4;
      // int8: byte r of the word, stored q + 128; int4: byte r % 4, low nibble for r < 4, stored u (value u - 8).
      const reg q = Bits == 8 ? V::load_code(word, static_cast<int>(8 * r), 0xff, 128)
                              : V::load_code(word, static_cast<int>(8 * (r & 3) + 4 * (r >> 2)), 0xf, 8);
      return V::mul(q, scale[v]);
    }
    static int64_t offset(const moe::cpu::GemmProblem& p, int64_t k) {
      return k / p.group * bytes_per_group(p.group) + k % p.group * NR * Bits / 8;
    }
  };
  // The K-quants (q4_k: High 0, Offset 0; q5_k: 1, 0; q6_k: 2, 32), in moe::KPanel's layout: per super-block of
  // 256, NR float16 d (and dmin), NR 8-bit scales (and mins) per sub-block of g, then per sub-block the codes'
  // nibbles as QuantPanel<4> lays them out and (High > 0) a plane of their high bits, a word per column. A
  // sub-block's scale d * sc and min dmin * m are formed as ggml forms them; a weight is scale * (code - Offset) -
  // min, the product rounded before the difference (where the compiler does not fuse them: a last-bit difference at
  // most).
  template <int High, int Offset>
  struct AffinePanel {
    const uint8_t* panel;
    const uint8_t* codes = nullptr;
    moe::KPanel kp;
    int64_t group_start = 0, next = 0;
    reg scale[NV], min[NV];
    AffinePanel(const moe::cpu::GemmProblem& p, const void* base, int64_t k0)
        : panel(static_cast<const uint8_t*>(base)), kp(moe::k_panel(p.weight_dtype, NR)) {
      load(k0 / kp.g);
    }
    void load(int64_t group) {
      const int64_t j = group % kp.subs;
      const uint8_t* h = panel + group / kp.subs * kp.block();
      for (int v = 0; v < NV; ++v) {
        scale[v] = V::mul(V::load_f16(reinterpret_cast<const uint16_t*>(h) + v * W),
                          V::load_bytes(h + kp.scale_at(j) + v * W, !kp.has_min));
        min[v] = kp.has_min ? V::mul(V::load_f16(reinterpret_cast<const uint16_t*>(h + kp.dmin_at()) + v * W),
                                     V::load_bytes(h + kp.min_at(j) + v * W, false))
                            : V::zero();
      }
      codes = h + kp.codes_at(j);
      group_start = group * kp.g;
      next = group_start + kp.g;
    }
    void enter(int64_t kk) {
      if (kk == next) load(kk / kp.g);
    }
    reg row(int64_t kk, int v) const {
      const int64_t j = kk - group_start, r = j % 8;
      reg q = V::load_code(codes + (j / 8 * NR + v * W) * 4, static_cast<int>(8 * (r & 3) + 4 * (r >> 2)), 0xf, Offset);
      if constexpr (High > 0) {  // (integers: exact in float32)
        const reg top = V::load_code(codes + kp.nibbles() + v * W * 4, static_cast<int>(8 * (j % 4) + High * (j / 4)),
                                     (1 << High) - 1, 0);
        q = V::fma(top, V::set1(16.0f), q);
      }
      return V::sub(V::mul(q, scale[v]), min[v]);
    }
    static int64_t offset(const moe::cpu::GemmProblem& p, int64_t k) {  // (k a multiple of 256: whole super-blocks)
      return k / 256 * moe::k_panel(p.weight_dtype, NR).block();
    }
  };

  // One row (decode): M * NV accumulators would make a chain of dependent FMAs, bounded by FMA latency rather
  // than by the weight stream; four interleaved partial sums per vector keep the loads flowing.
  template <class P>
  static void micro_row(const float* a, P b, int64_t k0, int64_t depth, float* acc, bool first) {
    // a is the row itself from k0, packed densely (see pack_a): element kk is a[kk - k0]
    constexpr int U = 4;  // the final sum below is written for exactly four
    reg c[U][NV];
    for (int u = 0; u < U; ++u)
      for (int v = 0; v < NV; ++v) c[u][v] = V::zero();
    int64_t kk = k0;
    const int64_t end = k0 + depth;
    for (; kk + U <= end; kk += U)
      for (int u = 0; u < U; ++u) {
        b.enter(kk + u);
        const reg av = V::set1(a[kk + u - k0]);
        for (int v = 0; v < NV; ++v) c[u][v] = V::fma(av, b.row(kk + u, v), c[u][v]);
      }
    for (; kk < end; ++kk) {
      b.enter(kk);
      const reg av = V::set1(a[kk - k0]);
      for (int v = 0; v < NV; ++v) c[0][v] = V::fma(av, b.row(kk, v), c[0][v]);
    }
    for (int v = 0; v < NV; ++v) {
      const reg sum = V::add(V::add(c[0][v], c[1][v]), V::add(c[2][v], c[3][v]));
      V::store(acc + v * W, first ? sum : V::add(V::load(acc + v * W), sum));
    }
  }

  // acc[M][NR] (+)= A(depth x M, packed by pack_a: chunks of W k, the M rows' W values one row after another)
  // * B(inputs k0 .. k0 + depth of the panel). Also prefetches the cache lines [pf, pf_end), up to `lines` per k
  // step: enough to cover a whole next sub-panel within one microkernel call, which an expert with a single full
  // block of rows needs (see gemm_tile).
  template <int M, class P>
  static void micro(const float* a, P b, int64_t k0, int64_t depth, float* acc, bool first, int lines = 0,
                    const char* pf = nullptr, const char* pf_end = nullptr) {
    if constexpr (M == 1) return micro_row(a, b, k0, depth, acc, first);
    reg c[M][NV];
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < NV; ++v) c[m][v] = first ? V::zero() : V::load(acc + m * NR + v * W);
    const auto step = [&](const float* ak, int64_t kk) {
      for (int i = 0; i < lines && pf < pf_end; ++i) __builtin_prefetch(pf, 0, 3), pf += 64;
      b.enter(kk);
      reg bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = b.row(kk, v);
      for (int m = 0; m < M; ++m) {
        const reg av = V::set1(ak[m * W]);
        for (int v = 0; v < NV; ++v) c[m][v] = V::fma(av, bv[v], c[m][v]);
      }
    };
    int64_t kc = 0;
    for (; kc + W <= depth; kc += W)
      for (int u = 0; u < W; ++u) step(a + kc * M + u, k0 + kc + u);
    for (int u = 0; kc + u < depth; ++u) step(a + kc * M + u, k0 + kc + u);
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < NV; ++v) V::store(acc + m * NR + v * W, c[m][v]);
  }

  template <int M, class P>
  static void micro_upto(int rows, const float* a, const P& b, int64_t k0, int64_t depth, float* acc, bool first) {
    if constexpr (M > 1) {
      if (rows < M) return micro_upto<M - 1>(rows, a, b, k0, depth, acc, first);
    }
    micro<M>(a, b, k0, depth, acc, first);
  }

  static reg sigmoid(reg x) {  // 1 / (1 + e^-x)
    const reg one = V::set1(1.0f);
    return V::div(one, V::add(one, V::exp(V::sub(V::zero(), x))));
  }

  // gelu(x) = x * Phi(x) = 0.5 x erfc(-x / sqrt 2), erfc by the Chebyshev fit of Numerical Recipes
  // (erfcc, fractional error < 1.2e-7), applied to |x| / sqrt 2 and reflected: erfc(-z) = 2 - erfc(z).
  static reg normal_cdf(reg x) {
    const reg one = V::set1(1.0f);
    const reg z = V::mul(V::max(x, V::sub(V::zero(), x)), V::set1(0.70710678118654752f));
    const reg t = V::div(one, V::fma(V::set1(0.5f), z, one));
    reg p = V::set1(0.17087277f);
    p = V::fma(p, t, V::set1(-0.82215223f));
    p = V::fma(p, t, V::set1(1.48851587f));
    p = V::fma(p, t, V::set1(-1.13520398f));
    p = V::fma(p, t, V::set1(0.27886807f));
    p = V::fma(p, t, V::set1(-0.18628806f));
    p = V::fma(p, t, V::set1(0.09678418f));
    p = V::fma(p, t, V::set1(0.37409196f));
    p = V::fma(p, t, V::set1(1.00002368f));
    p = V::fma(p, t, V::set1(-1.26551223f));
    const reg e = V::mul(t, V::exp(V::sub(p, V::mul(z, z))));  // erfc(z)
    // Phi(x) = 0.5 * (1 + sign(x) * (1 - erfc(|x| / sqrt 2)))
    return V::mul(V::set1(0.5f), V::add(one, V::copysign(V::sub(one, e), x)));
  }
  static reg gelu_erf(reg x) { return V::mul(x, normal_cdf(x)); }

  // gelu with the tanh approximation: 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
  static reg gelu_tanh(reg x) {
    const reg x3 = V::mul(V::mul(x, x), x);
    const reg u2 = V::mul(V::set1(1.5957691216057308f), V::fma(V::set1(0.044715f), x3, x));
    return V::mul(x, sigmoid(u2));
  }

  static reg activate(moe::Activation act, reg x) {
    switch (act) {
      case moe::Activation::swiglu:
      case moe::Activation::swiglu_clamped:  // (its clamps and alpha are in epilogue)
      case moe::Activation::silu: return V::mul(x, sigmoid(x));
      case moe::Activation::geglu:
      case moe::Activation::gelu: return gelu_erf(x);
      case moe::Activation::gelu_tanh: return gelu_tanh(x);
      case moe::Activation::relu: return V::max(x, V::zero());
      case moe::Activation::identity: break;
    }
    return x;
  }

  // Writes one output row of a panel from its accumulators: bias, activation, gating, then the valid columns,
  // W at a time, `chunk_stride` floats apart (W: a plain row; in a packed A, the block's rows times W).
  static void epilogue(const moe::cpu::GemmProblem& p, const float* acc, const float* bias, float* out, int64_t valid,
                       int64_t chunk_stride) {
    alignas(64) float row[NR];
    if (p.activation == moe::Activation::swiglu_clamped) {
      // gpt-oss: g = min(g, limit); u = clamp(u, -limit, limit); out = g sigmoid(alpha g) (u + 1)
      constexpr int half = NV / 2;
      const reg limit = V::set1(p.limit), low = V::set1(-p.limit), alpha = V::set1(p.alpha), one = V::set1(1.0f);
      for (int v = 0; v < half; ++v) {
        const reg g = V::min(V::add(V::load(acc + v * W), V::load(bias + v * W)), limit);
        const reg u = V::max(V::min(V::add(V::load(acc + (half + v) * W), V::load(bias + (half + v) * W)), limit), low);
        V::store(row + v * W, V::mul(V::mul(g, sigmoid(V::mul(alpha, g))), V::add(u, one)));
      }
    } else if (p.gated) {
      constexpr int half = NV / 2;
      for (int v = 0; v < half; ++v) {
        const reg g = V::add(V::load(acc + v * W), V::load(bias + v * W));
        const reg u = V::add(V::load(acc + (half + v) * W), V::load(bias + (half + v) * W));
        V::store(row + v * W, V::mul(activate(p.activation, g), u));
      }
    } else {
      for (int v = 0; v < NV; ++v)
        V::store(row + v * W, activate(p.activation, V::add(V::load(acc + v * W), V::load(bias + v * W))));
    }
    int64_t j = 0;
    for (; j + W <= valid; j += W) V::store(out + j / W * chunk_stride, V::load(row + j));
    if (j < valid) std::memcpy(out + j / W * chunk_stride, row + j, sizeof(float) * (valid - j));
  }

  // The hidden unit's backward over `count` units (core/backward.cpp): from the pre-activations g (and u when
  // gated) and dL/da, the unit a as the forward's epilogue computes it, dg = dL/da da/dg and du = dL/da da/du.
  // Derivatives: silu' = s (1 + x (1 - s)); gelu' = Phi(x) + x phi(x); tanh-gelu, a = x sigmoid(2v) with
  // v = c (x + 0.044715 x^3): a' = sigmoid + 2 x sigmoid (1 - sigmoid) c (1 + 3 * 0.044715 x^2). relu, identity and
  // gpt-oss's clamped SwiGLU (whose clamps need comparisons) run as scalar loops.
  static void unit_backward(const moe::cpu::GemmProblem& p, const float* g, const float* u, const float* da, float* a,
                            float* dg, float* du, int64_t count) {
    const moe::Activation act = p.activation;
    if (act == moe::Activation::relu || act == moe::Activation::identity || act == moe::Activation::swiglu_clamped)
      return unit_backward_scalar(p, g, u, da, a, dg, du, count);
    const reg one = V::set1(1.0f);
    const auto step = [&](reg x, reg gv_u, reg d, float* ao, float* dgo, float* duo) {
      reg f, fd;  // act(x), act'(x)
      if (act == moe::Activation::gelu || act == moe::Activation::geglu) {
        const reg cdf = normal_cdf(x);
        const reg pdf = V::mul(V::set1(0.3989422804014327f), V::exp(V::mul(V::set1(-0.5f), V::mul(x, x))));
        f = V::mul(x, cdf);
        fd = V::fma(x, pdf, cdf);
      } else if (act == moe::Activation::gelu_tanh) {
        const reg x2 = V::mul(x, x);
        const reg sg = sigmoid(V::mul(V::set1(1.5957691216057308f), V::fma(V::set1(0.044715f), V::mul(x2, x), x)));
        f = V::mul(x, sg);
        const reg c = V::mul(V::set1(2.0f * 0.7978845608028654f), V::fma(V::set1(3.0f * 0.044715f), x2, one));
        fd = V::fma(V::mul(V::mul(x, sg), V::sub(one, sg)), c, sg);
      } else {  // silu, swiglu
        const reg sg = sigmoid(x);
        f = V::mul(x, sg);
        fd = V::mul(sg, V::fma(x, V::sub(one, sg), one));
      }
      if (p.gated) {
        V::store(ao, V::mul(f, gv_u));
        V::store(dgo, V::mul(d, V::mul(fd, gv_u)));
        V::store(duo, V::mul(d, f));
      } else {
        V::store(ao, f);
        V::store(dgo, V::mul(d, fd));
      }
    };
    int64_t i = 0;
    for (; i + W <= count; i += W)
      step(V::load(g + i), p.gated ? V::load(u + i) : one, V::load(da + i), a + i, dg + i, p.gated ? du + i : nullptr);
    if (i < count) {  // the tail through padded copies
      alignas(64) float tg[W] = {}, tu[W] = {}, td[W] = {}, ta[W], tdg[W], tdu[W];
      const int64_t rest = count - i;
      std::memcpy(tg, g + i, sizeof(float) * rest);
      if (p.gated) std::memcpy(tu, u + i, sizeof(float) * rest);
      std::memcpy(td, da + i, sizeof(float) * rest);
      step(V::load(tg), p.gated ? V::load(tu) : one, V::load(td), ta, tdg, tdu);
      std::memcpy(a + i, ta, sizeof(float) * rest);
      std::memcpy(dg + i, tdg, sizeof(float) * rest);
      if (p.gated) std::memcpy(du + i, tdu, sizeof(float) * rest);
    }
  }
  static void unit_backward_scalar(const moe::cpu::GemmProblem& p, const float* g, const float* u, const float* da,
                                   float* a, float* dg, float* du, int64_t count) {
    const auto sig = [](float z) { return 1.0f / (1.0f + std::exp(-z)); };
    for (int64_t i = 0; i < count; ++i) {
      const float x = g[i], d = da[i];
      if (p.activation == moe::Activation::swiglu_clamped) {  // the clamps pass gradient inside their range
        const float gc = std::min(x, p.limit), uc = std::max(std::min(u[i], p.limit), -p.limit);
        const float sg = sig(p.alpha * gc);
        a[i] = gc * sg * (uc + 1.0f);
        dg[i] = x <= p.limit ? d * (sg + p.alpha * gc * sg * (1.0f - sg)) * (uc + 1.0f) : 0.0f;
        du[i] = u[i] >= -p.limit && u[i] <= p.limit ? d * gc * sg : 0.0f;
        continue;
      }
      const float f = p.activation == moe::Activation::relu ? (x > 0 ? x : 0.0f) : x;
      const float fd = p.activation == moe::Activation::relu ? (x > 0 ? 1.0f : 0.0f) : 1.0f;
      if (p.gated) {
        a[i] = f * u[i];
        dg[i] = d * (fd * u[i]);
        du[i] = d * f;
      } else {
        a[i] = f;
        dg[i] = d * fd;
      }
    }
  }

  // transpose_block with V's transpose_tile, where V has one (W x W tiles; a partial block goes element by element).
  template <class T, class = void>
  struct HasTransposeTile : std::false_type {};
  template <class T>
  struct HasTransposeTile<T, std::void_t<decltype(&T::transpose_tile)>> : std::true_type {};
  static void transpose_block(const float* src, float* dst, int64_t rows) {
    if constexpr (HasTransposeTile<V>::value) {
      if (rows == NR) {
        for (int r0 = 0; r0 < NR; r0 += W)
          for (int c0 = 0; c0 < NR; c0 += W) V::transpose_tile(src + r0 * NR + c0, NR, dst + c0 * NR + r0, NR);
        return;
      }
    }
    for (int64_t c = 0; c < NR; ++c) {
      for (int64_t r = 0; r < rows; ++r) dst[c * NR + r] = src[r * NR + c];
      std::fill(dst + c * NR + rows, dst + c * NR + NR, 0.0f);
    }
  }
  static constexpr auto transpose_block_entry() { return HasTransposeTile<V>::value ? &transpose_block : nullptr; }

  // KernelTable::pack_a_transposed: A[m][kk] = src[kk * ld_src + cols[m]] written in pack_a's layout, W x W tiles
  // turned in registers where V has them (W rows of A whose columns are consecutive), the rest element by element.
  static void pack_a_transposed(const float* src, int64_t ld_src, int64_t k, const int32_t* cols, int64_t m_begin,
                                int64_t m_end, int64_t m_total, float* out) {
    const int64_t depth = packed_depth(k);
    // Where A[m][kk] goes: its block of MR rows, the chunk of W k, the row within the block's chunk.
    const auto at = [&](int64_t m, int64_t kk) {
      const int64_t blk = m / MR;
      return out + blk * MR * depth + kk / W * W * block_rows(m_total - blk * MR) + m % MR * W + kk % W;
    };
    const auto col = [&](int64_t m) { return cols ? int64_t{cols[m]} : m; };
    for (int64_t m0 = m_begin; m0 < m_end; m0 += W) {
      const int64_t mn = std::min<int64_t>(W, m_end - m0);
      int64_t full_k = 0;
      if constexpr (HasTransposeTile<V>::value) {
        if (mn == W && col(m0 + W - 1) - col(m0) == W - 1) {
          full_k = k / W * W;
          alignas(64) float tile[W * W];
          for (int64_t k0 = 0; k0 < full_k; k0 += W) {
            V::transpose_tile(src + k0 * ld_src + col(m0), ld_src, tile, W);
            for (int i = 0; i < W; ++i) V::store(at(m0 + i, k0), V::load(tile + i * W));
          }
        }
      }
      for (int64_t m = m0; m < m0 + mn; ++m)
        for (int64_t kk = full_k; kk < k; ++kk) *at(m, kk) = src[kk * ld_src + col(m)];
    }
  }

  // A tile's rows of A, gathered (by token) and packed per block of MR rows: k in chunks of W, each chunk the
  // block's rows of W floats one after another. The microkernel's broadcasts of one k step then read one float
  // per row from MR lines that stay in L1 for W steps, and rows move as whole vectors: packing is a copy, and
  // the first GEMM's epilogue writes the second one's A directly (GemmProblem::c_packed). The last block, with
  // m < MR rows, has chunks of m rows, not MR: a decode row padded to MR would put MR times its bytes through the
  // caches beside the weight stream (measured: 47 -> 64 GB/s for a 1-token forward); one row is the row itself.
  // out: packed_a_floats(rows, k) floats.
  static void pack_a(const moe::cpu::GemmProblem& p, int64_t row_begin, int64_t rows, float* out) {
    const int64_t blocks = (rows + MR - 1) / MR, depth = packed_depth(p.k);
    for (int64_t blk = 0; blk < blocks; ++blk) {
      float* dst = out + blk * MR * depth;
      const int64_t m_count = std::min<int64_t>(MR, rows - blk * MR);
      for (int64_t m = 0; m < m_count; ++m) {
        const float* src = p.a.row(row_begin + blk * MR + m);
        int64_t kc = 0;
        for (; kc + W <= p.k; kc += W) V::store(dst + kc * m_count + m * W, V::load(src + kc));
        if (kc < p.k) std::memcpy(dst + kc * m_count + m * W, src + kc, sizeof(float) * (p.k - kc));
      }
    }
  }

  // k padded to whole chunks of W (PanelGeometry::packed_depth).
  static constexpr int64_t packed_depth(int64_t k) { return (k + W - 1) / W * W; }

  // The rows of a packed block that starts `rows` rows before the end of its matrix's rows (MR but for the last).
  static constexpr int64_t block_rows(int64_t rows) { return rows < MR ? rows : MR; }

  // Rows are taken kChunkRows at a time, and within a chunk panel by panel: a panel's k-block of weights (the
  // B sub-panel, 32 KB for AVX-512) is read from memory once and reused from L1 by every row block of the
  // chunk, while the chunk's packed rows stream from L2. The weights of the item are one sequential stream
  // (panels lie back to back), and each sub-panel is prefetched while the one before it is in use: a slice per
  // full row block, up to a k step's worth of lines per k step, so the first row block of a k-block does not wait
  // on DRAM. With one line per step, an expert with a single block of rows (fine-grained experts at 128 tokens)
  // got half of each sub-panel prefetched and streamed at half the bandwidth (benchmarks/NOTES.md row 48).
  template <class P>
  static void gemm_tile(const moe::cpu::GemmProblem& p, const float* a, int64_t row_begin, int64_t row_end,
                        int64_t panel_begin, int64_t panel_end) {
    const char* panels = static_cast<const char*>(p.panels);
    constexpr int64_t kChunk = moe::cpu::kChunkRows;
    static_assert(kChunk % MR == 0, "chunks start on a micro block");
    alignas(64) float acc[kChunk * NR];
    const int64_t stream_bytes = panel_end * p.panel_bytes;
    // Cache lines of weights per k step (at least one): prefetching that many per step covers a sub-panel.
    const int lines = static_cast<int>(std::max<int64_t>(1, p.panel_bytes / std::max<int64_t>(1, p.k) / 64));
    for (int64_t c0 = row_begin; c0 < row_end; c0 += kChunk) {
      const int64_t rows = std::min(kChunk, row_end - c0), full_blocks = rows / MR;
      const float* ac = a + (c0 - row_begin) * packed_depth(p.k);
      for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
        const char* b = panels + panel * p.panel_bytes;
        // k-blocks outer, row blocks inner: the B sub-panel is reused from L1 by every row block of the chunk.
        for (int64_t k0 = 0; k0 < p.k; k0 += moe::cpu::kBlockDepth) {
          const int64_t depth = std::min<int64_t>(moe::cpu::kBlockDepth, p.k - k0);
          const int64_t next = panel * p.panel_bytes + P::offset(p, k0 + depth);
          const int64_t next_bytes = std::max<int64_t>(
              0, std::min(P::offset(p, std::min(p.k, k0 + depth)) - P::offset(p, k0), stream_bytes - next));
          const int64_t slice = full_blocks > 0 ? (next_bytes / 64 + full_blocks - 1) / full_blocks * 64 : 0;
          const P reader(p, b, k0);
          for (int64_t r = 0; r < rows; r += MR) {
            const float* ab = ac + r * packed_depth(p.k) + k0 * block_rows(rows - r);
            if (r + MR <= rows) {
              const int64_t from = std::min(next_bytes, r / MR * slice), to = std::min(next_bytes, from + slice);
              micro<MR>(ab, reader, k0, depth, acc + r * NR, k0 == 0, lines, panels + next + from, panels + next + to);
            } else {
              micro_upto<MR>(static_cast<int>(rows - r), ab, reader, k0, depth, acc + r * NR, k0 == 0);
            }
          }
        }
        store_rows(p, acc, c0, rows, panel);
      }
    }
  }

  // A plain product with one k-block (the backward's weight gradients: k is an expert's rows, 128 for 512 tokens on 8
  // experts, top-2): micro block by micro block, every panel of the block before the next, so that the block's output
  // rows are written whole, one after another. In gemm_tile's order a panel's 192-row chunk of outputs went to rows a
  // power of two apart (dModel floats), all into the same few L1 sets: dW1 / dW3 43.9-45.6 -> 38.5-39.8 ms at 512
  // tokens (benchmarks/NOTES.md row 87). The B panels (a few rows' data, half of L2 per item) come from L2. Past one
  // k-block (n > 256 rows) the two orders measured alike.
  static void short_product(const moe::cpu::GemmProblem& p, const float* a, int64_t row_begin, int64_t row_end,
                            int64_t panel_begin, int64_t panel_end) {
    const char* panels = static_cast<const char*>(p.panels);
    alignas(64) float acc[MR * NR];
    for (int64_t r = row_begin; r < row_end; r += MR) {
      const int64_t rows = std::min<int64_t>(MR, row_end - r);
      const float* ab = a + (r - row_begin) * packed_depth(p.k);
      for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
        micro_upto<MR>(static_cast<int>(rows), ab, PlainPanel<float>(p, panels + panel * p.panel_bytes, 0), 0, p.k, acc,
                       true);
        store_rows(p, acc, r, rows, panel);
      }
    }
  }

  // The epilogue of rows c0 .. c0 + rows of one panel from their accumulators acc[rows][NR], into the output rows
  // or the next GEMM's packed A.
  static void store_rows(const moe::cpu::GemmProblem& p, const float* acc, int64_t c0, int64_t rows, int64_t panel) {
    const int64_t out_cols = p.gated ? NR / 2 : NR;
    const int64_t col0 = panel * out_cols;
    const int64_t valid = std::min<int64_t>(out_cols, p.n - col0);
    if (!p.bias) {  // a plain product (no bias, identity, row output): the accumulators as they are
      for (int64_t i = 0; i < rows; ++i) {
        float* out = p.c.row(c0 + i) + col0;
        if (valid == NR)
          for (int v = 0; v < NV; ++v) V::store(out + v * W, V::load(acc + i * NR + v * W));
        else
          std::memcpy(out, acc + i * NR, sizeof(float) * valid);
      }
      return;
    }
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t row = c0 + i;
      if (p.pre.base) {
        float* pre = p.pre.row(row) + panel * NR;
        for (int v = 0; v < NV; ++v)
          V::store(pre + v * W, V::add(V::load(acc + i * NR + v * W), V::load(p.bias + panel * NR + v * W)));
      }
      if (p.c_packed) {  // the row's chunks of the next GEMM's packed A (col0 starts a chunk)
        const int64_t blk = row / MR, block = block_rows(p.c_rows - blk * MR);
        float* out = p.c_packed + blk * MR * packed_depth(p.n) + col0 * block + (row - blk * MR) * W;
        epilogue(p, acc + i * NR, p.bias + panel * NR, out, valid, block * W);
      } else {
        epilogue(p, acc + i * NR, p.bias + panel * NR, p.c.row(row) + col0, valid, W);
      }
    }
  }

  static void weighted_sum(const float* rows, int64_t stride, const float* weights, int count, int64_t n, float* out) {
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      reg s = V::zero();
      for (int j = 0; j < count; ++j) s = V::fma(V::set1(weights[j]), V::load(rows + j * stride + i), s);
      V::store(out + i, s);
    }
    for (; i < n; ++i) {
      float s = 0.0f;
      for (int j = 0; j < count; ++j) s = weights[j] * rows[j * stride + i] + s;
      out[i] = s;
    }
  }

  // Scans in chunks with a branch-free test (exponent bits all ones) that the compiler vectorises.
  static int64_t find_non_finite(const float* data, int64_t count) {
    constexpr int64_t chunk = 1024;
    for (int64_t c0 = 0; c0 < count; c0 += chunk) {
      const int64_t c1 = std::min(count, c0 + chunk);
      uint32_t bad = 0;
      for (int64_t i = c0; i < c1; ++i) {
        uint32_t bits;
        std::memcpy(&bits, data + i, sizeof bits);
        bad |= (bits & 0x7f800000u) == 0x7f800000u;
      }
      if (bad)
        for (int64_t i = c0; i < c1; ++i)
          if (!std::isfinite(data[i])) return i;
    }
    return -1;
  }

  static float fma_loop(int64_t iterations) {
    constexpr int C = moe::cpu::kFmaChains;
    reg acc[C];
    for (int c = 0; c < C; ++c) acc[c] = V::set1(0.001f * c);
    const reg a = V::set1(0.999999f), b = V::set1(1e-7f);
    for (int64_t i = 0; i < iterations; ++i)
      for (int c = 0; c < C; ++c) acc[c] = V::fma(acc[c], a, b);
    alignas(64) float out[W];
    reg sum = acc[0];
    for (int c = 1; c < C; ++c) sum = V::add(sum, acc[c]);
    V::store(out, sum);
    return out[0];
  }

  // Eight independent sums: enough loads in flight that the memory system, not the adds, sets the pace.
  static float read_sum(const float* data, int64_t count) {
    constexpr int U = 8;
    reg s[U];
    for (int u = 0; u < U; ++u) s[u] = V::zero();
    int64_t i = 0;
    for (; i + U * W <= count; i += U * W)
      for (int u = 0; u < U; ++u) s[u] = V::add(s[u], V::load(data + i + u * W));
    for (int u = 1; u < U; ++u) s[0] = V::add(s[0], s[u]);
    alignas(64) float out[W];
    V::store(out, s[0]);
    float total = 0;
    for (int l = 0; l < W; ++l) total += out[l];
    for (; i < count; ++i) total += data[i];
    return total;
  }

  static const moe::cpu::KernelTable* table(moe::Isa isa) {
    using moe::WeightDtype;
    // weights: one GEMM per WeightDtype, each through its panel reader.
    static constexpr std::array<moe::cpu::WeightKernels, moe::kWeightDtypes> weights =
        moe::keyed_table<moe::cpu::WeightKernels>({
            {WeightDtype::float32, &gemm_tile<PlainPanel<float>>},
            {WeightDtype::bfloat16, &gemm_tile<Bf16Panel>},
            {WeightDtype::float16, &gemm_tile<PlainPanel<moe::cpu::F16>>},
            {WeightDtype::int8, &gemm_tile<QuantPanel<8>>},
            {WeightDtype::int4, &gemm_tile<QuantPanel<4>>},
            {WeightDtype::q4_k, &gemm_tile<AffinePanel<0, 0>>},
            {WeightDtype::q5_k, &gemm_tile<AffinePanel<1, 0>>},
            {WeightDtype::q6_k, &gemm_tile<AffinePanel<2, 32>>},
        });
    static const moe::cpu::KernelTable t{isa,
                                         {W, NV, MR},
                                         &pack_a,
                                         weights,
                                         &weighted_sum,
                                         &unit_backward,
                                         transpose_block_entry(),
                                         &pack_a_transposed,
                                         &short_product,
                                         &find_non_finite,
                                         &fma_loop,
                                         &read_sum};
    return &t;
  }
};
