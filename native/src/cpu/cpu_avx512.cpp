// The avx512 kernels (AVX512F and AVX512BW, without VNNI): kernel_impl.h, with the K-quants' integer dot products of
// kernel_dot_avx512.h (vpmaddubsw and vpmaddwd where VNNI's vpdpbusd is missing), compiled with this ISA's flags (see
// CMakeLists.txt).
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

const KernelTable* kernels_avx512() { return DotKernels::table(); }

}  // namespace moe::cpu
