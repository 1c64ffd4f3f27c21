// The weighted combine: one block per token, each output element sums its k slots in slot order.
#include "cuda_check.cuh"
#include "kernels.cuh"

namespace moe::cuda {

namespace {
// A slot counts when its expert is in [0, num_experts): the same rule as dispatch, which sorts any other id
// (-1, or one out of range through the C++ API) after every expert and computes nothing for it.
__global__ void combine_kernel(const float* slot_out, const float* weights, const int32_t* experts, int k,
                               int num_experts, int64_t d, float* out) {
  const int64_t t = blockIdx.x;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float s = 0.f;
    for (int j = 0; j < k; ++j) {
      const int64_t slot = t * k + j;
      if (experts[slot] >= 0 && experts[slot] < num_experts) s = fmaf(weights[slot], slot_out[slot * d + i], s);
    }
    out[t * d + i] = s;
  }
}
}  // namespace

void launch_combine(const float* slot_out, const float* weights, const int32_t* experts, int64_t tokens, int k,
                    int num_experts, int64_t d_model, float* out, cudaStream_t stream) {
  if (tokens == 0) return;
  combine_kernel<<<unsigned(tokens), 256, 0, stream>>>(slot_out, weights, experts, k, num_experts, d_model, out);
  MOE_CUDA_LAUNCHED("combine");
}

}  // namespace moe::cuda
