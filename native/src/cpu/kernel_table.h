// The per-ISA kernel table: one translation unit per ISA fills one of these (cpu_<isa>.cpp), and the core
// picks one at load (core/isa.cpp). Everything above this table is ISA-independent.
#pragma once
#include <cstdint>

#include "moe/moe.h"

namespace moe::cpu {

// Panel layout of a packed weight matrix (see core/packing.h): panels of `nr = lanes * vectors` columns,
// stored k-major. A gated matrix interleaves per panel nr/2 gate (W1) columns then nr/2 up (W3) columns.
struct PanelGeometry {
  int lanes;       // floats per vector register
  int vectors;     // vector registers per panel row (even, so a gated panel splits in two)
  int micro_rows;  // rows of A per microkernel call
  int nr() const { return lanes * vectors; }
  // Packed A (pack_a): per block of micro_rows rows, k in chunks of `lanes`, each chunk the block's rows of
  // `lanes` floats one after another; k is padded to whole chunks.
  int64_t packed_depth(int64_t k) const { return (k + lanes - 1) / lanes * lanes; }
  int64_t packed_a_floats(int64_t rows, int64_t k) const {
    return (rows + micro_rows - 1) / micro_rows * micro_rows * packed_depth(k);
  }
};

// Rows of a GEMM operand addressed indirectly: row i lives at base + (index ? index[i] / divisor : i) * stride.
// This is how rows are gathered while loading (x by token) and scattered while storing (outputs by slot).
template <class T>
struct RowMap {
  T* base = nullptr;
  int64_t stride = 0;
  const int32_t* index = nullptr;
  int32_t divisor = 1;
  T* row(int64_t i) const { return base + (index ? index[i] / divisor : i) * stride; }
};

struct GemmProblem {
  const void* panels = nullptr;  // packed B for one expert, panel_count panels of k x nr weights in weight_dtype
  WeightDtype weight_dtype = WeightDtype::float32;
  int64_t panel_bytes = 0;  // bytes per panel (core/weight_formats.h has each dtype's layout)
  int64_t group = 0;        // int8 / int4: inputs per scale (divides k)
  // Packed bias: panel_count * nr floats (zeros where absent). Null: a plain product (identity activation, not
  // gated, no pre, row output), whose accumulators are stored as they are (the backward's GEMMs of data).
  const float* bias = nullptr;
  int64_t k = 0;  // reduction length
  int64_t n = 0;  // valid output columns
  Activation activation = Activation::identity;
  float alpha = 1.0f, limit = 0.0f;  // swiglu_clamped's parameters
  bool gated = false;
  RowMap<const float> a;  // input rows
  RowMap<float> c;        // output rows (written, never read)
  // When set, also the raw outputs (bias added, before the activation) of every panel column, nr per panel: the
  // pre-activations a training forward keeps for the backward (core/backward.cpp).
  RowMap<float> pre;
  // When set, the output is written in pack_a's layout instead, as the A of a next GEMM with k = n, for c_rows
  // rows (see PanelGeometry::packed_a_floats).
  float* c_packed = nullptr;
  int64_t c_rows = 0;
  // Changes whenever the packed A's contents may change (0: unknown). A kernel that derives data from A (the
  // dot-product kernels convert it to bfloat16 or int8) may reuse that data across the items of one version.
  uint64_t a_version = 0;
};

// The stored type of float16 weights (its own type, so that the GEMM's plain-row reader picks its load).
struct F16 {
  uint16_t bits;
};

// The kernels of one weight dtype on one ISA (ggml's per-type traits are the model): a new dtype is one more
// entry of KernelTable::weights per ISA, plus its packing in core/weight_formats.cpp.
struct WeightKernels {
  WeightDtype key;
  // Computes output rows [row_begin, row_end) for panels [panel_begin, panel_end) from those rows packed by
  // pack_a (any number of rows: pack_a's tiles of kTileRows, back to back), epilogue (bias, activation,
  // gating) included. The reduction order is fixed, independent of the split.
  void (*gemm_tile)(const GemmProblem& problem, const float* packed_a, int64_t row_begin, int64_t row_end,
                    int64_t panel_begin, int64_t panel_end);
};

struct KernelTable {
  Isa isa;
  PanelGeometry geometry;
  // Gathers rows [row_begin, row_begin + rows) of the problem's A (at most kTileRows) into the microkernel's
  // layout: packed_a_floats(rows, k) floats at out.
  void (*pack_a)(const GemmProblem& problem, int64_t row_begin, int64_t rows, float* out);
  // Per weight dtype, keyed (keyed_table: every dtype once).
  std::array<WeightKernels, kWeightDtypes> weights;
  const WeightKernels& weight_kernels(WeightDtype dtype) const { return weights[static_cast<int>(dtype)]; }
  // An ISA's own GEMM for one dtype in place of the generic one (kernel_dot_avx512.h).
  void replace(const WeightKernels& kernels) { weights[static_cast<int>(kernels.key)] = kernels; }
  // out[0..n) = sum over j < count of weights[j] * rows[j * stride + 0..n), in order j = 0, 1, ...
  void (*weighted_sum)(const float* rows, int64_t stride, const float* weights, int count, int64_t n, float* out);
  // The hidden unit's backward over `count` contiguous units (activation, gating, alpha and limit from p): the
  // unit a as the forward computes it, dg = da * d(a)/dg, du = da * d(a)/du (du unused unless gated).
  void (*unit_backward)(const GemmProblem& p, const float* g, const float* u, const float* da, float* a, float* dg,
                        float* du, int64_t count);
  // Optional (null: core/backward.cpp's portable loop): one nr x nr block of a packed panel turned, dst row c = src
  // column c (rows nr floats apart), src rows past `rows` read as zeros.
  void (*transpose_block)(const float* src, float* dst, int64_t rows);
  // Rows [m_begin, m_end) of A [m_total, k] into pack_a's layout at out (the whole matrix's packed_a_floats), where
  // A[m][kk] = src[kk * ld_src + cols[m]] (cols null: m): a GEMM whose A is the transpose of row data.
  void (*pack_a_transposed)(const float* src, int64_t ld_src, int64_t k, const int32_t* cols, int64_t m_begin,
                            int64_t m_end, int64_t m_total, float* out);
  // The float32 GEMM of a plain product (problem.bias null) with k <= kBlockDepth, as WeightKernels::gemm_tile
  // computes it but micro block by micro block, each block's output rows written whole (the backward's weight
  // gradients). Its own entry rather than a branch in gemm_tile: the branch there cost the forward's GEMMs ~10%.
  void (*gemm_short)(const GemmProblem& problem, const float* packed_a, int64_t row_begin, int64_t row_end,
                     int64_t panel_begin, int64_t panel_end);
  int64_t (*find_non_finite)(const float* data, int64_t count);
  // Machine ceilings for the benchmarks: `iterations` rounds of kFmaChains independent vector FMAs (returns a
  // value so the work is kept), and a streaming read of `count` floats.
  float (*fma_loop)(int64_t iterations);
  float (*read_sum)(const float* data, int64_t count);
};

constexpr int kFmaChains = 12;  // independent accumulators: enough to cover FMA latency x throughput

constexpr int64_t kTileRows = 48;     // rows of A per packing item (a multiple of every micro_rows)
constexpr int64_t kChunkRows = 192;   // rows per pass over a panel in gemm_tile (a multiple of every micro_rows)
constexpr int64_t kBlockDepth = 256;  // k-block: a B sub-panel of kBlockDepth x nr floats stays in L1

const KernelTable* kernels_scalar();
const KernelTable* kernels_avx2();          // null where not compiled
const KernelTable* kernels_avx512();        // null where not compiled
const KernelTable* kernels_neon();          // null where not compiled
const KernelTable* kernels_avx512_bf16();   // null where not compiled
const KernelTable* kernels_neon_dotprod();  // null where not compiled

}  // namespace moe::cpu
