// GShard's top-2 gating (Lepikhin et al. 2020, Algorithm 1; lib/gating/gshard-top2.ts): softmax, top-2, the two
// renormalised; per group of S tokens every first choice is served in token order while its expert has fewer than
// C = 2S/E x capacity_factor, then every second choice, kept only when 2 g2 > U(0, 1) (random routing, training).
#include <algorithm>

#include "common.h"

namespace moe::rules {

void route_gshard_top2(const Options& o, const RouteInput& in, Gate& gate) {
  const int64_t n = in.num_experts, tokens = in.tokens;
  const double capacity_factor = o.capacity_factor > 0 ? o.capacity_factor : 1;
  const int64_t group = o.group_size > 0 ? o.group_size : tokens;
  const bool random_routing = in.training && o.random_routing;
  Random random(in.training ? in.seed : 0);
  gate.probs.resize(static_cast<size_t>(tokens * n));
  gate.experts.resize(static_cast<size_t>(tokens * 2));
  gate.weights.resize(static_cast<size_t>(tokens * 2));
  std::vector<int32_t> picked;
  for (int64_t t = 0; t < tokens; ++t) {
    double* p = gate.probs.data() + t * n;
    softmax_row(in.logits + t * n, n, p);
    rank_top(in.logits, t * n, n, 2, o.ties_higher, nullptr, 1, picked);
    const double sum = p[picked[0]] + p[picked[1]];
    for (int j = 0; j < 2; ++j) {
      gate.experts[2 * t + j] = picked[j];
      gate.weights[2 * t + j] = p[picked[j]] / sum;
    }
  }
  gate.selected = gate.experts;
  gate.selected_weights = gate.weights;
  std::vector<double> coin(static_cast<size_t>(tokens));
  for (double& c : coin) c = random.uniform();  // (drawn whether or not random routing applies, as the TypeScript)
  const auto drop = [&](int64_t s) {
    gate.experts[s] = -1;
    gate.weights[s] = 0;
    ++gate.dropped;
  };
  std::vector<int64_t> count(static_cast<size_t>(n));
  for (int64_t g0 = 0; g0 < tokens; g0 += group) {
    const int64_t g1 = std::min(tokens, g0 + group);
    gate.capacity = expert_capacity(g1 - g0, n, 2, capacity_factor);
    std::fill(count.begin(), count.end(), 0);
    for (int64_t t = g0; t < g1; ++t) {
      if (count[gate.experts[2 * t]] < gate.capacity)
        ++count[gate.experts[2 * t]];
      else
        drop(2 * t);
    }
    for (int64_t t = g0; t < g1; ++t) {
      const int32_t e = gate.experts[2 * t + 1];
      if (count[e] < gate.capacity && (!random_routing || 2 * gate.weights[2 * t + 1] > coin[t]))
        ++count[e];
      else
        drop(2 * t + 1);
    }
  }
}

}  // namespace moe::rules
