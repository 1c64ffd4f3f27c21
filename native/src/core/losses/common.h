// What the balance losses share (core/losses/*.cpp): the squared coefficient of variation, a softmax's backward,
// the fractions of tokens per expert and the mean probabilities. Each computes as its twin in lib/losses does.
#pragma once
#include <cstdint>
#include <vector>

#include "moe/balance_losses.h"

namespace moe::losses {

// var / (mean^2 + 1e-10) and its gradient: tensor2tensor's cv_squared (n = size + 1e-10 for the mean and the
// variance), or with `sample` the PyTorch ports' x.var() / (x.mean()^2 + 1e-10) (0 for one element).
double cv_squared(const std::vector<double>& x, bool sample, std::vector<double>& grad);
// dL/dlogits = p (g - sum p g) per row of E, for p = softmax(logits).
std::vector<double> softmax_backward(const double* probs, const std::vector<double>& grad_probs, int64_t tokens,
                                     int64_t n);
// The fraction of tokens whose first choice is each expert (slot 0 of each token; -1 not counted).
std::vector<double> first_choice_fractions(const rules::Gate& gate);
// The mean of each column of probs [T, E].
std::vector<double> mean_probs(const double* probs, int64_t tokens, int64_t n);

// The losses (core/losses/<loss>.cpp).
Result importance_loss(const Spec&, const rules::Gate&, const double* ranked, const double* probs);
Result load_loss(const Spec&, const rules::Gate&, const double* ranked, const double* probs);
Result switch_loss(const Spec&, const rules::Gate&, const double* ranked, const double* probs);
Result gshard_loss(const Spec&, const rules::Gate&, const double* ranked, const double* probs);
Result mixtral_loss(const Spec&, const rules::Gate&, const double* ranked, const double* probs);
Result z_loss(const Spec&, const rules::Gate&, const double* ranked, const double* probs);
Result sequence_loss(const Spec&, const rules::Gate&, const double* ranked, const double* probs);

}  // namespace moe::losses
