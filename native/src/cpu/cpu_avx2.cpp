// The avx2 kernels: kernel_impl.h compiled with this ISA's flags (see CMakeLists.txt), with integer dot products for
// the K-quants (kernel_kquant_avx2.h, in kernel_kquant_rows.h's loop), int8 and int4 (kernel_quant_avx2.h, in
// kernel_quant_rows.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../core/weight_formats.h"
#include "kernel_table.h"
#include "simd_avx2.h"

namespace moe::cpu {
namespace {
#include "kernel_impl.h"
// (after the generic kernels, which the integer ones reuse)
#include "kernel_kquant_avx2.h"
#include "kernel_kquant_rows.h"
#include "kernel_quant_avx2.h"
#include "kernel_quant_rows.h"
}  // namespace

const KernelTable* kernels_avx2() {
  static const KernelTable t = [] {
    KernelTable x = *KQuantByRows<KQuantAvx2>::table(Isa::avx2);
    x.replace({WeightDtype::int8, &QuantByRows<QuantAvx2<8>>::gemm});
    x.replace({WeightDtype::int4, &QuantByRows<QuantAvx2<4>>::gemm});
    return x;
  }();
  return &t;
}

}  // namespace moe::cpu
