// A layer's routing in the core (moe/layer_router.h): the same steps, in the same order and arithmetic, as the
// TypeScript that did them before (lib/layer-router.ts, lib/gate-gradients.ts), so that a layer computes what it
// computed then.
#include "moe/layer_router.h"

#include "rules/common.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace moe {

LayerRouter::LayerRouter(RouterSpec spec, const LayerConfig& config, BuiltInRouting::Rule built_in)
    : spec_(std::move(spec)),
      num_experts_(config.experts.num_experts),
      d_model_(config.experts.d_model),
      top_k_(config.top_k),
      built_in_(built_in),
      has_noise_router_(rules::uses_noise_router(spec_.options.kind)),
      has_router_bias_(!spec_.router_bias.empty()),
      random_(spec_.options.seed) {
  rules::check_options(spec_.options, num_experts_, top_k_);
  const auto sized = [this](size_t n, const char* name) {
    if (n != 0 && n != static_cast<size_t>(num_experts_))
      throw std::invalid_argument(std::string("moe-kernels: expected ") + name + " of numExperts = " +
                                  std::to_string(num_experts_) + " values but got " + std::to_string(n));
  };
  sized(spec_.router_bias.size(), "the router bias");
  sized(spec_.selection_bias.size(), "the selection bias");
  if (!spec_.selection_bias.empty())
    selection_bias_ = std::make_shared<const std::vector<double>>(spec_.selection_bias);
  if (has_router_bias_) router_bias_ = std::make_shared<const std::vector<float>>(spec_.router_bias);
}

LayerRouter::Draws LayerRouter::draw(bool training) {
  std::lock_guard<std::mutex> lock(mutex_);
  Draws d;
  d.training = training;
  d.selection_bias = selection_bias_;
  d.router_bias = router_bias_;
  if (!training) return d;
  // One seed per draw, in this order (as lib/layer-router.ts drew them before issue 29, so that a seed gives the
  // training noise it gave then): jitter, exploration, the rule's own.
  const rules::Options& o = spec_.options;
  if (o.jitter > 0) d.jitter = random_.next_uint32();
  if (o.exploration > 0) d.exploration = random_.next_uint32();
  if (o.kind == rules::Kind::noisy_top_k || o.kind == rules::Kind::gshard_top2) d.rule = random_.next_uint32();
  return d;
}

void LayerRouter::set_selection_bias(std::vector<double> bias) {
  if (bias.size() != static_cast<size_t>(num_experts_))
    throw std::invalid_argument("moe-kernels: expected a selection bias of numExperts values");
  std::lock_guard<std::mutex> lock(mutex_);
  selection_bias_ = std::make_shared<const std::vector<double>>(std::move(bias));
}

void LayerRouter::set_router_bias(std::vector<float> bias) {
  if (!has_router_bias_ || bias.size() != static_cast<size_t>(num_experts_))
    throw std::invalid_argument("moe-kernels: expected a router bias of numExperts values for a layer that has one");
  std::lock_guard<std::mutex> lock(mutex_);
  router_bias_ = std::make_shared<const std::vector<float>>(std::move(bias));
}

bool LayerRouter::built_in(bool training) const {
  const bool noisy = training && (spec_.options.exploration > 0 || spec_.options.jitter > 0);
  return built_in_ != BuiltInRouting::Rule::none && !noisy;
}

int LayerRouter::slots_per_token() const { return rules::slots_per_token(spec_.options, num_experts_, top_k_); }

