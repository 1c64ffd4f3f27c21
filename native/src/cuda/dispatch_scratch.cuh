#pragma once
#include <cstdint>

#include "cuda_check.cuh"

namespace moe::cuda {

// Device scratch of dispatch_on_device, reused across calls.
struct DispatchScratch {
  DeviceBuffer<int32_t> keys, values, sorted_keys;
  DeviceBuffer<unsigned char> temp;
};

}  // namespace moe::cuda
