// The smooth load estimator of Shazeer et al. (Appendix A, eqs. 8-11; lib/losses/load-loss.ts) in tensor2tensor's
// two-threshold form: P(x, i) = Phi((clean_i - threshold_i) / std_i), the threshold the (k+1)-th largest noisy value
// when expert i is in the top k, else the k-th; loss = coefficient CV(sum_x P)^2. The gradient reaches the clean
// logits and the noise std (then the noise logits), through the thresholds too (other experts' noisy values).
#include <cmath>
#include <stdexcept>
#include <string>

#include "common.h"

namespace moe::losses {

namespace {
double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }
double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2 * M_PI); }
}  // namespace

Result load_loss(const Spec& s, const rules::Gate& g, const double*, const double*) {
  const int64_t tokens = g.tokens, n = g.num_experts;
  if (g.kind != rules::Kind::noisy_top_k || !g.training || g.top_k >= n)
    throw std::invalid_argument(
        "moe-kernels: expected a training forward of router 'noisyTopK' with k < numExperts for the 'load' loss");
  std::vector<double> prob(static_cast<size_t>(tokens * n)), z(static_cast<size_t>(tokens * n));
  std::vector<int32_t> threshold_expert(static_cast<size_t>(tokens * n));
  std::vector<double> load(static_cast<size_t>(n), 0.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = t * n + i;
      const bool in = g.noisy[k] > g.kplus1_noisy[t];
      const double threshold = in ? g.kplus1_noisy[t] : g.kth_noisy[t];
      threshold_expert[k] = in ? g.kplus1_expert[t] : g.kth_expert[t];
      z[k] = (g.clean[k] - threshold) / g.noise_std[k];
      prob[k] = normal_cdf(z[k]);
      load[i] += prob[k];
    }
  std::vector<double> cv_grad;
  const double cv = cv_squared(load, s.sample_variance, cv_grad);
  Result r;
  r.value = s.coefficient * cv;
  r.grad_logits.assign(static_cast<size_t>(tokens * n), 0.0);
  std::vector<double> grad_std(static_cast<size_t>(tokens * n), 0.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = t * n + i;
      const double dp = s.coefficient * cv_grad[i] * normal_pdf(z[k]);  // dL/dz
      r.grad_logits[k] += dp / g.noise_std[k];
      grad_std[k] -= (dp * z[k]) / g.noise_std[k];
      const int64_t j = t * n + threshold_expert[k];  // the threshold is H_j = clean_j + noise_j std_j
      r.grad_logits[j] -= dp / g.noise_std[k];
      grad_std[j] -= (dp / g.noise_std[k]) * g.noise[j];
    }
  // std = softplus(noise logits) + eps: dstd/dlogit = sigmoid(logit)
  r.grad_noise_logits.resize(grad_std.size());
  for (size_t k = 0; k < grad_std.size(); ++k)
    r.grad_noise_logits[k] = grad_std[k] / (1 + std::exp(-g.noise_logits[k]));
  return r;
}

}  // namespace moe::losses
