// Shazeer et al. eqs. 6-7 (lib/losses/importance-loss.ts): Importance = the sum over tokens of each expert's gate
// values; loss = coefficient CV(Importance)^2, its gradient per slot weight taken through the rule's backward.
#include "common.h"

namespace moe::losses {

Result importance_loss(const Spec& s, const rules::Gate& gate, const double*, const double*) {
  std::vector<double> importance(static_cast<size_t>(gate.num_experts), 0.0);
  for (size_t i = 0; i < gate.experts.size(); ++i)
    if (gate.experts[i] >= 0) importance[gate.experts[i]] += gate.weights[i];
  std::vector<double> cv_grad;
  const double cv = cv_squared(importance, s.sample_variance, cv_grad);
  std::vector<double> grad(gate.experts.size());
  for (size_t i = 0; i < grad.size(); ++i)
    grad[i] = gate.experts[i] >= 0 ? s.coefficient * cv_grad[gate.experts[i]] : 0;
  Result r;
  r.value = s.coefficient * cv;
  const int64_t n = gate.tokens * gate.num_experts;
  r.grad_logits.resize(static_cast<size_t>(n));
  if (rules::uses_noise_router(gate.kind)) r.grad_noise_logits.resize(static_cast<size_t>(n));
  rules::backward(gate, grad.data(), r.grad_logits.data(), r.grad_noise_logits.data());
  return r;
}

}  // namespace moe::losses
