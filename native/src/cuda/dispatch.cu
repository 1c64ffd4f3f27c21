// Dropless dispatch on the device (MegaBlocks): histogram, exclusive scan, and a stable radix sort of the
// slots by expert, so each expert's slots keep token order and every result is deterministic.
#include <algorithm>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include "cuda_check.cuh"
#include "dispatch_scratch.cuh"
#include "kernels.cuh"

namespace moe::cuda {

namespace {

__global__ void keys_and_counts(const int32_t* experts, int64_t slots, int num_experts, int32_t* keys, int32_t* values,
                                int32_t* counts) {
  const int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s >= slots) return;
  const int32_t e = experts[s];
  const bool routed = e >= 0 && e < num_experts;
  keys[s] = routed ? e : num_experts;  // dropped slots sort after every expert
  values[s] = static_cast<int32_t>(s);
  if (routed) atomicAdd(&counts[e], 1);  // integer counts: the order of the adds does not matter
}

int bits_for(int value) {
  int bits = 1;
  while ((1 << bits) <= value) ++bits;
  return bits;
}

}  // namespace

void dispatch_on_device(const int32_t* experts, int64_t slots, int num_experts, int32_t* counts, int32_t* offsets,
                        int32_t* order, DispatchScratch& s, cudaStream_t stream) {
  int32_t* keys = s.keys.reserve(slots);
  int32_t* values = s.values.reserve(slots);
  int32_t* sorted_keys = s.sorted_keys.reserve(slots);
  MOE_CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(int32_t) * (num_experts + 1), stream));
  if (slots == 0) {  // nothing to sort; offsets all zero (an empty grid would be a launch error)
    MOE_CUDA_CHECK(cudaMemsetAsync(offsets, 0, sizeof(int32_t) * (num_experts + 1), stream));
    return;
  }
  keys_and_counts<<<unsigned((slots + 255) / 256), 256, 0, stream>>>(experts, slots, num_experts, keys, values, counts);
  MOE_CUDA_LAUNCHED("keys_and_counts");
  const int end_bit = bits_for(num_experts);
  size_t sort_bytes = 0, scan_bytes = 0;
  MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, keys, sorted_keys, values, order,
                                                 static_cast<int>(slots), 0, end_bit, stream));
  MOE_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts, offsets, num_experts + 1, stream));
  void* temp = s.temp.reserve(std::max(sort_bytes, scan_bytes));
  MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, sort_bytes, keys, sorted_keys, values, order,
                                                 static_cast<int>(slots), 0, end_bit, stream));
  MOE_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp, scan_bytes, counts, offsets, num_experts + 1, stream));
}

}  // namespace moe::cuda
