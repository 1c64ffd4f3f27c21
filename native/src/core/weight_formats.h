// The ISA-independent half of a weight dtype (the other half, its GEMM per ISA, is cpu::WeightKernels): how many
// bytes its panels take and how a weight matrix's rows are written into them. Panels keep the geometry of the
// active ISA (nr columns, each an output row of the [out, in] matrix); a dtype decides how the k weights of each
// column are laid out, for the microkernels of every ISA at once:
//   float32, float16: k-major rows of nr weights.
//   bfloat16: k in pairs: per pair, nr 32-bit words, each the two weights (even k in the low half) of one column,
//     the operand layout of vdpbf16ps; k is padded to even with zeros.
//   int8, int4: per group of g inputs (padded to a multiple of 8 with zero codes), nr float16 scales, then the
//     codes: int8 in quads of k (per quad, nr 32-bit words of four codes, each stored as q + 128, the unsigned
//     operand of vpdpbusd); int4 in octets of k (per octet, nr 32-bit words, byte b holding k = b in its low
//     nibble and k = 4 + b in its high one).
#pragma once
#include <cstddef>
#include <cstdint>

#include "moe/moe.h"

namespace moe {

// One column of a panel (one output row of the matrix): float values, or quantized codes and scales as
// QuantizedSource describes them; all null for a padding column (zeros).
struct ColumnSource {
  const float* values = nullptr;
  const uint8_t* codes = nullptr;
  const uint16_t* scales = nullptr;
};

struct WeightFormat {
  WeightDtype key;
  const char* name;
  int bits;  // per stored weight, scales aside
  // Bytes of one panel of k rows of nr weights, in groups of g (quantized dtypes; g divides k).
  size_t (*panel_bytes)(int64_t k, int64_t g, int nr);
  // Writes column `slot` of a panel.
  void (*pack_column)(const ColumnSource& src, int64_t k, int64_t g, int nr, int slot, void* panel);
  // Reads column `slot` of a panel back as the k float32 weights the kernels compute with (16-bit values widened,
  // codes times their scale): pack_column's inverse on what it stored.
  void (*unpack_column)(const void* panel, int64_t k, int64_t g, int nr, int slot, float* out);
};

const WeightFormat& weight_format(WeightDtype dtype);

// Inputs per group stored in a quantized panel: g rounded up to a whole number of octets.
inline int64_t padded_group(int64_t g) { return (g + 7) / 8 * 8; }

// A K-quant panel (q4_k, q5_k, q6_k), super-block by super-block of 256 inputs, as compact as GGUF's own blocks:
// a header of nr float16 d, nr float16 dmin (not q6_k), per sub-block a row of nr 8-bit scales (q6_k signed), per
// sub-block a row of nr 8-bit mins (not q6_k), then per sub-block (g inputs) its codes' low four bits as int4's
// octets of nibbles and, for q5_k and q6_k, a plane of their high bits: nr 32-bit words, one per column, whose byte
// b holds the high bit(s) of the sub-block's inputs 4 qd + b, quad qd's at bit qd (q5_k: 8 quads) or bits 2 qd and
// 2 qd + 1 (q6_k: 4 quads). A code is u (q4_k, q5_k) or q + 32 (q6_k); a weight is (d sc) (code - offset) - dmin m,
// the two products rounded to float32 as ggml forms them. The plane's bytes line up with a quad's code words (byte
// 4 c + b: column c, input b), so a vector of them gives each quad's high bits as one byte mask (vptestmb) or, per
// column, as a shifted word; the panel takes 0.578 / 0.703 / 0.820 bytes a weight, GGUF's own 0.5625 / 0.6875 /
// 0.8203 plus the float16 d and dmin kept per column.
struct KPanel {
  int64_t nr, g, subs, high, offset;  // high: bits of each code above its nibble
  bool has_min;
  constexpr int64_t dmin_at() const { return 2 * nr; }
  constexpr int64_t scale_at(int64_t j) const { return (has_min ? 4 : 2) * nr + j * nr; }
  constexpr int64_t min_at(int64_t j) const { return 4 * nr + (subs + j) * nr; }
  constexpr int64_t header() const { return nr * ((has_min ? 4 : 2) + subs * (has_min ? 2 : 1)); }
  constexpr int64_t nibbles() const { return g * nr / 2; }
  constexpr int64_t plane() const { return high ? 4 * nr : 0; }
  constexpr int64_t codes_at(int64_t j) const { return header() + j * (nibbles() + plane()); }
  constexpr int64_t plane_at(int64_t j) const { return codes_at(j) + nibbles(); }
  constexpr int64_t block() const { return header() + subs * (nibbles() + plane()); }
};
constexpr KPanel k_panel(WeightDtype dtype, int64_t nr) {
  const bool q6 = dtype == WeightDtype::q6_k;
  const int64_t g = q6 ? 16 : 32;
  return {nr, g, 256 / g, q6 ? 2 : dtype == WeightDtype::q5_k ? 1 : 0, q6 ? 32 : 0, !q6};
}
// The same, named as the integer kernels' templates name the K-quants: by the bits each code has above its nibble
// (0: q4_k, 1: q5_k, 2: q6_k).
constexpr KPanel k_panel_of_high(int high, int64_t nr) {
  return k_panel(high == 2 ? WeightDtype::q6_k : high == 1 ? WeightDtype::q5_k : WeightDtype::q4_k, nr);
}

}  // namespace moe
