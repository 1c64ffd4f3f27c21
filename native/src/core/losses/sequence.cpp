// DeepSeek-V3's complementary sequence-wise balance loss (eqs. 17-20; lib/losses/sequence-balance-loss.ts), per
// sequence of sequence_length tokens: f_i = E / (K T) (tokens routed to i), P_i the mean of the normalised scores,
// L = alpha sum_i f_i P_i, the mean over the sequences. The scores are the sigmoid affinities of sigmoidBias and
// the softmax probabilities of the other rules; the gradient goes through whichever made them.
#include <stdexcept>
#include <string>

#include "common.h"

namespace moe::losses {

Result sequence_loss(const Spec& s, const rules::Gate& g, const double*, const double* probs) {
  const int64_t tokens = g.tokens, n = g.num_experts, len = s.sequence_length;
  const int k = g.top_k;
  if (len < 1 || tokens % len != 0)
    throw std::invalid_argument("moe-kernels: expected tokens (" + std::to_string(tokens) +
                                ") to be a multiple of the 'sequence' loss's sequenceLength but got " +
                                std::to_string(len));
  const bool sigmoid = g.kind == rules::Kind::sigmoid_bias;
  const double* scores = sigmoid ? g.probs.data() : probs;
  const int64_t sequences = tokens / len;
  std::vector<double> grad_scores(static_cast<size_t>(tokens * n), 0.0), f(static_cast<size_t>(n)),
      p(static_cast<size_t>(n));
  double total = 0;
  for (int64_t q = 0; q < sequences; ++q) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(p.begin(), p.end(), 0.0);
    for (int64_t t = q * len; t < (q + 1) * len; ++t) {
      for (int j = 0; j < k; ++j) {
        const int32_t e = g.experts[t * k + j];
        if (e >= 0) f[e] += static_cast<double>(n) / (static_cast<double>(k) * static_cast<double>(len));
      }
      double sum = 0;
      for (int64_t e = 0; e < n; ++e) sum += scores[t * n + e];
      for (int64_t e = 0; e < n; ++e) p[e] += scores[t * n + e] / sum / static_cast<double>(len);
    }
    double value = 0;
    for (int64_t e = 0; e < n; ++e) value += f[e] * p[e];
    total += s.alpha * value;
    for (int64_t t = q * len; t < (q + 1) * len; ++t) {
      double sum = 0;
      for (int64_t e = 0; e < n; ++e) sum += scores[t * n + e];
      double dot = 0;
      for (int64_t e = 0; e < n; ++e) dot += f[e] * (scores[t * n + e] / sum);
      for (int64_t e = 0; e < n; ++e)
        grad_scores[t * n + e] =
            ((s.alpha / static_cast<double>(len)) * (f[e] - dot)) / sum / static_cast<double>(sequences);
    }
  }
  Result r;
  r.value = total / static_cast<double>(sequences);
  if (sigmoid) {
    r.grad_logits.resize(grad_scores.size());
    for (size_t i = 0; i < grad_scores.size(); ++i) r.grad_logits[i] = grad_scores[i] * scores[i] * (1 - scores[i]);
  } else {
    r.grad_logits = softmax_backward(probs, grad_scores, tokens, n);
  }
  return r;
}

}  // namespace moe::losses
