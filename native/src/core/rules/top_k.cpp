// Top-k softmax routing (lib/gating/top-k.ts): softmax over all experts, the top k (Shazeer et al. eqs. 3-5;
// Mixtral), renormalised when `normalize`; DeepSeek-V2's group-limited choice and routed scaling factor.
#include <algorithm>

#include "common.h"

namespace moe::rules {

void route_top_k(const Options& o, const RouteInput& in, Gate& gate) {
  const int64_t n = in.num_experts, tokens = in.tokens;
  const int k = in.top_k;
  const int64_t group_size = n / o.num_groups;
  gate.probs.resize(static_cast<size_t>(tokens * n));
  gate.experts.assign(static_cast<size_t>(tokens * k), -1);
  gate.weights.assign(static_cast<size_t>(tokens * k), 0.0);
  gate.selected_weights.assign(static_cast<size_t>(tokens * k), 0.0);
  std::vector<double> group_score(static_cast<size_t>(o.num_groups));
  std::vector<char> allowed(static_cast<size_t>(n), 1);
  std::vector<int32_t> picked;
  for (int64_t t = 0; t < tokens; ++t) {
    double* p = gate.probs.data() + t * n;
    softmax_row(in.logits + t * n, n, p);
    if (o.num_groups > 1) {
      // A group's score is its best expert's probability (softmax is monotone: its largest logit).
      for (int g = 0; g < o.num_groups; ++g)
        group_score[g] = *std::max_element(p + g * group_size, p + (g + 1) * group_size);
      allow_best_groups(group_score, o.top_k_groups, group_size, allowed);
    }
    rank_top(in.logits, t * n, n, k, o.ties_higher, o.num_groups > 1 ? allowed.data() : nullptr, 1, picked);
    // Over the kept logits: exp(l_i - max) / sum over kept, which is p_i / sum of kept p.
    double kept = 0;
    for (const int32_t e : picked) kept += p[e];
    for (size_t j = 0; j < picked.size(); ++j) {
      const int64_t s = t * k + static_cast<int64_t>(j);
      gate.experts[s] = picked[j];
      gate.selected_weights[s] = p[picked[j]] / kept;
      gate.weights[s] = (o.normalize ? p[picked[j]] / kept : p[picked[j]]) * o.route_scale;
    }
  }
  gate.selected = gate.experts;
  gate.normalized = o.normalize;
  gate.route_scale = o.route_scale;
  if (o.capacity_factor > 0) {
    const std::vector<double> scores = gate.weights;
    gate.dropped = apply_capacity(gate.experts.data(), gate.weights.data(), scores.data(), tokens, k, n,
                                  expert_capacity(tokens, n, k, o.capacity_factor), o.drop_by_score);
  }
}

void backward_top_k(const Gate& gate, const double* grad, double* grad_logits, double*) {
  std::vector<double> scaled;
  if (gate.route_scale != 1) {
    scaled.assign(grad, grad + gate.tokens * gate.top_k);
    for (double& g : scaled) g *= gate.route_scale;
    grad = scaled.data();
  }
  if (gate.normalized)
    selected_softmax_backward(gate, grad, grad_logits);
  else
    full_softmax_backward(gate, grad, grad_logits);
}

}  // namespace moe::rules
