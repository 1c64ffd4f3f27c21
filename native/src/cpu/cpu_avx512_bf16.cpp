// The avx512_bf16 kernels: AVX-512 (kernel_impl.h) with the dot-product GEMMs of AVX512-BF16 and AVX512-VNNI for
// bfloat16, int8 and int4 weights (kernel_dot_avx512.h), compiled with this ISA's flags (see CMakeLists.txt).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/weight_formats.h"
#include "kernel_table.h"
#include "simd_avx512.h"

namespace moe::cpu {
namespace {
#include "kernel_impl.h"
// (after the generic kernels, which the dot-product ones reuse)
#include "kernel_dot_avx512.h"
}  // namespace

const KernelTable* kernels_avx512_bf16() { return DotKernels::table(); }

}  // namespace moe::cpu
