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

}  // namespace moe
