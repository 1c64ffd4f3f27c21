// The Switch Transformer balance loss (Fedus et al. eqs. 4-6; lib/losses/switch-loss.ts): alpha N sum_i f_i P_i,
// f_i the fraction of tokens whose first choice is i (not differentiable), P_i the mean probability.
#include "common.h"

namespace moe::losses {

Result switch_loss(const Spec& s, const rules::Gate& g, const double*, const double* probs) {
  const int64_t tokens = g.tokens, n = g.num_experts;
  const std::vector<double> f = first_choice_fractions(g), p = mean_probs(probs, tokens, n);
  double value = 0;
  for (int64_t e = 0; e < n; ++e) value += f[e] * p[e];
  std::vector<double> grad_probs(static_cast<size_t>(tokens * n));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t e = 0; e < n; ++e) grad_probs[t * n + e] = (s.alpha * static_cast<double>(n) * f[e]) / tokens;
  Result r;
  r.value = s.alpha * static_cast<double>(n) * value;
  r.grad_logits = softmax_backward(probs, grad_probs, tokens, n);
  return r;
}

}  // namespace moe::losses
