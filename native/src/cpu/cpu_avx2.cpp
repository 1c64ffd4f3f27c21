// The avx2 kernels: kernel_impl.h compiled with this ISA's flags (see CMakeLists.txt).
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
}  // namespace

const KernelTable* kernels_avx2() { return KernelImpl<SimdAvx2>::table(Isa::avx2); }

}  // namespace moe::cpu
