// The ISA-independent half of a weight dtype (the other half, its GEMM per ISA, is cpu::WeightKernels): how many
// bytes its panels take and how float32 weights are written into them. Panels keep the geometry of the active
// ISA (k-major rows of nr weights); a dtype decides how each weight (or block of weights) is stored.
#pragma once
#include <cstddef>
#include <cstdint>

#include "moe/moe.h"

namespace moe {

struct WeightFormat {
  WeightDtype dtype;
  const char* name;
  // Bytes of one panel of k rows of nr weights.
  size_t (*panel_bytes)(int64_t k, int nr);
  // Writes column `slot` of a panel from src[0 .. k) (zeros when src is null: a padding column).
  void (*pack_column)(const float* src, int64_t k, int nr, int slot, void* panel);
};

const WeightFormat& weight_format(WeightDtype dtype);

}  // namespace moe
