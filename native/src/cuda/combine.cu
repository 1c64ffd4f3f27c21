// The weighted combine: one block per token, each output element sums its k slots in slot order.
#include "cuda_check.cuh"
#include "kernels.cuh"

namespace moe::cuda {

namespace {
__global__ void combine_kernel(const float* slot_out, const float* weights, const int32_t* experts, int k,
                               int64_t d, float* out) {
  const int64_t t = blockIdx.x;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float s = 0.f;
    for (int j = 0; j < k; ++j) {
      const int64_t slot = t * k + j;
      if (experts[slot] >= 0) s = fmaf(weights[slot], slot_out[slot * d + i], s);
    }
    out[t * d + i] = s;
  }
}
}  // namespace

void launch_combine(const float* slot_out, const float* weights, const int32_t* experts, int64_t tokens, int k,
                    int64_t d_model, float* out, cudaStream_t stream) {
  combine_kernel<<<unsigned(tokens), 256, 0, stream>>>(slot_out, weights, experts, k, d_model, out);
  MOE_CUDA_LAUNCHED("combine");
}

}  // namespace moe::cuda
