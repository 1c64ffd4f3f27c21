// A routing rule's result (moe::rules::Gate) as it crosses the seam: its arrays as a plain object, which
// lib/gating's rules wrap into their public gate (each rule's fromCore); a forward's draws (its seeds), with which
// the core routes that forward again for its backward; and the rule's options, read by name from config.router as
// lib/native.ts declares them (NativeRouterSpec).
#pragma once
#include <napi.h>

#include <memory>

#include "moe/layer_router.h"
#include "spec.h"

namespace moe_binding {

// { kind, topK, experts, weights, tokensPerExpert, dropped, ... } (NativeGate in lib/native.ts): the arrays the
// rule filled, each a copy.
Napi::Object gate_object(Napi::Env env, const moe::rules::Gate& gate);

// { training, jitter, exploration, rule }: a forward's draws (NativeDraws), its biases apart.
Napi::Object draws_object(Napi::Env env, const moe::LayerRouter::Draws& draws);
// The same read back, with the selection bias the forward ran with (a Float64Array [E], or null / absent).
moe::LayerRouter::Draws read_draws(const Napi::Env env, const Napi::Value& draws, const Napi::Value& selection_bias,
                                   int64_t num_experts);

// A forward's balance losses (NativeAuxLossSpec[]; undefined or null: none), checked by lib/aux-losses.ts first.
std::vector<moe::losses::Spec> read_aux_losses(Napi::Env env, const Napi::Value& list);
// Their results, in order: [{ value, gradLogits, gradNoiseLogits }] (Float64Arrays; null where a loss has none).
Napi::Array aux_losses_array(Napi::Env env, const std::vector<moe::losses::Result>& results);

// NativeRouterSpec: the rule's options, the router bias (Float32Array [E] or null) and the selection bias
// (Float64Array [E] or null).
moe::RouterSpec read_router(const Fields& f, int64_t num_experts);
// The rule's options alone (for kernels.route).
moe::rules::Options read_rule_options(const Fields& f);

}  // namespace moe_binding
