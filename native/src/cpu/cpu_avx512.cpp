// The avx512 kernels: kernel_impl.h compiled with this ISA's flags (see CMakeLists.txt).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../core/weight_formats.h"
#include "kernel_table.h"
#include "simd_avx512.h"

namespace moe::cpu {
namespace {
#include "kernel_impl.h"
}  // namespace

const KernelTable* kernels_avx512() { return KernelImpl<SimdAvx512>::table(Isa::avx512); }

}  // namespace moe::cpu
