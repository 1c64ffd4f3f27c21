// The neon_dotprod kernels (AArch64 with ARMv8.2's dot product, sdot): kernel_impl.h, with integer dot products for
// the K-quants (kernel_kquant_neon.h, in kernel_kquant_rows.h) and int8 / int4 (kernel_quant_neon.h, in
// kernel_quant_rows.h), compiled with this ISA's flags (see CMakeLists.txt).
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
#include "kernel_quant_neon.h"
#include "kernel_quant_rows.h"
}  // namespace

const KernelTable* kernels_neon_dotprod() {
  static const KernelTable t = [] {
    KernelTable x = *KQuantByRows<KQuantNeon>::table(Isa::neon_dotprod);
    x.replace({WeightDtype::int8, &QuantByRows<QuantNeon<8>>::gemm});
    x.replace({WeightDtype::int4, &QuantByRows<QuantNeon<4>>::gemm});
    return x;
  }();
  return &t;
}

}  // namespace moe::cpu
