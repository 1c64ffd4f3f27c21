// DeepSeek-V3 routing (eqs. 13-16; inference/model.py Gate; lib/gating/sigmoid-bias.ts): s = sigmoid(logits);
// selection on s + bias, within the top_k_groups groups of the largest sum of their top-2 biased scores; weights
// the unbiased s of the k selected, normalised to sum to 1, times route_scale.
#include <algorithm>
#include <cmath>

#include "common.h"

namespace moe::rules {

void route_sigmoid_bias(const Options& o, const RouteInput& in, Gate& gate) {
  const int64_t n = in.num_experts, tokens = in.tokens;
  const int k = in.top_k;
  const int64_t group_size = n / o.num_groups;
  gate.probs.resize(static_cast<size_t>(tokens * n));
  gate.experts.assign(static_cast<size_t>(tokens * k), -1);
  gate.weights.assign(static_cast<size_t>(tokens * k), 0.0);
  gate.normalized = o.normalize;
  gate.route_scale = o.route_scale;
  std::vector<double> biased(static_cast<size_t>(n)), group_score(static_cast<size_t>(o.num_groups));
  std::vector<char> allowed(static_cast<size_t>(n));
  std::vector<int32_t> picked, top;
  for (int64_t t = 0; t < tokens; ++t) {
    double* s = gate.probs.data() + t * n;
    for (int64_t e = 0; e < n; ++e) {
      s[e] = 1 / (1 + std::exp(-in.logits[t * n + e]));
      biased[e] = s[e] + (in.bias ? in.bias[e] : 0.0);
    }
    for (int g = 0; g < o.num_groups; ++g) {
      rank_top(biased.data(), g * group_size, group_size, std::min<int64_t>(2, group_size), false, nullptr, 1, top);
      double sum = 0;
      for (const int32_t i : top) sum += biased[g * group_size + i];
      group_score[g] = sum;
    }
    allow_best_groups(group_score, o.top_k_groups, group_size, allowed);
    rank_top(biased.data(), 0, n, k, o.ties_higher, allowed.data(), 1, picked);
    double sum = 0;
    for (const int32_t e : picked) sum += s[e];
    for (size_t j = 0; j < picked.size(); ++j) {
      gate.experts[t * k + static_cast<int64_t>(j)] = picked[j];
      gate.weights[t * k + static_cast<int64_t>(j)] = (s[picked[j]] / (o.normalize ? sum : 1)) * o.route_scale;
    }
  }
}

// The bias and the selection carry no gradient: w_j = r s_j / sum (normalised) or r s_j; ds/dlogit = s (1 - s).
void backward_sigmoid_bias(const Gate& gate, const double* grad, double* grad_logits, double*) {
  const int k = gate.top_k;
  const int64_t n = gate.num_experts;
  const double r = gate.route_scale;
  std::fill(grad_logits, grad_logits + gate.tokens * n, 0.0);
  for (int64_t t = 0; t < gate.tokens; ++t) {
    const double* scores = gate.probs.data() + t * n;
    double sum = 0, dot = 0;
    for (int j = 0; j < k; ++j) {
      const double s = scores[gate.experts[t * k + j]];
      sum += s;
      dot += grad[t * k + j] * s;
    }
    for (int j = 0; j < k; ++j) {
      const int32_t e = gate.experts[t * k + j];
      const double s = scores[e];
      const double ds = gate.normalized ? (r / sum) * (grad[t * k + j] - dot / sum) : r * grad[t * k + j];
      grad_logits[t * n + e] += ds * s * (1 - s);
    }
  }
}

}  // namespace moe::rules
