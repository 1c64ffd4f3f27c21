#include "common.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moe::rules {

void softmax_row(const double* row, int64_t n, double* out) {
  double max = -INFINITY;
  for (int64_t e = 0; e < n; ++e) max = std::max(max, row[e]);
  double sum = 0;
  for (int64_t e = 0; e < n; ++e) sum += out[e] = std::exp(row[e] - max);
  for (int64_t e = 0; e < n; ++e) out[e] /= sum;
}

std::vector<double> softmax_rows(const double* data, int64_t tokens, int64_t n) {
  std::vector<double> out(static_cast<size_t>(tokens * n));
  for (int64_t t = 0; t < tokens; ++t) softmax_row(data + t * n, n, out.data() + t * n);
  return out;
}

void rank_top(const double* values, int64_t offset, int64_t count, int64_t k, bool higher, const char* allowed,
              int64_t stride, std::vector<int32_t>& out) {
  out.clear();
  const auto value = [&](int64_t i) { return values[offset + i * stride]; };
  // k scans of count values for a few picks; past them one sort (k = E = 65,536 would be minutes a token by scans).
  // The values are finite (route checks them), so both give one order: descending, ties by index as asked.
  if (k > 8 && count > 64) {
    std::vector<int32_t> candidates;
    for (int64_t i = 0; i < count; ++i)
      if (!allowed || allowed[i]) candidates.push_back(static_cast<int32_t>(i));
    const auto before = [&](int32_t a, int32_t b) {
      const double va = value(a), vb = value(b);
      return va != vb ? va > vb : higher ? a > b : a < b;
    };
    const int64_t take = std::min<int64_t>(k, static_cast<int64_t>(candidates.size()));
    std::partial_sort(candidates.begin(), candidates.begin() + take, candidates.end(), before);
    out.assign(candidates.begin(), candidates.begin() + take);
    return;
  }
  thread_local std::vector<char> taken;
  taken.assign(static_cast<size_t>(count), 0);
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t i = 0; i < count; ++i) {
      if (taken[i] || (allowed && !allowed[i])) continue;
      if (best < 0 || value(i) > value(best) || (higher && value(i) == value(best))) best = i;
    }
    if (best < 0) break;
    taken[best] = 1;
    out.push_back(static_cast<int32_t>(best));
  }
}

void allow_best_groups(const std::vector<double>& group_score, int top_k_groups, int64_t group_size,
                       std::vector<char>& allowed) {
  thread_local std::vector<int32_t> groups;
  rank_top(group_score.data(), 0, static_cast<int64_t>(group_score.size()), top_k_groups, false, nullptr, 1, groups);
  std::fill(allowed.begin(), allowed.end(), 0);
  for (const int32_t g : groups) std::fill_n(allowed.begin() + g * group_size, group_size, 1);
}

int64_t expert_capacity(int64_t tokens, int64_t num_experts, int k, double capacity_factor) {
  // (the same expression as lib/gating/capacity.ts: the 1e-9 keeps an exact product from rounding up)
  const double c = std::ceil((static_cast<double>(k) * static_cast<double>(tokens) * capacity_factor) /
                                 static_cast<double>(num_experts) -
                             1e-9);
  return std::max<int64_t>(1, static_cast<int64_t>(c));
}

int64_t apply_capacity(int32_t* experts, double* weights, const double* scores, int64_t tokens, int k,
                       int64_t num_experts, int64_t capacity, bool by_score) {
  std::vector<int64_t> priority;
  priority.reserve(static_cast<size_t>(tokens * k));
  for (int j = 0; j < k; ++j)
    for (int64_t t = 0; t < tokens; ++t) priority.push_back(t * k + j);
  if (by_score)  // (stable: equal scores keep the position order)
    std::stable_sort(priority.begin(), priority.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  std::vector<int64_t> used(static_cast<size_t>(num_experts), 0);
  int64_t dropped = 0;
  for (const int64_t s : priority) {
    const int32_t e = experts[s];
    if (e < 0) continue;
    if (used[e] < capacity) {
      ++used[e];
    } else {
      experts[s] = -1;
      weights[s] = 0;
      ++dropped;
    }
  }
  return dropped;
}

std::vector<int32_t> count_per_expert(const std::vector<int32_t>& experts, int64_t num_experts) {
  std::vector<int32_t> counts(static_cast<size_t>(num_experts), 0);
  for (const int32_t e : experts)
    if (e >= 0) ++counts[e];
  return counts;
}

void selected_softmax_backward(const Gate& gate, const double* grad, double* out) {
  const int k = gate.top_k;
  const int64_t n = gate.num_experts;
  std::fill(out, out + gate.tokens * n, 0.0);
  for (int64_t t = 0; t < gate.tokens; ++t) {
    double dot = 0;
    for (int j = 0; j < k; ++j) {
      const int64_t s = t * k + j;
      if (gate.experts[s] >= 0) dot += gate.selected_weights[s] * grad[s];
    }
    for (int j = 0; j < k; ++j) {
      const int64_t s = t * k + j;
      if (gate.selected[s] < 0) continue;
      const double g = gate.experts[s] >= 0 ? grad[s] : 0;
      out[t * n + gate.selected[s]] += gate.selected_weights[s] * (g - dot);
    }
  }
}

void full_softmax_backward(const Gate& gate, const double* grad, double* out) {
  const int k = gate.top_k;
  const int64_t n = gate.num_experts;
  std::vector<double> g(static_cast<size_t>(n));
  for (int64_t t = 0; t < gate.tokens; ++t) {
    std::fill(g.begin(), g.end(), 0.0);
    for (int j = 0; j < k; ++j) {
      const int32_t e = gate.experts[t * k + j];
      if (e >= 0) g[e] += grad[t * k + j];
    }
    const double* p = gate.probs.data() + t * n;
    double dot = 0;
    for (int64_t e = 0; e < n; ++e) dot += p[e] * g[e];
    for (int64_t e = 0; e < n; ++e) out[t * n + e] = p[e] * (g[e] - dot);
  }
}

void backward_full_softmax(const Gate& gate, const double* grad, double* grad_logits, double*) {
  full_softmax_backward(gate, grad, grad_logits);
}
void backward_selected_softmax(const Gate& gate, const double* grad, double* grad_logits, double*) {
  selected_softmax_backward(gate, grad, grad_logits);
}

}  // namespace moe::rules
