// The balance losses a layer computes with its forward (`forward(x, { auxLosses })`), in the core, in float64: each
// loss's value and its gradient with respect to the router logits (and noisy top-k's noise logits), from the forward's
// gate. lib/losses has the same losses as public TypeScript functions, the reference (test/core-losses.test.ts
// compares them); lib/aux-losses.ts checks a forward's list of them before the call.
//
// Adding a loss: its file in core/losses/, its entry in kLosses (core/losses/losses.cpp), its name in
// lib/aux-losses.ts, its public function in lib/losses.
#pragma once
#include <cstdint>
#include <vector>

#include "moe/routing_rules.h"

namespace moe::losses {

enum class Kind { importance, load, switch_loss, gshard, mixtral, z_loss, sequence };
constexpr int kKinds = static_cast<int>(Kind::sequence) + 1;
// The public name ('importance', 'zLoss', ...), or false when unknown.
bool parse_kind(const char* name, Kind* out);
const char* kind_name(Kind kind);

// One loss as a forward asks for it (lib/aux-losses.ts has checked it against the layer and the call).
struct Spec {
  Kind kind = Kind::switch_loss;
  double coefficient = 1;        // scales value and gradient (importance, load, gshard, mixtral, zLoss)
  bool sample_variance = false;  // importance, load: the PyTorch ports' unbiased variance instead of tensor2tensor's
  double alpha = 0;              // switch (1e-2 by default), sequence (1e-4)
  bool paper_scale = false;      // gshard: (1/E) sum instead of DeepSpeed's E sum
  int64_t sequence_length = 0;   // sequence: tokens per sequence (dividing the tokens)
};

struct Result {
  double value = 0;
  std::vector<double> grad_logits;        // [T, E]
  std::vector<double> grad_noise_logits;  // [T, E], the load loss only
};

// The loss of a forward whose rule made `gate`, its ranked logits (exploration noise included) [T, E] and their
// row softmax `probs` [T, E]. std::invalid_argument where the loss does not apply (load without noisy top-k's
// training noise or with k = E, sequence lengths that do not divide the tokens).
Result compute(const Spec& spec, const rules::Gate& gate, const double* ranked, const double* probs);

}  // namespace moe::losses
