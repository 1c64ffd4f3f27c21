// Switch routing (Fedus et al. 2021 eqs. 1-3; lib/gating/switch.ts): top-1 of the full softmax, its probability as
// the weight (not renormalised), ties to the lower index; optional capacity.
#include "common.h"

namespace moe::rules {

void route_switch(const Options& o, const RouteInput& in, Gate& gate) {
  const int64_t n = in.num_experts, tokens = in.tokens;
  gate.probs = softmax_rows(in.logits, tokens, n);
  gate.experts.resize(static_cast<size_t>(tokens));
  gate.weights.resize(static_cast<size_t>(tokens));
  std::vector<int32_t> picked;
  for (int64_t t = 0; t < tokens; ++t) {
    rank_top(in.logits, t * n, n, 1, false, nullptr, 1, picked);
    gate.experts[t] = picked[0];
    gate.weights[t] = gate.probs[t * n + picked[0]];
  }
  if (o.capacity_factor > 0) {
    const std::vector<double> scores = gate.weights;
    gate.dropped = apply_capacity(gate.experts.data(), gate.weights.data(), scores.data(), tokens, 1, n,
                                  expert_capacity(tokens, n, 1, o.capacity_factor), o.drop_by_score);
  }
}

}  // namespace moe::rules
