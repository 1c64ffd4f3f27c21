// Expert-choice routing (Zhou et al. 2022; lib/gating/expert-choice.ts): each expert takes its top
// C = ceil(T c / E) tokens by softmax probability, so a token gets zero or several experts. Token-major like the
// other rules: top_k is the most experts any token got, unused slots are -1 with weight 0.
#include <algorithm>

#include "common.h"

namespace moe::rules {

void route_expert_choice(const Options& o, const RouteInput& in, Gate& gate) {
  const int64_t n = in.num_experts, tokens = in.tokens;
  const double capacity_factor = o.capacity_factor > 0 ? o.capacity_factor : 2;
  gate.probs = softmax_rows(in.logits, tokens, n);
  gate.capacity = std::min(tokens, expert_capacity(tokens, n, 1, capacity_factor));
  std::vector<std::vector<int32_t>> chosen(static_cast<size_t>(tokens));
  std::vector<int32_t> picked;
  for (int64_t e = 0; e < n; ++e) {
    rank_top(gate.probs.data(), e, tokens, gate.capacity, o.ties_higher, nullptr, n, picked);
    for (const int32_t t : picked) chosen[t].push_back(static_cast<int32_t>(e));
  }
  int k = 1;
  for (const auto& list : chosen) k = std::max(k, static_cast<int>(list.size()));
  gate.top_k = k;
  gate.experts.assign(static_cast<size_t>(tokens * k), -1);
  gate.weights.assign(static_cast<size_t>(tokens * k), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    auto& list = chosen[t];
    if (list.empty()) ++gate.dropped_tokens;
    const double* p = gate.probs.data() + t * n;
    std::sort(list.begin(), list.end(), [p](int32_t a, int32_t b) { return p[a] != p[b] ? p[a] > p[b] : a < b; });
    for (size_t j = 0; j < list.size(); ++j) {
      gate.experts[t * k + static_cast<int64_t>(j)] = list[j];
      gate.weights[t * k + static_cast<int64_t>(j)] = p[list[j]];
    }
  }
}

}  // namespace moe::rules