rules::Gate LayerRouter::route(Layer& layer, const float* x, int64_t tokens, const Draws& d, const float* given_logits,
                               RoutedForward* out) const {
  const int64_t e = num_experts_, n = tokens * e;
  const rules::Options& o = spec_.options;
  // The router's input: x, or x with Switch Transformer's multiplicative jitter (needed again for the noise router)
  std::vector<float> jittered;
  const float* router_x = x;
  if (d.training && o.jitter > 0 && (!given_logits || has_noise_router_)) {
    jittered.resize(static_cast<size_t>(tokens * d_model_));
    rules::Random random(d.jitter);
    for (size_t i = 0; i < jittered.size(); ++i)
      jittered[i] = static_cast<float>(static_cast<double>(x[i]) * (1 - o.jitter + 2 * o.jitter * random.uniform()));
    router_x = jittered.data();
  }
  std::vector<float> computed;
  const float* logits = given_logits;
  if (!logits) {
    std::vector<float>& l = out ? out->logits : computed;
    l.resize(static_cast<size_t>(n));
    layer.router_logits(router_x, tokens, l.data());
    if (d.router_bias)
      for (int64_t i = 0; i < n; ++i) l[i] += (*d.router_bias)[i % e];
    logits = l.data();
  }
  std::vector<double> ranked(logits, logits + n);
  if (d.training && o.exploration > 0) {  // Chen et al. 2022: U[0, scale) on the logits
    rules::Random random(d.exploration);
    for (double& v : ranked) v = v + o.exploration * random.uniform();
  }
  std::vector<double> noise_logits;
  if (has_noise_router_) {
    std::vector<float> raw(static_cast<size_t>(n));
    layer.noise_logits(router_x, tokens, raw.data());
    noise_logits.assign(raw.begin(), raw.end());
  }
  rules::RouteInput in;
  in.logits = ranked.data();
  in.noise_logits = has_noise_router_ ? noise_logits.data() : nullptr;
  in.bias = d.selection_bias ? d.selection_bias->data() : nullptr;
  in.tokens = tokens;
  in.num_experts = e;
  in.top_k = top_k_;
  in.training = d.training;
  in.seed = d.rule;
  rules::Gate gate = rules::route(o, in);
  if (out) {
    out->router_input = std::move(jittered);
    if (d.training && o.exploration > 0) out->ranked = std::move(ranked);
  }
  return gate;
}

rules::Gate LayerRouter::gate_of(Layer& layer, const float* x, const float* logits, int64_t tokens,
                                 const Draws& d) const {
  if (d.selection_bias && d.selection_bias->size() != static_cast<size_t>(num_experts_))
    throw std::invalid_argument("moe-kernels: expected a selection bias of numExperts values");
  return route(layer, x, tokens, d, logits, nullptr);
}

void LayerRouter::forward(Layer& layer, const float* x, int64_t tokens, const Draws& d,
                          const std::vector<losses::Spec>& aux, bool keep, float* output, RoutedForward& out) const {
  const int64_t e = num_experts_;
  out.tokens_per_expert.assign(static_cast<size_t>(e), 0);
  if (tokens == 0) {  // an expert-parallel rank without tokens: it serves its experts to the others
    out.top_k = top_k_;
    layer.forward_routed(x, 0, top_k_, nullptr, nullptr, output, out.tokens_per_expert.data(), keep);
    return;
  }
  if (built_in(d.training)) {
    out.top_k = top_k_;
    out.logits.resize(static_cast<size_t>(tokens * e));
    out.experts.resize(static_cast<size_t>(tokens * top_k_));
    out.weights.resize(static_cast<size_t>(tokens * top_k_));
    layer.forward(
        x, tokens,
        {output, out.logits.data(), out.experts.data(), out.weights.data(), out.tokens_per_expert.data(), keep});
    if (!aux.empty()) balance_losses(gate_of(layer, x, out.logits.data(), tokens, d), aux, out);
    return;
  }
  const rules::Gate gate = route(layer, x, tokens, d, nullptr, &out);
  out.top_k = gate.top_k;
  out.experts = gate.experts;
  out.weights.assign(gate.weights.begin(), gate.weights.end());
  out.dropped = gate.dropped;
  layer.forward_routed(x, tokens, out.top_k, out.experts.data(), out.weights.data(), output,
                       out.tokens_per_expert.data(), keep);
  if (!aux.empty()) balance_losses(gate, aux, out);
}

