#include "common.h"

namespace moe::losses {

double cv_squared(const std::vector<double>& x, bool sample, std::vector<double>& grad) {
  constexpr double kEps = 1e-10;
  const size_t n = x.size();
  grad.assign(n, 0.0);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += x[i];
  if (sample) {
    if (n == 1) return 0;
    const double mean = sum / static_cast<double>(n);
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += (x[i] - mean) * (x[i] - mean);
    const double vr = ss / static_cast<double>(n - 1);
    const double d = mean * mean + kEps;
    for (size_t i = 0; i < n; ++i)
      grad[i] =
          (2 * (x[i] - mean)) / static_cast<double>(n - 1) / d - (vr * 2 * mean) / static_cast<double>(n) / (d * d);
    return vr / d;
  }
  const double count = static_cast<double>(n) + kEps;
  const double mean = sum / count;
  double ss = 0, dev = 0;
  for (size_t i = 0; i < n; ++i) {
    ss += (x[i] - mean) * (x[i] - mean);
    dev += x[i] - mean;
  }
  const double vr = ss / count;
  const double d = mean * mean + kEps;
  // dV/dx_i = (2 / count) ((x_i - mean) - sum_j (x_j - mean) / count), since dmean/dx_i = 1 / count
  for (size_t i = 0; i < n; ++i) {
    const double dv = (2 / count) * (x[i] - mean - dev / count);
    grad[i] = dv / d - (vr * 2 * mean) / count / (d * d);
  }
  return vr / d;
}

std::vector<double> softmax_backward(const double* probs, const std::vector<double>& grad_probs, int64_t tokens,
                                     int64_t n) {
  std::vector<double> out(static_cast<size_t>(tokens * n));
  for (int64_t t = 0; t < tokens; ++t) {
    double dot = 0;
    for (int64_t e = 0; e < n; ++e) dot += probs[t * n + e] * grad_probs[t * n + e];
    for (int64_t e = 0; e < n; ++e) out[t * n + e] = probs[t * n + e] * (grad_probs[t * n + e] - dot);
  }
  return out;
}

std::vector<double> first_choice_fractions(const rules::Gate& gate) {
  std::vector<double> f(static_cast<size_t>(gate.num_experts), 0.0);
  for (int64_t t = 0; t < gate.tokens; ++t) {
    const int32_t e = gate.experts[t * gate.top_k];
    if (e >= 0) f[e] += 1 / static_cast<double>(gate.tokens);
  }
  return f;
}

std::vector<double> mean_probs(const double* probs, int64_t tokens, int64_t n) {
  std::vector<double> p(static_cast<size_t>(n), 0.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t e = 0; e < n; ++e) p[e] += probs[t * n + e] / static_cast<double>(tokens);
  return p;
}

}  // namespace moe::losses
