// Hugging Face's load_balancing_loss_func (Mixtral; lib/losses/mixtral-loss.ts) on one layer's logits: p = softmax,
// the top-k of each token, E times the sum over slots and experts of (the mean one-hot of that slot) x (the mean
// p), times the coefficient. Equals topK under uniform routing.
#include <algorithm>

#include "../rules/common.h"
#include "common.h"

namespace moe::losses {

Result mixtral_loss(const Spec& s, const rules::Gate& g, const double*, const double* probs) {
  const int64_t tokens = g.tokens, n = g.num_experts;
  const int k = std::min<int64_t>(g.top_k, n);
  const double count = static_cast<double>(tokens);
  std::vector<double> per_slot(static_cast<size_t>(k * n), 0.0), mean_prob(static_cast<size_t>(n), 0.0);
  std::vector<int32_t> picked;
  for (int64_t t = 0; t < tokens; ++t) {
    const double* row = probs + t * n;
    rules::rank_top(row, 0, n, k, false, nullptr, 1, picked);
    for (size_t j = 0; j < picked.size(); ++j) per_slot[j * n + picked[j]] += 1 / count;
    for (int64_t e = 0; e < n; ++e) mean_prob[e] += row[e] / count;
  }
  double value = 0;
  std::vector<double> slot_sum(static_cast<size_t>(n), 0.0);
  for (int j = 0; j < k; ++j)
    for (int64_t e = 0; e < n; ++e) {
      value += per_slot[j * n + e] * mean_prob[e];
      slot_sum[e] += per_slot[j * n + e];
    }
  Result r;
  r.value = s.coefficient * (static_cast<double>(n) * value);
  r.grad_logits.resize(static_cast<size_t>(tokens * n));
  // dloss/dp[t, e] = E slot_sum[e] / count, then through each token's softmax.
  for (int64_t t = 0; t < tokens; ++t) {
    const double* p = probs + t * n;
    double dot = 0;
    for (int64_t e = 0; e < n; ++e) dot += p[e] * slot_sum[e];
    for (int64_t e = 0; e < n; ++e)
      r.grad_logits[t * n + e] = s.coefficient * ((static_cast<double>(n) * 1 / count) * p[e] * (slot_sum[e] - dot));
  }
  return r;
}

}  // namespace moe::losses
