// The neon_dotprod kernels (AArch64 with ARMv8.2's dot product, sdot): kernel_impl.h, with the K-quants' integer dot
// products of kernel_kquant_neon.h (in kernel_kquant_rows.h's loop), compiled with this ISA's flags (see
// CMakeLists.txt).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../core/weight_formats.h"
#include "kernel_table.h"
#include "simd_neon.h"

namespace moe::cpu {
namespace {
#include "kernel_impl.h"
// (after the generic kernels, which the K-quant ones reuse)
#include "kernel_kquant_neon.h"
#include "kernel_kquant_rows.h"
}  // namespace

const KernelTable* kernels_neon_dotprod() { return KQuantByRows<KQuantNeon>::table(Isa::neon_dotprod); }

}  // namespace moe::cpu
