// GShard's auxiliary loss with the top-1 mask (Lepikhin et al. Algorithm 1; lib/losses/gshard-loss.ts): the mean gate
// value m_e times the fraction c_e of first choices, E sum_e (DeepSpeed, FastMoE; 1 under uniform routing) or
// (1/E) sum_e (the paper), times the coefficient.
#include "common.h"

namespace moe::losses {

Result gshard_loss(const Spec& s, const rules::Gate& g, const double*, const double* probs) {
  const int64_t tokens = g.tokens, n = g.num_experts;
  const std::vector<double> c = first_choice_fractions(g), m = mean_probs(probs, tokens, n);
  const double factor = s.paper_scale ? 1 / static_cast<double>(n) : static_cast<double>(n);
  double value = 0;
  for (int64_t e = 0; e < n; ++e) value += c[e] * m[e];
  std::vector<double> grad_probs(static_cast<size_t>(tokens * n));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t e = 0; e < n; ++e) grad_probs[t * n + e] = (factor * c[e]) / tokens;
  Result r;
  r.value = s.coefficient * (factor * value);
  r.grad_logits = softmax_backward(probs, grad_probs, tokens, n);
  for (double& v : r.grad_logits) v *= s.coefficient;
  return r;
}

}  // namespace moe::losses
