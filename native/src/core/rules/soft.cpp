// Soft routing (lib/gating/soft.ts): every expert, weighted by the softmax over all of them (Shazeer et al. eq. 2),
// slots in descending weight order, ties to the lower index.
#include "common.h"

namespace moe::rules {

void route_soft(const Options&, const RouteInput& in, Gate& gate) {
  const int64_t n = in.num_experts, tokens = in.tokens;
  gate.probs = softmax_rows(in.logits, tokens, n);
  gate.experts.resize(static_cast<size_t>(tokens * n));
  gate.weights.resize(static_cast<size_t>(tokens * n));
  std::vector<int32_t> picked;
  for (int64_t t = 0; t < tokens; ++t) {
    rank_top(gate.probs.data(), t * n, n, n, false, nullptr, 1, picked);
    for (int64_t j = 0; j < n; ++j) {
      gate.experts[t * n + j] = picked[j];
      gate.weights[t * n + j] = gate.probs[t * n + picked[j]];
    }
  }
}

}  // namespace moe::rules
