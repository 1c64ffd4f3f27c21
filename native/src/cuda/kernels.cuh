// Launchers of the CUDA kernels (one .cu each), called by cuda_layer.cu. All take a stream and check the launch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "moe/moe.h"

namespace moe::cuda {

// logits[T, E] = x[T, d] router[E, d]^T, fp32 (the router stays in float32, Switch Transformer).
void launch_router_logits(const float* x, const float* router, float* logits, int64_t tokens, int64_t d_model,
                          int64_t num_experts, cudaStream_t stream);

// One warp per token: softmax top-k (ties to the lower index; renormalised when normalize), or DeepSeek-V3
// sigmoid scores with the bias for selection only, group-limited, normalised, scaled by route_scale.
void launch_softmax_top_k(const float* logits, int64_t tokens, int num_experts, int k, bool normalize, int32_t* experts,
                          float* weights, cudaStream_t stream);
void launch_sigmoid_bias_top_k(const float* logits, const float* bias, int64_t tokens, int num_experts, int k,
                               int num_groups, int top_k_groups, float route_scale, int32_t* experts, float* weights,
                               cudaStream_t stream);

// Dropless dispatch on the device: counts per expert, offsets (exclusive scan) and the stable permutation of
// slots by expert (a stable radix sort of (expert, slot)); dropped slots (-1) sort last and are not counted.
struct DispatchScratch;
void dispatch_on_device(const int32_t* experts, int64_t slots, int num_experts, int32_t* counts, int32_t* offsets,
                        int32_t* order, DispatchScratch& scratch, cudaStream_t stream);

// A row tile of one expert segment: rows [row0, row0 + 64) of the segment starting at `offset` in `order`.
struct RowTile {
  int32_t expert, offset, row0, rows;
};

struct GemmArgs {
  const RowTile* tiles;  // grid.x tiles
  const int32_t* order;  // slot per segment position
  int slots_per_token;   // k: token = slot / k
  // A: gathered rows of x (fp32, by token) or the hidden buffer (bf16, by segment position)
  const float* x;
  const __nv_bfloat16* hidden_in;
  int64_t k_dim;  // reduction length
  // B: W [E, n, k_dim] bf16 (and W3 when gated), biases fp32 [E, n] or null
  const __nv_bfloat16* w;
  const __nv_bfloat16* w_up;
  const float* bias;
  const float* bias_up;
  int64_t n;  // output columns
  Activation activation;
  float alpha, limit;  // swiglu_clamped's
  // outputs: hidden (bf16, by segment position) for the first GEMM, slot rows (fp32, scattered) for the second
  __nv_bfloat16* hidden_out;
  float* slot_out;
};

// Tensor-core (WMMA bf16, fp32 accumulate) grouped GEMM over expert segments; first: act(x W1^T)(* x W3^T) ->
// hidden; second: hidden W2^T -> slot rows.
void launch_grouped_gemm_up(const GemmArgs& args, int tiles, cudaStream_t stream);
void launch_grouped_gemm_down(const GemmArgs& args, int tiles, cudaStream_t stream);

// out[t] = sum over j in slot order of weights[t*k+j] * slot_out[t*k+j] (deterministic, no atomics).
void launch_combine(const float* slot_out, const float* weights, const int32_t* experts, int64_t tokens, int k,
                    int num_experts, int64_t d_model, float* out, cudaStream_t stream);

}  // namespace moe::cuda
