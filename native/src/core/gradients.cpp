// The GEMM-shaped steps of router training, in float64 (the router's backward runs in float64 so that its
// gradients can be checked by finite differences): dL/dW for logits = x W^T, and dL/d(routing weight) per slot.
// Compiled with -ffp-contract=off (CMakeLists.txt): each product is rounded before it is added, exactly as the
// float64 TypeScript these replaced, so the results are bitwise the same on every ISA.
#include <algorithm>

#include "aligned_buffer.h"
#include "moe/moe.h"
#include "thread_pool.h"
#include "work_size.h"

namespace moe {

namespace {

// x float64, or float32 widened exactly as it is read (the layer's input needs no float64 copy).
template <class X>
void router_weight_gradient_of(const double* grad_logits, const X* x, int64_t tokens, int64_t num_experts,
                               int64_t d_model, double* grad_router) {
  std::fill(grad_router, grad_router + num_experts * d_model, 0.0);
  const bool small = 2.0 * tokens * num_experts * d_model < kPoolMinFlops;
  const ThreadLimit limit(small ? 1 : ThreadLimit::current());
  // Items are (a group of experts, a block of columns): each x row is read once per group, and the group's output
  // block stays in L1. Every element still sums over tokens in token order, whatever the split or thread count.
  constexpr int64_t kExperts = 8, kColumns = 256;
  const int64_t groups = (num_experts + kExperts - 1) / kExperts, blocks = (d_model + kColumns - 1) / kColumns;
  ThreadPool::instance().run(groups * blocks, [&](int64_t item) {
    const int64_t e0 = item / blocks * kExperts, e1 = std::min(num_experts, e0 + kExperts);
    const int64_t i0 = item % blocks * kColumns, i1 = std::min(d_model, i0 + kColumns);
    for (int64_t t = 0; t < tokens; ++t) {
      const X* row = x + t * d_model;
      for (int64_t e = e0; e < e1; ++e) {
        const double g = grad_logits[t * num_experts + e];
        if (g == 0) continue;  // a token this expert's logit had no gradient from (most, for top-k rules)
        double* out = grad_router + e * d_model;
        for (int64_t i = i0; i < i1; ++i) out[i] += g * static_cast<double>(row[i]);
      }
    }
  });
}

}  // namespace

void router_weight_gradient(const double* grad_logits, const double* x, int64_t tokens, int64_t num_experts,
                            int64_t d_model, double* grad_router) {
  router_weight_gradient_of(grad_logits, x, tokens, num_experts, d_model, grad_router);
}
void router_weight_gradient(const double* grad_logits, const float* x, int64_t tokens, int64_t num_experts,
                            int64_t d_model, double* grad_router) {
  router_weight_gradient_of(grad_logits, x, tokens, num_experts, d_model, grad_router);
}

void router_input_gradient(const double* grad_logits, const float* router, int64_t tokens, int64_t num_experts,
                           int64_t d_model, float* dx) {
  const bool small = 2.0 * tokens * num_experts * d_model < kPoolMinFlops;
  const ThreadLimit limit(small ? 1 : ThreadLimit::current());
  ThreadPool::instance().run(tokens, [&](int64_t t) {
    // The token's row in float64, experts in order, then added to dx once (as the TypeScript loop it replaced did).
    thread_local AlignedBuffer<double> row_buffer;
    double* row = row_buffer.reserve(static_cast<size_t>(d_model));
    std::fill(row, row + d_model, 0.0);
    for (int64_t e = 0; e < num_experts; ++e) {
      const double g = grad_logits[t * num_experts + e];
      if (g == 0) continue;
      const float* w = router + e * d_model;
      for (int64_t i = 0; i < d_model; ++i) row[i] += g * static_cast<double>(w[i]);
    }
    float* out = dx + t * d_model;
    for (int64_t i = 0; i < d_model; ++i) out[i] = static_cast<float>(static_cast<double>(out[i]) + row[i]);
  });
}

void slot_weight_gradients(const float* grad_output, const float* slot_out, int64_t tokens, int k, int64_t d_model,
                           double* grad_weights) {
  const int64_t slots = tokens * k;
  const bool small = 2.0 * slots * d_model < kPoolMinFlops;
  const ThreadLimit limit(small ? 1 : ThreadLimit::current());
  ThreadPool::instance().run(slots, [&](int64_t s) {
    const float* g = grad_output + (s / k) * d_model;
    const float* y = slot_out + s * d_model;
    double dot = 0;  // in order: the float32 products are exact in float64, the sums are not
    for (int64_t i = 0; i < d_model; ++i) dot += static_cast<double>(g[i]) * static_cast<double>(y[i]);
    grad_weights[s] = dot;
  });
}

void routing_weight_gradients(Layer& layer, const float* x, int64_t tokens, int k, const int32_t* experts,
                              const float* grad_output, double* grad_weights) {
  const int64_t d_model = layer.config().experts.d_model;
  AlignedBuffer<float> slot_out;
  float* rows = slot_out.reserve(static_cast<size_t>(tokens * k * d_model));
  layer.slot_outputs(x, tokens, k, experts, rows);
  slot_weight_gradients(grad_output, rows, tokens, k, d_model, grad_weights);
}

}  // namespace moe
