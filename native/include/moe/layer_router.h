// How a layer routes, in the core, for every rule and backend: a forward draws its training randomness, computes
// the router's logits (of x, or of x with Switch jitter), adds the router bias and exploration noise, routes by
// the layer's rule (moe/routing_rules.h) and runs the experts on that routing (Layer::forward_routed), or takes the
// backend's own fused path where its built-in rule applies; a backward runs the experts' part (Layer::backward)
// and then the router's: the rule's backward, the balance losses' gradients, dL/dW_g and dL/dx through the
// router. One call of the binding each, off the event loop.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "moe/balance_losses.h"
#include "moe/moe.h"
#include "moe/routing_rules.h"

namespace moe {

struct RouterSpec {
  rules::Options options;
  std::vector<float> router_bias;      // [E] added to the router logits (gpt-oss), or empty
  std::vector<double> selection_bias;  // [E] sigmoidBias's selection bias (DeepSeek-V3 eq. 16), or empty
};

// What a forward hands back beside its output.
struct RoutedForward {
  int top_k = 0;
  std::vector<float> logits;  // [T, E] the router's (router bias added, exploration noise not)
  std::vector<int32_t> experts;
  std::vector<float> weights;
  std::vector<int32_t> tokens_per_expert;
  int64_t dropped = 0;
  std::vector<float> router_input;         // x with jitter, as the router read it; empty when it read x
  std::vector<double> ranked;              // the logits with exploration noise, as the rule ranked them; or empty
  std::vector<losses::Result> aux_losses;  // the balance losses asked for, in order
};

// The router's gradients of a backward (the float64 ones as lib/gate-gradients.ts defines them).
struct RouterGradients {
  std::vector<double> grad_weights;       // [T * k] dL/d(slot weight)
  std::vector<double> grad_logits;        // [T, E] through the rule's backward plus every balance loss
  std::vector<double> grad_router;        // [E, dModel]
  std::vector<double> grad_noise_logits;  // noisy top-k, else empty
  std::vector<double> grad_noise_router;
  std::vector<float> grad_router_bias;  // [E] when the layer has a router bias
};

class LayerRouter {
 public:
  // built_in: the rule the backend runs fused in Layer::forward (spec.routing.rule), none if it runs none here.
  LayerRouter(RouterSpec spec, const LayerConfig& config, BuiltInRouting::Rule built_in);

  // One forward's draws, taken on the caller's thread as it calls (so that the seeds follow the calls' order
  // whatever thread runs them), with the biases of that moment. A forward's routing is a function of x, the
  // router's weights and its draws: the same draws route the same x the same way again (gate_of, backward), noise
  // and drops included, so nothing of a forward's routing need be kept for its backward but these few numbers.
  struct Draws {
    bool training = false;
    uint32_t jitter = 0, exploration = 0, rule = 0;
    std::shared_ptr<const std::vector<double>> selection_bias;
    std::shared_ptr<const std::vector<float>> router_bias;
  };
  Draws draw(bool training);
  // Replace the biases for the forwards drawn from now on (an optimizer step's router bias; losses'
  // updateBalanceBias's selection bias). [E] each.
  void set_selection_bias(std::vector<double> bias);
  void set_router_bias(std::vector<float> bias);
  // Whether a forward (training or not) takes the backend's fused path.
  bool built_in(bool training) const;
  int slots_per_token() const;

  // output [T, dModel]; aux: the balance losses to compute from the forward's gate (a fused forward routes again by
  // the rule for them).
  void forward(Layer& layer, const float* x, int64_t tokens, const Draws& draws, const std::vector<losses::Spec>& aux,
               bool keep, float* output, RoutedForward& out) const;

  // The gate of a forward of x with these draws, whose logits [T, E] (router bias included) it returned: routed
  // again by the rule, the same choices, drops, noise and weights (a fused forward's are the rule's in float64).
  rules::Gate gate_of(Layer& layer, const float* x, const float* logits, int64_t tokens, const Draws& draws) const;

  // The backward of that forward for dL/d(output) d_out: the experts' part into `grads` (its d_weights required),
  // then the router's through its gate (gate_of). aux_logits / aux_noise_logits: each balance loss's dL/dlogits
  // [T, E], added in order.
  void backward(Layer& layer, const float* x, int64_t tokens, const float* logits, const Draws& draws, int k,
                const int32_t* experts, const float* weights, const float* d_out,
                const std::vector<const double*>& aux_logits, const std::vector<const double*>& aux_noise_logits,
                const LayerGradients& grads, RouterGradients& out) const;

  const rules::Options& options() const { return spec_.options; }

 private:
  // The rule's routing of x: the router's input (x, or x with jitter), its logits (computed into `out`, or given),
  // exploration noise, the noise router's logits, the rule. `out` (when given) receives the logits, the router's
  // input and the ranked logits as the forward returns them.
  rules::Gate route(Layer& layer, const float* x, int64_t tokens, const Draws& d, const float* given_logits,
                    RoutedForward* out) const;
  // The balance losses of a forward that routed by `gate` (its logits and ranked logits in `out`), into `out`.
  void balance_losses(const rules::Gate& gate, const std::vector<losses::Spec>& aux, RoutedForward& out) const;

  RouterSpec spec_;
  int64_t num_experts_, d_model_;
  int top_k_;
  BuiltInRouting::Rule built_in_;
  bool has_noise_router_, has_router_bias_;
  mutable std::mutex mutex_;  // the generator and the bias, drawn from the JS thread, read from job threads
  rules::Random random_;
  std::shared_ptr<const std::vector<double>> selection_bias_;
  std::shared_ptr<const std::vector<float>> router_bias_;
};

}  // namespace moe
