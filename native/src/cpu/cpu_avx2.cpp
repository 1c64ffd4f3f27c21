// The avx2 kernels: kernel_impl.h compiled with this ISA's flags (see CMakeLists.txt), with the K-quants' integer
// dot products of kernel_kquant_avx2.h (in kernel_kquant_rows.h's loop).
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
// (after the generic kernels, which the K-quant ones reuse)
#include "kernel_kquant_avx2.h"
#include "kernel_kquant_rows.h"
}  // namespace

const KernelTable* kernels_avx2() { return KQuantByRows<KQuantAvx2>::table(Isa::avx2); }

}  // namespace moe::cpu
