// Picks the kernel table once at load: the best ISA this CPU and build support, or MOE_FORCE_ISA.
#pragma once
#include "../cpu/kernel_table.h"

namespace moe {
const cpu::KernelTable& kernels();
}
