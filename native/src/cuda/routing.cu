// Router logits and the fused routing rules, one warp per token.
#include <cmath>

#include "cuda_check.cuh"
#include "kernels.cuh"

namespace moe::cuda {

namespace {

constexpr int kWarp = 32;

// One warp per (token, expert) dot product; 8 warps per block.
__global__ void router_logits_kernel(const float* x, const float* router, float* logits, int64_t tokens, int64_t d,
                                     int64_t num_experts) {
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (warp >= tokens * num_experts) return;
  const int64_t t = warp / num_experts, e = warp % num_experts;
  float s = 0.f;
  for (int64_t i = lane; i < d; i += kWarp) s = fmaf(x[t * d + i], router[e * d + i], s);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) logits[warp] = s;
}

// A logit as a ranking key: NaN ranks below everything (it can come from an overflowed router product through
// the C++ API; the Node binding refuses non-finite inputs and outputs).
__device__ float rank_key(float v) { return isnan(v) ? -INFINITY : v; }

// "No candidate yet" in the scans below: any real expert (even at -inf) beats it, so a lane or warp that has
// one always returns a valid index; the callers guarantee a candidate exists (k <= eligible experts).
constexpr int kNone = 0x7fffffff;

// Warp argmax of (value, index) with ties to the lower index; returns the winner in every lane.
__device__ void warp_argmax(float& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) {
      v = ov;
      i = oi;
    }
  }
}

// Softmax over all experts, top-k by logit (ties to the lower index), renormalised over the k (Mixtral / HF)
// or the raw probabilities (Switch). E may exceed 32: each lane scans experts lane, lane + 32, ...
__global__ void softmax_top_k_kernel(const float* logits, int64_t tokens, int n, int k, bool normalize,
                                     int32_t* experts, float* weights) {
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (t >= tokens) return;
  const float* l = logits + t * n;
  float m = -INFINITY;
  for (int e = lane; e < n; e += kWarp) m = fmaxf(m, rank_key(l[e]));
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float total = 0.f;
  for (int e = lane; e < n; e += kWarp) total += __expf(l[e] - m);
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
  float selected = 0.f;
  for (int j = 0; j < k; ++j) {
    float best = -INFINITY;
    int bi = kNone;
    for (int e = lane; e < n; e += kWarp) {
      bool taken = false;
      for (int q = 0; q < j; ++q) taken |= experts[t * k + q] == e;
      const float v = rank_key(l[e]);
      if (!taken && (bi == kNone || v > best || (v == best && e < bi))) {
        best = v;
        bi = e;
      }
    }
    warp_argmax(best, bi);
    if (lane == 0) experts[t * k + j] = bi;
    __syncwarp();
    selected += __expf(best - m);
  }
  const float denominator = normalize ? selected : total;
  for (int j = lane; j < k; j += kWarp) weights[t * k + j] = __expf(l[experts[t * k + j]] - m) / denominator;
}

// DeepSeek-V3 (inference/model.py Gate): s = sigmoid(l); choice on s + bias within the top_k_groups groups
// with the largest sum of their top-2 biased scores; weights = s of the chosen, normalised, * route_scale.
__global__ void sigmoid_bias_top_k_kernel(const float* logits, const float* bias, int64_t tokens, int n, int k,
                                          int groups, int keep_groups, float route_scale, int32_t* experts,
                                          float* weights) {
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (t >= tokens) return;
  const float* l = logits + t * n;
  const int size = n / groups;
  // groups kept: bit g of `kept` (groups <= 32 enforced by the caller)
  unsigned kept = 0;
  for (int round = 0; round < keep_groups; ++round) {
    float best = -INFINITY;
    int bg = kNone;
    for (int g = lane; g < groups; g += kWarp) {
      if (kept & (1u << g)) continue;
      float a = -INFINITY, b = -INFINITY;  // top-2 biased scores of the group
      for (int e = g * size; e < (g + 1) * size; ++e) {
        const float v = rank_key(1.f / (1.f + __expf(-l[e])) + (bias ? bias[e] : 0.f));
        if (v > a) {
          b = a;
          a = v;
        } else if (v > b)
          b = v;
      }
      const float score = rank_key(size >= 2 ? a + b : a);
      if (bg == kNone || score > best || (score == best && g < bg)) {
        best = score;
        bg = g;
      }
    }
    warp_argmax(best, bg);
    kept |= 1u << bg;
  }
  float sum = 0.f;
  for (int j = 0; j < k; ++j) {
    float best = -INFINITY;
    int bi = kNone;
    for (int e = lane; e < n; e += kWarp) {
      if (!(kept & (1u << (e / size)))) continue;
      bool taken = false;
      for (int q = 0; q < j; ++q) taken |= experts[t * k + q] == e;
      const float v = rank_key(1.f / (1.f + __expf(-l[e])) + (bias ? bias[e] : 0.f));
      if (!taken && (bi == kNone || v > best || (v == best && e < bi))) {
        best = v;
        bi = e;
      }
    }
    warp_argmax(best, bi);
    if (lane == 0) experts[t * k + j] = bi;
    __syncwarp();
    sum += 1.f / (1.f + __expf(-l[bi]));
  }
  for (int j = lane; j < k; j += kWarp) {
    const float s = 1.f / (1.f + __expf(-l[experts[t * k + j]]));
    weights[t * k + j] = s / sum * route_scale;
  }
}

}  // namespace

void launch_router_logits(const float* x, const float* router, float* logits, int64_t tokens, int64_t d_model,
                          int64_t num_experts, cudaStream_t stream) {
  const int64_t warps = tokens * num_experts;
  if (warps == 0) return;  // an empty grid is a launch error
  router_logits_kernel<<<unsigned((warps + 7) / 8), 256, 0, stream>>>(x, router, logits, tokens, d_model, num_experts);
  MOE_CUDA_LAUNCHED("router_logits");
}

void launch_softmax_top_k(const float* logits, int64_t tokens, int num_experts, int k, bool normalize, int32_t* experts,
                          float* weights, cudaStream_t stream) {
  if (tokens == 0) return;
  softmax_top_k_kernel<<<unsigned((tokens + 7) / 8), 256, 0, stream>>>(logits, tokens, num_experts, k, normalize,
                                                                       experts, weights);
  MOE_CUDA_LAUNCHED("softmax_top_k");
}

void launch_sigmoid_bias_top_k(const float* logits, const float* bias, int64_t tokens, int num_experts, int k,
                               int num_groups, int top_k_groups, float route_scale, int32_t* experts, float* weights,
                               cudaStream_t stream) {
  if (tokens == 0) return;
  sigmoid_bias_top_k_kernel<<<unsigned((tokens + 7) / 8), 256, 0, stream>>>(
      logits, bias, tokens, num_experts, k, num_groups, top_k_groups, route_scale, experts, weights);
  MOE_CUDA_LAUNCHED("sigmoid_bias_top_k");
}

}  // namespace moe::cuda
