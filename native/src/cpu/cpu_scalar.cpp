// The scalar kernels: kernel_impl.h compiled with this ISA's flags (see CMakeLists.txt).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../core/weight_formats.h"
#include "kernel_table.h"
#include "simd_scalar.h"

namespace moe::cpu {
namespace {
#include "kernel_impl.h"
}  // namespace

const KernelTable* kernels_scalar() { return KernelImpl<SimdScalar>::table(Isa::scalar); }

}  // namespace moe::cpu