void LayerRouter::balance_losses(const rules::Gate& gate, const std::vector<losses::Spec>& aux,
                                 RoutedForward& out) const {
  // (on the logits the rule ranked: with exploration noise where it applied)
  const std::vector<double> ranked =
      out.ranked.empty() ? std::vector<double>(out.logits.begin(), out.logits.end()) : out.ranked;
  const std::vector<double> probs = rules::softmax_rows(ranked.data(), gate.tokens, gate.num_experts);
  for (const losses::Spec& spec : aux)
    out.aux_losses.push_back(losses::compute(spec, gate, ranked.data(), probs.data()));
}

void LayerRouter::backward(Layer& layer, const float* x, int64_t tokens, const float* logits, const Draws& draws, int k,
                           const int32_t* experts, const float* weights, const float* d_out,
                           const std::vector<const double*>& aux_logits,
                           const std::vector<const double*>& aux_noise_logits, const LayerGradients& grads,
                           RouterGradients& out) const {
  layer.backward(x, tokens, k, experts, weights, d_out, grads);
  const int64_t e = num_experts_, d = d_model_, n = tokens * e;
  out.grad_router.assign(static_cast<size_t>(e * d), 0.0);
  if (has_noise_router_) out.grad_noise_router.assign(static_cast<size_t>(e * d), 0.0);
  if (has_router_bias_) out.grad_router_bias.assign(static_cast<size_t>(e), 0.0f);
  out.grad_weights.assign(grads.d_weights, grads.d_weights + tokens * k);
  out.grad_logits.assign(static_cast<size_t>(n), 0.0);
  if (has_noise_router_) out.grad_noise_logits.assign(static_cast<size_t>(n), 0.0);
  // (an expert-parallel rank without tokens served its experts; its router has nothing to learn from this step)
  if (tokens == 0) return;
  const rules::Gate gate = gate_of(layer, x, logits, tokens, draws);
  if (gate.top_k != k) throw std::invalid_argument("moe-kernels: expected the routing of this forward (its slots)");
  std::vector<double> rule_logits(static_cast<size_t>(n)), rule_noise(has_noise_router_ ? n : 0);
  rules::backward(gate, out.grad_weights.data(), rule_logits.data(), rule_noise.data());
  // Summed as gate-gradients.ts did: zeros, plus the rule's part, plus each balance loss in turn.
  const auto add = [n](std::vector<double>& into, const double* from) {
    for (int64_t i = 0; i < n; ++i) into[i] += from[i];
  };
  add(out.grad_logits, rule_logits.data());
  for (const double* a : aux_logits) add(out.grad_logits, a);
  if (has_noise_router_) {
    add(out.grad_noise_logits, rule_noise.data());
    for (const double* a : aux_noise_logits) add(out.grad_noise_logits, a);
  }
  router_weight_gradient(out.grad_logits.data(), x, tokens, e, d, out.grad_router.data());
  std::vector<float> w(static_cast<size_t>(e * d)), wn(has_noise_router_ ? e * d : 0);
  LayerWeightsOut router;
  router.router = w.data();
  router.noise_router = has_noise_router_ ? wn.data() : nullptr;
  layer.export_weights(router);
  router_input_gradient(out.grad_logits.data(), w.data(), tokens, e, d, grads.dx);
  if (has_noise_router_) {
    router_weight_gradient(out.grad_noise_logits.data(), x, tokens, e, d, out.grad_noise_router.data());
    router_input_gradient(out.grad_noise_logits.data(), wn.data(), tokens, e, d, grads.dx);
  }
  for (int64_t j = 0; j < static_cast<int64_t>(out.grad_router_bias.size()); ++j) {
    double s = 0;
    for (int64_t t = 0; t < tokens; ++t) s += out.grad_logits[t * e + j];
    out.grad_router_bias[j] = static_cast<float>(s);
  }
}

}  // namespace moe
