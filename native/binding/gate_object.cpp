#include "gate_object.h"

#include <cmath>
#include <string>
#include <utility>

#include "args.h"

namespace moe_binding {

namespace {

template <class T, class Array>
Napi::Value array_of(Napi::Env env, const std::vector<T>& v) {
  Array a = Array::New(env, v.size());
  std::copy(v.begin(), v.end(), a.Data());
  return a;
}
Napi::Value doubles(Napi::Env env, const std::vector<double>& v) {
  return array_of<double, Napi::Float64Array>(env, v);
}
Napi::Value ints(Napi::Env env, const std::vector<int32_t>& v) { return array_of<int32_t, Napi::Int32Array>(env, v); }

}  // namespace

Napi::Object gate_object(Napi::Env env, const moe::rules::Gate& g) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", moe::rules::kind_name(g.kind));
  o.Set("topK", g.top_k);
  o.Set("tokens", static_cast<double>(g.tokens));
  o.Set("numExperts", static_cast<double>(g.num_experts));
  o.Set("experts", ints(env, g.experts));
  o.Set("weights", doubles(env, g.weights));
  o.Set("tokensPerExpert", ints(env, g.tokens_per_expert));
  o.Set("dropped", static_cast<double>(g.dropped));
  o.Set("normalized", g.normalized);
  o.Set("routeScale", g.route_scale);
  o.Set("capacity", static_cast<double>(g.capacity));
  o.Set("droppedTokens", static_cast<double>(g.dropped_tokens));
  o.Set("training", g.training);
  // (each only where the rule keeps it)
  const auto set = [&](const char* name, const auto& v, auto make) {
    o.Set(name, v.empty() ? env.Null() : make(env, v));
  };
  set("probs", g.probs, doubles);
  set("selected", g.selected, ints);
  set("selectedWeights", g.selected_weights, doubles);
  set("clean", g.clean, doubles);
  set("noisy", g.noisy, doubles);
  set("noiseStd", g.noise_std, doubles);
  set("noise", g.noise, doubles);
  set("noiseLogits", g.noise_logits, doubles);
  set("kthNoisy", g.kth_noisy, doubles);
  set("kPlus1Noisy", g.kplus1_noisy, doubles);
  set("kthExpert", g.kth_expert, ints);
  set("kPlus1Expert", g.kplus1_expert, ints);
  return o;
}

Napi::Object draws_object(Napi::Env env, const moe::LayerRouter::Draws& d) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("training", d.training);
  o.Set("jitter", static_cast<double>(d.jitter));
  o.Set("exploration", static_cast<double>(d.exploration));
  o.Set("rule", static_cast<double>(d.rule));
  return o;
}

moe::LayerRouter::Draws read_draws(const Napi::Env env, const Napi::Value& draws, const Napi::Value& selection_bias,
                                   int64_t n) {
  const Fields f(env, draws, "draws");
  moe::LayerRouter::Draws d;
  d.training = f.boolean("training");
  d.jitter = static_cast<uint32_t>(f.integer("jitter", 0, 0xffffffffLL));
  d.exploration = static_cast<uint32_t>(f.integer("exploration", 0, 0xffffffffLL));
  d.rule = static_cast<uint32_t>(f.integer("rule", 0, 0xffffffffLL));
  if (const double* b = finite_float64_value(env, selection_bias, "selectionBias", n, true))
    d.selection_bias = std::make_shared<const std::vector<double>>(b, b + n);
  return d;
}

std::vector<moe::losses::Spec> read_aux_losses(Napi::Env env, const Napi::Value& list) {
  std::vector<moe::losses::Spec> out;
  if (list.IsUndefined() || list.IsNull()) return out;
  if (!list.IsArray()) throw_type_error(env, "expected auxLosses to be an array of loss specs");
  const Napi::Array a = list.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    const Fields f(env, a.Get(i), "auxLosses[" + std::to_string(i) + "]");
    moe::losses::Spec spec;
    const std::string kind = f.string("kind");
    if (!moe::losses::parse_kind(kind.c_str(), &spec.kind))
      throw_range_error(env, "expected a known balance loss but got '" + kind + "'");
    spec.coefficient = f.number("coefficient");
    spec.sample_variance = f.boolean("sampleVariance");
    spec.alpha = f.number("alpha");
    spec.paper_scale = f.boolean("paperScale");
    spec.sequence_length = f.integer("sequenceLength", 0, kMaxDim);
    if (spec.coefficient < 0 || spec.alpha < 0)
      throw_range_error(env, "expected auxLosses[" + std::to_string(i) + "]'s coefficient and alpha >= 0");
    out.push_back(spec);
  }
  return out;
}

Napi::Array aux_losses_array(Napi::Env env, const std::vector<moe::losses::Result>& results) {
  Napi::Array a = Napi::Array::New(env, results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("value", results[i].value);
    o.Set("gradLogits", doubles(env, results[i].grad_logits));
    o.Set("gradNoiseLogits",
          results[i].grad_noise_logits.empty() ? env.Null() : doubles(env, results[i].grad_noise_logits));
    a.Set(static_cast<uint32_t>(i), o);
  }
  return a;
}

moe::rules::Options read_rule_options(const Fields& f) {
  moe::rules::Options o;
  const std::string kind = f.string("kind");
  if (!moe::rules::parse_kind(kind.c_str(), &o.kind))
    throw_range_error(f.env(), "expected a known router kind but got '" + kind + "'");
  o.normalize = f.boolean("normalize");
  o.ties_higher = f.boolean("tiesHigher");
  o.capacity_factor = f.number("capacityFactor");
  o.drop_by_score = f.boolean("dropByScore");
  o.num_groups = static_cast<int>(f.integer("numGroups", 1, kMaxExperts));
  o.top_k_groups = static_cast<int>(f.integer("topKGroups", 1, kMaxExperts));
  o.route_scale = f.number("routeScale");
  o.noise_epsilon = f.number("noiseEpsilon");
  o.group_size = f.integer("groupSize", 0, kMaxDim);
  o.random_routing = f.boolean("randomRouting");
  o.exploration = f.number("explorationNoise");
  o.jitter = f.number("jitter");
  o.seed = static_cast<uint32_t>(f.integer("seed", 0, 0xffffffffLL));
  return o;
}

moe::RouterSpec read_router(const Fields& f, int64_t n) {
  moe::RouterSpec spec;
  spec.options = read_rule_options(f);
  if (const float* b = f.float32("routerBias", 1, n, true)) spec.router_bias.assign(b, b + n);
  if (const double* b = finite_float64_value(f.env(), f.value("selectionBias"), "spec.rule.selectionBias", n, true))
    spec.selection_bias.assign(b, b + n);
  return spec;
}

}  // namespace moe_binding
