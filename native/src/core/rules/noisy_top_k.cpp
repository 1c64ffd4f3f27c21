// Noisy top-k gating (Shazeer et al. 2017 eqs. 3-5; lib/gating/noisy-top-k.ts): H = x W_g^T + N(0, 1)
// (softplus(x W_noise^T) + eps) while training, G = softmax over the k kept values of H.
#include <algorithm>
#include <cmath>

#include "common.h"

namespace moe::rules {

namespace {
double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
}  // namespace

void route_noisy_top_k(const Options& o, const RouteInput& in, Gate& gate) {
  const int64_t n = in.num_experts, tokens = in.tokens, count = tokens * n;
  const int k = in.top_k;
  gate.training = in.training;
  gate.clean.assign(in.logits, in.logits + count);
  gate.noise_logits.assign(in.noise_logits, in.noise_logits + count);
  gate.noise.assign(static_cast<size_t>(count), 0.0);
  if (in.training) {
    Random random(in.seed);
    for (double& v : gate.noise) v = random.normal();
  }
  gate.noise_std.resize(static_cast<size_t>(count));
  gate.noisy.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    gate.noise_std[i] = softplus(in.noise_logits[i]) + o.noise_epsilon;
    gate.noisy[i] = in.logits[i] + gate.noise[i] * gate.noise_std[i];
  }
  gate.experts.assign(static_cast<size_t>(tokens * k), -1);
  gate.weights.assign(static_cast<size_t>(tokens * k), 0.0);
  gate.kth_noisy.resize(static_cast<size_t>(tokens));
  gate.kplus1_noisy.resize(static_cast<size_t>(tokens));
  gate.kth_expert.resize(static_cast<size_t>(tokens));
  gate.kplus1_expert.resize(static_cast<size_t>(tokens));
  std::vector<int32_t> picked;
  for (int64_t t = 0; t < tokens; ++t) {
    const double* h = gate.noisy.data() + t * n;
    rank_top(gate.noisy.data(), t * n, n, std::min<int64_t>(k + 1, n), o.ties_higher, nullptr, 1, picked);
    gate.kth_noisy[t] = h[picked[k - 1]];
    gate.kplus1_noisy[t] = k < n ? h[picked[k]] : NAN;
    gate.kth_expert[t] = picked[k - 1];
    gate.kplus1_expert[t] = k < n ? picked[k] : -1;
    const double max = h[picked[0]];
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += std::exp(h[picked[j]] - max);
    for (int j = 0; j < k; ++j) {
      gate.experts[t * k + j] = picked[j];
      gate.weights[t * k + j] = std::exp(h[picked[j]] - max) / sum;
    }
  }
  gate.selected = gate.experts;
  gate.selected_weights = gate.weights;
  if (o.capacity_factor > 0) {
    const std::vector<double> scores = gate.weights;
    gate.dropped = apply_capacity(gate.experts.data(), gate.weights.data(), scores.data(), tokens, k, n,
                                  expert_capacity(tokens, n, k, o.capacity_factor), o.drop_by_score);
  }
}

// With the sampled noise held fixed: dH/dclean = 1, dH/dstd = noise, dstd/d(x W_noise^T) = sigmoid(x W_noise^T).
void backward_noisy_top_k(const Gate& gate, const double* grad, double* grad_logits, double* grad_noise_logits) {
  selected_softmax_backward(gate, grad, grad_logits);
  const int64_t count = gate.tokens * gate.num_experts;
  for (int64_t i = 0; i < count; ++i)
    grad_noise_logits[i] = grad_logits[i] * gate.noise[i] * sigmoid(gate.noise_logits[i]);
}

}  // namespace moe::rules
