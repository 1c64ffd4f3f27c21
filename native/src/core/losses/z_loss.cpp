// The router z-loss (Zoph et al. 2022, ST-MoE; lib/losses/z-loss.ts): the mean over tokens of logsumexp(logits)^2,
// times the coefficient; gradient 2 lse_t softmax(logits_t) / T.
#include <algorithm>
#include <cmath>

#include "common.h"

namespace moe::losses {

Result z_loss(const Spec& s, const rules::Gate& g, const double* logits, const double*) {
  const int64_t tokens = g.tokens, n = g.num_experts;
  Result r;
  r.grad_logits.resize(static_cast<size_t>(tokens * n));
  double value = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    const double* l = logits + t * n;
    double max = -INFINITY;
    for (int64_t e = 0; e < n; ++e) max = std::max(max, l[e]);
    double sum = 0;
    for (int64_t e = 0; e < n; ++e) sum += std::exp(l[e] - max);
    const double lse = max + std::log(sum);
    value += (lse * lse) / static_cast<double>(tokens);
    for (int64_t e = 0; e < n; ++e)
      r.grad_logits[t * n + e] = s.coefficient * ((2 * lse * std::exp(l[e] - lse)) / static_cast<double>(tokens));
  }
  r.value = s.coefficient * value;
  return r;
}

}  // namespace moe::losses
