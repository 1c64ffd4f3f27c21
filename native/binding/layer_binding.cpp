// NativeLayer: owns a core moe::Layer (any backend: make_layer chooses) and only converts: arguments in, typed
// arrays out, async calls posted to the layer's job queue; forwardSync / forward (Promise) / dispose.
#include "layer_binding.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "args.h"
#include "async_job.h"
#include "gate_object.h"
#include "moe/moe.h"
#include "reported_memory.h"
#include "result_arrays.h"
#include "spec.h"
#include "type_tags.h"

namespace moe_binding {

namespace {

// A forward of finite inputs can still overflow float32 (an x of 1e30 squares past 3.4e38, and inf - inf is
// NaN): such a result is refused, not returned. One pass over the output, against the forward's GEMMs.
void check_output_finite(const float* out, int64_t n) {
  if (moe::find_non_finite(out, n) >= 0)
    throw std::overflow_error(
        "moe-kernels: expected inputs whose forward stays within float32 but got a non-finite output (inputs or "
        "weights too large)");
}

// The output of an async call that the caller gave an `out` array for: written by the job into memory of our
// own, copied into `out` when the Promise settles. The caller could detach or shrink `out` meanwhile; the job
// never writes into memory the caller controls.
struct Staged {
  std::shared_ptr<float[]> data;  // null: the kernels write straight into the output array
  int64_t length = 0;
};

Staged stage_output(const Args& args, int64_t length, bool async) {
  if (!async || args.absent("out")) return {};
  return {allocate_array<float>(args.Env(), length, "the output"), length};
}

// Every call's options object, by name (args.h); lib/native.ts declares the same fields.
const Signature& kForward = declare("NativeLayer.forward", {"x", "tokens", "out", "keep", "training", "auxLosses"});
const Signature& kForwardSync =
    declare("NativeLayer.forwardSync", {"x", "tokens", "out", "keep", "training", "auxLosses"});
const Signature& kBackward = declare("NativeLayer.backward", {"x", "tokens", "k", "experts", "weights", "gradOutput",
                                                              "into", "logits", "draws", "selectionBias", "aux"});
const Signature& kBackwardSync = declare(
    "NativeLayer.backwardSync",
    {"x", "tokens", "k", "experts", "weights", "gradOutput", "into", "logits", "draws", "selectionBias", "aux"});
const Signature& kGateOf = declare("NativeLayer.gateOf", {"x", "logits", "tokens", "draws", "selectionBias"});
const Signature& kSetBiases = declare("NativeLayer.setBiases", {"routerBias", "selectionBias"});
const Signature& kRoutingWeightGradients =
    declare("NativeLayer.routingWeightGradients", {"x", "tokens", "k", "experts", "gradOutput"});
const Signature& kSlotOutputs = declare("NativeLayer.slotOutputs", {"x", "tokens", "k", "experts"});
const Signature& kApplyGradients = declare("NativeLayer.applyGradients", {"grads", "step"});
const Signature& kExportWeights = declare("NativeLayer.exportWeights", {"routerOnly"});
const Signature& kWriteExpertStore = declare("NativeLayer.writeExpertStore", {"path", "fingerprint"});
const Signature& kPrefetch = declare("NativeLayer.prefetch", {"x", "tokens"});

// On the JS thread, as the Promise settles: copies a staged output into `out`, checked again.
void deliver(Napi::Env env, const Staged& staged, const Napi::Value& out) {
  if (!staged.data) return;
  const bool intact = out.IsTypedArray() && out.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array &&
                      static_cast<int64_t>(out.As<Napi::Float32Array>().ElementLength()) == staged.length;
  if (!intact)
    throw_range_error(env, "expected out to keep its " + std::to_string(staged.length) +
                               " elements while the forward ran but got a detached or resized buffer");
  std::memcpy(out.As<Napi::Float32Array>().Data(), staged.data.get(),
              static_cast<size_t>(staged.length) * sizeof(float));
}

// A Float32Array of n elements (every one written by the call that fills it), or null when absent.
Napi::Value optional_array(Napi::Env env, bool present, int64_t n) {
  return present ? Napi::Value(new_float32_array(env, static_cast<size_t>(n))) : env.Null();
}
float* data_of(const Napi::Value& v) { return v.IsNull() ? nullptr : v.As<Napi::Float32Array>().Data(); }

// The arrays one call writes: new ones, or, where `into` has one of the name, that array overwritten. A training
// loop that hands each backward its previous gradients touches no fresh memory, whose first touch costs more than
// the backward itself in this VM (benchmarks/NOTES.md row 77). A reused array must be a Float32Array of its size
// that shares no memory with another array of the call (its inputs included: add them first with `input`).
class Destinations {
 public:
  Destinations(Napi::Env env, Napi::Value into, std::string path) : env_(env), into_(into), path_(std::move(path)) {}
  void input(const void* data, int64_t bytes) { used_.push_back({static_cast<const char*>(data), bytes}); }
  // Napi null when not present.
  Napi::Value array(const char* name, bool present, int64_t n, const Napi::Value& into) {
    if (!present) return env_.Null();
    if (into.IsObject()) {
      const Napi::Value v = into.As<Napi::Object>().Get(name);
      if (!v.IsUndefined() && !v.IsNull()) {
        const std::string where = path_ + "." + name;
        const char* data = reinterpret_cast<const char*>(float32_value(env_, v, where, n, false));
        const int64_t bytes = n * int64_t{sizeof(float)};
        for (const auto& [p, b] : used_)
          if (data < p + b && p < data + bytes)
            throw_range_error(env_, "expected " + where + " to share no memory with another array of the call but " +
                                        "got an overlapping one");
        used_.push_back({data, bytes});
        return v;
      }
    }
    return new_float32_array(env_, static_cast<size_t>(n));
  }
  Napi::Value array(const char* name, bool present, int64_t n) { return array(name, present, n, into_); }
  Napi::Value sub(const char* name) const {
    return into_.IsObject() ? into_.As<Napi::Object>().Get(name) : Napi::Value(env_.Undefined());
  }

 private:
  Napi::Env env_;
  Napi::Value into_;
  std::string path_;
  std::vector<std::pair<const char*, int64_t>> used_;
};

// { w1, w3, w2, b1, b3, b2 } for one set of experts in moe::ExpertWeightsOut's layout (weights read back, or their
// gradients): w1 and w2 always, w3 when gated, each bias when present (null otherwise); `out` points at them. The
// arrays are new, or those of `into` (see Destinations).
Napi::Object expert_arrays(Napi::Env env, const moe::ExpertShape& s, bool b1, bool b3, bool b2,
                           moe::ExpertWeightsOut* out, Destinations* dest = nullptr, Napi::Value into = {}) {
  const bool gated = moe::is_gated(s.activation);
  const int64_t e = s.num_experts, h = s.d_hidden, d = s.d_model;
  auto array = [&](const char* name, bool present, int64_t n) {
    return dest ? dest->array(name, present, n, into) : optional_array(env, present, n);
  };
  auto o = Napi::Object::New(env);
  o.Set("w1", array("w1", true, e * h * d));
  o.Set("w3", array("w3", gated, e * h * d));
  o.Set("w2", array("w2", true, e * d * h));
  o.Set("b1", array("b1", b1, e * h));
  o.Set("b3", array("b3", b3 && gated, e * h));
  o.Set("b2", array("b2", b2, e * d));
  *out = {data_of(o.Get("w1")), data_of(o.Get("w3")), data_of(o.Get("w2")),
          data_of(o.Get("b1")), data_of(o.Get("b3")), data_of(o.Get("b2"))};
  return o;
}

// On the JS thread, as an async backward settles: copies each gradient into the same-named array of `into` and puts
// that array in the result instead; every one is checked first (still a Float32Array of that length), so that a
// detached or resized one rejects the call with nothing written.
void deliver_gradients(Napi::Env env, Napi::Object result, Napi::Object into) {
  struct Pair {
    Napi::Object from;
    const char* name;
    Napi::Float32Array src, dst;
  };
  std::vector<Pair> pairs;
  const auto add = [&](Napi::Object from, Napi::Object to, const char* name, const std::string& path) {
    const Napi::Value src = from.Get(name), dst = to.Get(name);
    if (src.IsNull() || src.IsUndefined() || dst.IsNull() || dst.IsUndefined()) return;
    const Napi::Float32Array s = src.As<Napi::Float32Array>();
    const bool intact = dst.IsTypedArray() && dst.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array &&
                        dst.As<Napi::Float32Array>().ElementLength() == s.ElementLength();
    if (!intact)
      throw_range_error(env, "expected " + path + "." + name + " to keep its " + std::to_string(s.ElementLength()) +
                                 " elements while the backward ran but got a detached or resized array");
    pairs.push_back({from, name, s, dst.As<Napi::Float32Array>()});
  };
  for (const char* name : {"dx", "dWeights", "sharedGate"}) add(result, into, name, "into");
  for (const char* set : {"experts", "shared"}) {
    const Napi::Value r = result.Get(set), i = into.Get(set);
    if (!r.IsObject() || !i.IsObject()) continue;
    for (const char* name : {"w1", "w3", "w2", "b1", "b3", "b2"})
      add(r.As<Napi::Object>(), i.As<Napi::Object>(), name, std::string("into.") + set);
  }
  for (Pair& p : pairs) {
    std::memcpy(p.dst.Data(), p.src.Data(), p.src.ElementLength() * sizeof(float));
    p.from.Set(p.name, p.dst);
  }
}

// A layer packed off the event loop by NativeLayer.build, handed to the constructor as an External (which no
// JavaScript code can make).
struct BuiltLayer {
  std::shared_ptr<moe::Layer> layer;
  std::shared_ptr<moe::LayerRouter> router;
  moe::LayerConfig config;
};

// The checks of a collective call (an expert-parallel layer's forward): when they throw, the other ranks are told
// (Layer::collective_failed) before the error reaches the caller, so that none of them waits for this rank.
struct CollectiveChecks {
  moe::Layer* layer;
  bool passed = false;
  const int exceptions = std::uncaught_exceptions();
  ~CollectiveChecks() {
    if (passed || !layer || !layer->collective() || std::uncaught_exceptions() <= exceptions) return;
    try {
      layer->collective_failed();
    } catch (...) {  // (the caller's error is the one to report)
    }
  }
};

class NativeLayer : public Napi::ObjectWrap<NativeLayer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "NativeLayer",
        {StaticMethod("build", &NativeLayer::Build), InstanceMethod("forwardSync", &NativeLayer::ForwardSync),
         InstanceMethod("forward", &NativeLayer::Forward), InstanceMethod("gateOf", &NativeLayer::GateOf),
         InstanceMethod("setBiases", &NativeLayer::SetBiases),
         InstanceMethod("routingWeightGradients", &NativeLayer::RoutingWeightGradients),
         InstanceMethod("slotOutputs", &NativeLayer::SlotOutputs),
         InstanceMethod("lastTimings", &NativeLayer::LastTimings), InstanceMethod("dispose", &NativeLayer::Dispose),
         InstanceMethod("exportWeights", &NativeLayer::ExportWeights),
         InstanceMethod("backwardSync", &NativeLayer::BackwardSync), InstanceMethod("backward", &NativeLayer::Backward),
         InstanceMethod("applyGradients", &NativeLayer::ApplyGradients),
         InstanceMethod("packedBytes", &NativeLayer::PackedBytes),
         InstanceMethod("memoryBytes", &NativeLayer::MemoryBytes),
         InstanceMethod("collectiveFailed", &NativeLayer::CollectiveFailed),
         InstanceMethod("writeExpertStore", &NativeLayer::WriteExpertStore),
         InstanceMethod("prefetch", &NativeLayer::Prefetch)});
  }

  // (spec: NativeLayerSpec, read by name in spec.cpp)
  explicit NativeLayer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeLayer>(info) {
    tag_object(info.Env(), info.This().As<Napi::Object>(), kLayerTag);
    if (info[0].IsExternal()) {  // from Build, packed already
      const BuiltLayer* built = info[0].As<Napi::External<BuiltLayer>>().Data();
      layer_ = built->layer;
      router_ = built->router;
      config_ = built->config;
      memory_.report(info.Env(), static_cast<int64_t>(layer_->host_bytes()));
      return;
    }
    const Fields fields(info.Env(), info[0], "spec");
    const moe::LayerSpec spec = read_layer(fields);
    const moe::RouterSpec rule = read_router(fields.object("rule"), spec.config.experts.num_experts);
    run_guarded(info.Env(), [&] {
      layer_ = moe::make_layer(spec);
      router_ = std::make_shared<moe::LayerRouter>(rule, spec.config, spec.routing.rule);
    });
    config_ = spec.config;
    memory_.report(info.Env(), static_cast<int64_t>(layer_->host_bytes()));
  }

 private:
  std::shared_ptr<moe::Layer> get(Napi::Env env) const {
    if (!layer_) throw_type_error(env, "expected a layer that is not disposed but got a disposed layer");
    return layer_;
  }

  // NativeLayer.build(spec) -> Promise<NativeLayer>: the spec is checked here, and the weights packed on the job
  // thread (seconds for a Mixtral-sized layer). The spec's arrays are read until the Promise settles: the caller
  // must leave them alone until then (MoELayer.fromPretrained passes arrays of its own).
  static Napi::Value Build(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    auto scans = std::make_shared<DeferredScans>();
    const Fields fields(env, info[0], "spec", scans.get());
    auto spec = std::make_shared<moe::LayerSpec>(read_layer(fields));
    auto rule = std::make_shared<moe::RouterSpec>(read_router(fields.object("rule"), spec->config.experts.num_experts));
    auto built = std::make_shared<BuiltLayer>();
    built->config = spec->config;
    return run_async(
        env, moe::JobQueue::cpu, {info[0], info.This()},
        [spec, rule, built, scans] {
          for (const auto& scan : *scans) scan();
          built->layer = moe::make_layer(*spec);
          built->router = std::make_shared<moe::LayerRouter>(*rule, spec->config, spec->routing.rule);
        },
        [built](Napi::Env env, const std::vector<Napi::Value>& kept) -> Napi::Value {
          // The External lives only for the constructor call; the layer itself is shared.
          return kept[1].As<Napi::Function>().New({Napi::External<BuiltLayer>::New(env, built.get())});
        });
  }

  // { routerOnly? } -> { router, noiseRouter, sharedGate, experts: { w1, w3, w2, b1, b3, b2 }, shared } of
  // Float32Arrays (null where the layer has none, and every expert array with routerOnly), read back from the
  // packed weights.
  Napi::Value ExportWeights(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    auto layer = get(env);
    const Args a(info, kExportWeights);
    const bool router_only = a["routerOnly"].IsBoolean() && a["routerOnly"].As<Napi::Boolean>().Value();
    const moe::LayerConfig& c = config_;
    const moe::LayerWeightsPresent has = layer->weights_present();
    const int64_t d = c.experts.d_model;
    auto array = [&](bool present, int64_t n) { return optional_array(env, present, n); };
    auto experts = [&](const moe::ExpertShape& s, bool b1, bool b3, bool b2, moe::ExpertWeightsOut* out) {
      return expert_arrays(env, s, b1, b3, b2, out);
    };
    moe::LayerWeightsOut out;
    auto result = Napi::Object::New(env);
    result.Set("router", array(true, c.experts.num_experts * d));
    result.Set("noiseRouter", array(has.noise_router, c.experts.num_experts * d));
    result.Set("sharedGate", array(has.shared_gate, c.shared.num_experts * d));
    if (!router_only) {
      result.Set("experts", experts(c.experts, has.b1, has.b3, has.b2, &out.experts));
      result.Set("shared", c.shared.num_experts > 0 ? Napi::Value(experts(c.shared, has.shared_b1, has.shared_b3,
                                                                          has.shared_b2, &out.shared))
                                                    : env.Null());
    }
    out.router = data_of(result.Get("router"));
    out.noise_router = data_of(result.Get("noiseRouter"));
    out.shared_gate = data_of(result.Get("sharedGate"));
    run_guarded(env, [&] { layer->export_weights(out); });
    return result;
  }

  // Exposed to TypeScript, for checks it makes before it calls in.
  Napi::Value CollectiveFailed(const Napi::CallbackInfo& info) {
    auto layer = get(info.Env());
    if (layer->collective()) run_guarded(info.Env(), [&] { layer->collective_failed(); });
    return info.Env().Undefined();
  }

  // { x, tokens, out?, keep?, training?, auxLosses? } -> { output, logits, topK, experts, weights, tokensPerExpert,
  // dropped?, routerInput?, ranked?, draws?, auxLosses? }: the whole layer, routed in the core by its rule
  // (LayerRouter), on the calling thread. Absent where they are their default: dropped (0); routerInput (x with
  // jitter as the router read it; absent: x itself); ranked (the logits with exploration noise); draws (the
  // training forward's seeds, with which the backward routes it again; absent: an evaluation forward's, none);
  // auxLosses (the balance losses asked for (NativeAuxLossSpec), each { value, gradLogits, gradNoiseLogits }).
  Napi::Value ForwardSync(const Napi::CallbackInfo& info) { return forward(info, false); }
  // The same as a Promise: routed and run on the job thread (on the calling thread when the work is tiny). x is
  // copied first; an `out` array receives the output when the Promise settles (checked then to be intact).
  Napi::Value Forward(const Napi::CallbackInfo& info) { return forward(info, true); }

  Napi::Value forward(const Napi::CallbackInfo& info, bool promise) {
    const Napi::Env env = info.Env();
    const auto layer = get(env);
    CollectiveChecks checks{layer.get()};
    const Args args(info, promise ? kForward : kForwardSync);
    const int64_t d = config_.experts.d_model;
    const int64_t tokens = int_arg(args, "tokens", layer->collective() ? 0 : 1, kMaxDim);
    const int64_t k = router_->slots_per_token();
    slot_count(env, tokens, k);
    const bool async = promise && !layer->runs_inline(tokens * k);
    Napi::Float32Array output = output_arg(args, float32_arg(args, "x", tokens * d), tokens * d);
    const Held<float> x = held_float32(args, "x", tokens * d, async);
    check_finite(env, "x", x.data, tokens, d);
    const bool training = !args.absent("training") && bool_arg(args, "training");
    const std::vector<moe::losses::Spec> aux = read_aux_losses(env, args["auxLosses"]);
    const bool keep = !args.absent("keep") && bool_arg(args, "keep");
    // The results are made once the forward has run: their sizes are checked now, so that an impossible one costs
    // nothing (the logits, and the rule's float64 [T, E] arrays where it runs in the core).
    const size_t scores = static_cast<size_t>(tokens * config_.experts.num_experts);
    check_result_size(env, scores, sizeof(float));
    if (!aux.empty() || !router_->built_in(training)) check_result_size(env, scores, sizeof(double));
    const Staged staged = stage_output(args, tokens * d, async);
    float* out = staged.data ? staged.data.get() : output.Data();
    checks.passed = true;
    // (drawn now, on this thread: the seeds follow the order of the calls, whichever thread runs them)
    const moe::LayerRouter::Draws draws = router_->draw(training);
    auto routed = std::make_shared<moe::RoutedForward>();
    const auto run = [layer, router = router_, x, tokens, draws, aux, keep, out, routed, d] {
      router->forward(*layer, x.data, tokens, draws, aux, keep, out, *routed);
      check_output_finite(out, tokens * d);
    };
    const auto result = [routed, draws](Napi::Env env, const std::vector<Napi::Value>& a) -> Napi::Value {
      Napi::Object o = forward_result(env, a[0], *routed);
      if (draws.training) o.Set("draws", draws_object(env, draws));  // (an evaluation forward draws nothing)
      return o;
    };
    if (!promise) {
      run_guarded(env, run);
      return result(env, {output});
    }
    if (!async)
      return resolved(env, [&] {
        run_guarded(env, run);
        return result(env, {output});
      });
    return run_async(env, layer->queue(), {output}, run,
                     [staged, result](Napi::Env env, const std::vector<Napi::Value>& a) {
                       deliver(env, staged, a[0]);
                       return result(env, a);
                     });
  }

  static Napi::Object forward_result(Napi::Env env, const Napi::Value& output, const moe::RoutedForward& r) {
    const auto floats = [env](const std::vector<float>& v) {
      auto a = new_float32_array(env, v.size());
      std::copy(v.begin(), v.end(), a.Data());
      return a;
    };
    const auto ints = [env](const std::vector<int32_t>& v) {
      auto a = new_int32_array(env, v.size());
      std::copy(v.begin(), v.end(), a.Data());
      return a;
    };
    auto o = Napi::Object::New(env);
    o.Set("output", output);
    o.Set("logits", floats(r.logits));
    o.Set("topK", r.top_k);
    o.Set("experts", ints(r.experts));
    o.Set("weights", floats(r.weights));
    o.Set("tokensPerExpert", ints(r.tokens_per_expert));
    // (the rest only where they are not their default: every property costs a tiny forward ~0.1-0.2 us)
    if (r.dropped) o.Set("dropped", static_cast<double>(r.dropped));
    if (!r.router_input.empty()) o.Set("routerInput", floats(r.router_input));
    if (!r.ranked.empty()) {
      auto ranked = Napi::Float64Array::New(env, r.ranked.size());
      std::copy(r.ranked.begin(), r.ranked.end(), ranked.Data());
      o.Set("ranked", ranked);
    }
    if (!r.aux_losses.empty()) o.Set("auxLosses", aux_losses_array(env, r.aux_losses));
    return o;
  }

  // { x, logits: Float32Array [T * E], tokens, draws, selectionBias? } -> NativeGate: the rule's gate of a forward of
  // x that returned these logits and draws (routed again in the core: the same choices, drops and noise), on the
  // calling thread.
  Napi::Value GateOf(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    const auto layer = get(env);
    const Args args(info, kGateOf);
    const int64_t tokens = int_arg(args, "tokens", 1, kMaxDim);
    const int64_t e = config_.experts.num_experts;
    const Held<float> x = held_float32(args, "x", tokens * config_.experts.d_model, false);
    const Held<float> logits = held_float32(args, "logits", tokens * e, false);
    check_finite(env, "x", x.data, tokens, config_.experts.d_model);
    check_finite(env, "logits", logits.data, tokens, e);
    const moe::LayerRouter::Draws draws = read_draws(env, args["draws"], args["selectionBias"], e);
    moe::rules::Gate gate;
    run_guarded(env, [&] { gate = router_->gate_of(*layer, x.data, logits.data, tokens, draws); });
    return gate_object(env, gate);
  }

  // { routerBias?: Float32Array [E], selectionBias?: Float64Array [E] }: the router bias (of a layer that has one)
  // and sigmoidBias's selection bias for the forwards called from now on.
  Napi::Value SetBiases(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    get(env);
    const Args args(info, kSetBiases);
    const int64_t n = config_.experts.num_experts;
    const float* router_bias = float32_arg(args, "routerBias", n, true);
    if (router_bias) check_finite(env, "routerBias", router_bias, 1, n);
    const double* selection = args.absent("selectionBias") ? nullptr : finite_float64_arg(args, "selectionBias", n);
    run_guarded(env, [&] {
      if (router_bias) router_->set_router_bias(std::vector<float>(router_bias, router_bias + n));
      if (selection) router_->set_selection_bias(std::vector<double>(selection, selection + n));
    });
    return env.Undefined();
  }

  // { x, tokens, k, experts: Int32Array [T*k], weights: Float32Array [T*k], gradOutput: [T, dModel], into? } ->
  // { dx, dWeights, experts: { w1, w3, w2, b1, b3, b2 }, shared, sharedGate } (moe::LayerGradients; null where the
  // layer has no such weight), on the calling thread. `into`, of the result's shape, names arrays to overwrite
  // instead of allocating (Destinations).
  Napi::Value BackwardSync(const Napi::CallbackInfo& info) { return backward(info, false); }
  // The same, as a Promise: run on the job thread, its inputs copied, its gradients written into new arrays; those
  // named by `into` receive a copy when the Promise settles (checked then to be intact), as an
  // async forward's `out` does: a caller's array is never written while JavaScript can reach it.
  Napi::Value Backward(const Napi::CallbackInfo& info) { return backward(info, true); }

  Napi::Value backward(const Napi::CallbackInfo& info, bool promise) {
    const Napi::Env env = info.Env();
    auto layer = get(env);
    CollectiveChecks checks{layer.get()};
    const Args args(info, promise ? kBackward : kBackwardSync);
    const moe::LayerConfig& c = config_;
    const int64_t d = c.experts.d_model, e = c.experts.num_experts;
    const int64_t tokens = int_arg(args, "tokens", layer->collective() ? 0 : 1, kMaxDim);
    const int64_t k = int_arg(args, "k", 1, e);
    slot_count(env, tokens, k + c.shared.num_experts);
    elements(env, "the slot gradients", {tokens, k + c.shared.num_experts, d});
    const Held<float> x = held_float32(args, "x", tokens * d, promise);
    const Held<int32_t> experts = held_int32(args, "experts", tokens * k, promise);
    const Held<float> weights = held_float32(args, "weights", tokens * k, promise);
    const Held<float> grad = held_float32(args, "gradOutput", tokens * d, promise);
    const Napi::Value into = args["into"];
    check_finite(env, "x", x.data, tokens, d);
    check_experts(env, experts.data, tokens * k, e);
    check_finite(env, "weights", weights.data, tokens, k);
    check_finite(env, "gradOutput", grad.data, tokens, d);
    // The router's part: the forward routed again from its logits and draws (the same choices, drops and noise),
    // then each balance loss's dL/dlogits, added in order.
    const Held<float> logits = held_float32(args, "logits", tokens * e, promise);
    check_finite(env, "logits", logits.data, tokens, e);
    const moe::LayerRouter::Draws draws = read_draws(env, args["draws"], args["selectionBias"], e);
    auto aux = std::make_shared<std::vector<std::vector<double>>>();
    auto aux_noise = std::make_shared<std::vector<std::vector<double>>>();
    if (!args.absent("aux")) {
      const Napi::Value list = args["aux"];
      if (!list.IsArray()) throw_type_error(env, "expected aux to be an array of { gradLogits, gradNoiseLogits? }");
      const Napi::Array a = list.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        const Fields f(env, a.Get(i), "aux[" + std::to_string(i) + "]");
        const auto read = [&](const char* name) {
          const double* p = float64_value(env, f.value(name), "aux[" + std::to_string(i) + "]." + name, tokens * e);
          return std::vector<double>(p, p + tokens * e);
        };
        aux->push_back(read("gradLogits"));
        if (f.present("gradNoiseLogits")) aux_noise->push_back(read("gradNoiseLogits"));
      }
    }
    const moe::LayerWeightsPresent has = layer->weights_present();
    // An async call writes arrays of its own; `into` is checked now and delivered to when it settles.
    Destinations dest(env, promise ? env.Undefined() : into, "into");
    Destinations checked(env, into, "into");
    for (Destinations* dd : {&dest, &checked})
      for (const auto& [p, bytes] : {std::pair<const void*, int64_t>{x.data, tokens * d * 4},
                                     {experts.data, tokens * k * 4},
                                     {weights.data, tokens * k * 4},
                                     {grad.data, tokens * d * 4}})
        dd->input(p, bytes);
    auto g = std::make_shared<moe::LayerGradients>();
    auto result = Napi::Object::New(env);
    result.Set("dx", dest.array("dx", true, tokens * d));
    result.Set("dWeights", dest.array("dWeights", true, tokens * k));
    result.Set("experts",
               expert_arrays(env, c.experts, has.b1, has.b3, has.b2, &g->experts, &dest, dest.sub("experts")));
    result.Set("shared", c.shared.num_experts > 0
                             ? Napi::Value(expert_arrays(env, c.shared, has.shared_b1, has.shared_b3, has.shared_b2,
                                                         &g->shared, &dest, dest.sub("shared")))
                             : env.Null());
    result.Set("sharedGate", dest.array("sharedGate", has.shared_gate, c.shared.num_experts * d));
    g->dx = data_of(result.Get("dx"));
    g->d_weights = data_of(result.Get("dWeights"));
    g->d_shared_gate = data_of(result.Get("sharedGate"));
    checks.passed = true;
    auto router_grads = std::make_shared<moe::RouterGradients>();
    const auto run = [layer, router = router_, x, tokens, k, experts, weights, grad, g, draws, logits, aux, aux_noise,
                      router_grads] {
      std::vector<const double*> a, an;
      for (const auto& v : *aux) a.push_back(v.data());
      for (const auto& v : *aux_noise) an.push_back(v.data());
      router->backward(*layer, x.data, tokens, logits.data, draws, static_cast<int>(k), experts.data, weights.data,
                       grad.data, a, an, *g, *router_grads);
    };
    if (!promise) {
      run_guarded(env, run);
      result.Set("router", router_result(env, *router_grads));
      report_memory(env);
      return result;
    }
    if (into.IsObject()) {  // the destinations' sizes and overlaps, checked before the work starts
      (void)checked.array("dx", true, tokens * d);
      (void)checked.array("dWeights", true, tokens * k);
      moe::ExpertWeightsOut unused;
      expert_arrays(env, c.experts, has.b1, has.b3, has.b2, &unused, &checked, checked.sub("experts"));
      if (c.shared.num_experts > 0)
        expert_arrays(env, c.shared, has.shared_b1, has.shared_b3, has.shared_b2, &unused, &checked,
                      checked.sub("shared"));
      (void)checked.array("sharedGate", has.shared_gate, c.shared.num_experts * d);
    }
    std::vector<Napi::Value> keep{result, info.This()};
    if (into.IsObject()) keep.push_back(into);
    return run_async(env, layer->queue(), keep, run,
                     [router_grads](Napi::Env env, const std::vector<Napi::Value>& kept) -> Napi::Value {
                       Napi::Object r = kept[0].As<Napi::Object>();
                       r.Set("router", router_result(env, *router_grads));
                       if (kept.size() > 2) deliver_gradients(env, r, kept[2].As<Napi::Object>());
                       NativeLayer::Unwrap(kept[1].As<Napi::Object>())->report_memory(env);
                       return r;
                     });
  }

  // The router's gradients of a backward: { gradWeights, gradLogits, gradRouter, gradNoiseLogits, gradNoiseRouter,
  // gradRouterBias } (Float64Arrays, the bias's a Float32Array; null where the layer has no such part).
  static Napi::Object router_result(Napi::Env env, const moe::RouterGradients& r) {
    const auto doubles = [env](const std::vector<double>& v, bool present) -> Napi::Value {
      if (!present) return env.Null();
      auto a = Napi::Float64Array::New(env, v.size());
      std::copy(v.begin(), v.end(), a.Data());
      return a;
    };
    auto o = Napi::Object::New(env);
    o.Set("gradWeights", doubles(r.grad_weights, true));
    o.Set("gradLogits", doubles(r.grad_logits, true));
    o.Set("gradRouter", doubles(r.grad_router, true));
    o.Set("gradNoiseLogits", doubles(r.grad_noise_logits, !r.grad_noise_router.empty()));
    o.Set("gradNoiseRouter", doubles(r.grad_noise_router, !r.grad_noise_router.empty()));
    if (r.grad_router_bias.empty()) {
      o.Set("gradRouterBias", env.Null());
    } else {
      auto b = new_float32_array(env, r.grad_router_bias.size());
      std::copy(r.grad_router_bias.begin(), r.grad_router_bias.end(), b.Data());
      o.Set("gradRouterBias", b);
    }
    return o;
  }

  // { grads: { router, noiseRouter, sharedGate, experts: { w1, w3, w2, b1, b3, b2 }, shared }, step: { kind, lr,
  // momentum, weightDecay, beta1, beta2, eps, step } }: one optimizer step on the packed weights, in place. Every
  // array optional (null: that parameter stays), finite, of its parameter's size.
  Napi::Value ApplyGradients(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    auto layer = get(env);
    CollectiveChecks checks{layer.get()};
    const moe::LayerConfig& c = config_;
    const int64_t d = c.experts.d_model;
    const Args args(info, kApplyGradients);
    const Fields f(env, args["grads"], "grads");
    moe::ParameterGradients g;
    g.router = f.float32("router", c.experts.num_experts, d, true);
    g.noise_router = f.float32("noiseRouter", c.experts.num_experts, d, true);
    g.shared_gate = f.float32("sharedGate", std::max<int64_t>(c.shared.num_experts, 1), d, true);
    auto experts = [&](const char* name, const moe::ExpertShape& s, moe::ExpertGradientsIn* in) {
      if (!f.present(name)) return;
      const Fields x = f.object(name);
      const int64_t e = s.num_experts, h = s.d_hidden;
      in->w1 = x.float32("w1", e * h, d, true);
      in->w3 = x.float32("w3", e * h, d, true);
      in->w2 = x.float32("w2", e * d, h, true);
      in->b1 = x.float32("b1", e, h, true);
      in->b3 = x.float32("b3", e, h, true);
      in->b2 = x.float32("b2", e, d, true);
    };
    experts("experts", c.experts, &g.experts);
    if (c.shared.num_experts > 0) experts("shared", c.shared, &g.shared);
    const Fields o(env, args["step"], "step");
    moe::OptimizerStep step;
    const std::string kind = o.string("kind");
    if (kind != "sgd" && kind != "adamw")
      throw_range_error(env, "expected step.kind to be 'sgd' or 'adamw' but got '" + kind + "'");
    step.kind = kind == "sgd" ? moe::OptimizerStep::Kind::sgd : moe::OptimizerStep::Kind::adamw;
    step.lr = static_cast<float>(o.number("lr"));
    step.momentum = static_cast<float>(o.number("momentum"));
    step.weight_decay = static_cast<float>(o.number("weightDecay"));
    step.beta1 = static_cast<float>(o.number("beta1"));
    step.beta2 = static_cast<float>(o.number("beta2"));
    step.eps = static_cast<float>(o.number("eps"));
    step.step = o.integer("step", 1, int64_t{1} << 53);
    checks.passed = true;
    run_guarded(env, [&] { layer->apply_gradients(g, step); });
    report_memory(env);
    return env.Undefined();
  }

  // What the layer holds now, told to V8 (a backward and an optimizer step add their state beside the weights).
  void report_memory(Napi::Env env) {
    if (layer_) memory_.report(env, static_cast<int64_t>(layer_->host_bytes()));
  }

  Napi::Value RoutingWeightGradients(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    auto layer = get(env);
    const Args args(info, kRoutingWeightGradients);
    const int64_t d = config_.experts.d_model, e = config_.experts.num_experts;
    const int64_t tokens = int_arg(args, "tokens", 1, kMaxDim);
    const int64_t k = int_arg(args, "k", 1, e);
    slot_count(env, tokens, k);
    elements(env, "the slot outputs", {tokens, k, d});
    const Held<float> x = held_float32(args, "x", tokens * d, false);
    const Held<int32_t> experts = held_int32(args, "experts", tokens * k, false);
    const Held<float> grad = held_float32(args, "gradOutput", tokens * d, false);
    check_finite(env, "x", x.data, tokens, d);
    check_experts(env, experts.data, tokens * k, e);
    check_finite(env, "gradOutput", grad.data, tokens, d);
    auto out = Napi::Float64Array::New(env, static_cast<size_t>(tokens * k));
    run_guarded(env, [&] {
      moe::routing_weight_gradients(*layer, x.data, tokens, static_cast<int>(k), experts.data, grad.data, out.Data());
    });
    return out;
  }

  // { x, tokens, k, experts: Int32Array [T*k] } -> Float32Array [T * k * dModel]
  Napi::Value SlotOutputs(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    auto layer = get(env);
    const Args args(info, kSlotOutputs);
    const moe::LayerConfig& c = layer->config();
    const int64_t d = c.experts.d_model, e = c.experts.num_experts;
    const int64_t tokens = int_arg(args, "tokens", 1, kMaxDim);
    const int64_t k = int_arg(args, "k", 1, e);
    slot_count(env, tokens, k);
    const Held<float> x = held_float32(args, "x", tokens * d, false);
    const Held<int32_t> experts = held_int32(args, "experts", tokens * k, false);
    check_finite(env, "x", x.data, tokens, d);
    check_experts(env, experts.data, tokens * k, e);
    auto out = new_float32_array(env, static_cast<size_t>(elements(env, "the slot outputs", {tokens, k, d})));
    run_guarded(env, [&] { layer->slot_outputs(x.data, tokens, static_cast<int>(k), experts.data, out.Data()); });
    return out;
  }

  Napi::Value LastTimings(const Napi::CallbackInfo& info) {
    moe::LayerTimings t;
    run_guarded(info.Env(), [&] { t = get(info.Env())->last_timings(); });
    auto o = Napi::Object::New(info.Env());
    o.Set("router", t.router);
    o.Set("routing", t.routing);
    o.Set("dispatch", t.dispatch);
    o.Set("experts", t.experts);
    o.Set("combine", t.combine);
    o.Set("total", t.total);
    o.Set("exchange", t.exchange);
    o.Set("exchangeBytesSent", t.exchange_bytes_sent);
    o.Set("exchangeBytesReceived", t.exchange_bytes_received);
    return o;
  }

  template <class F>
  static Napi::Value resolved(Napi::Env env, F&& compute) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Resolve(compute());
    return deferred.Promise();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    layer_.reset();  // a forward in flight holds its own reference; the memory goes when it settles
    memory_.release();
    return info.Env().Undefined();
  }

  // (bytes: what the layer holds now; reported: what V8 was last told it holds)
  Napi::Value MemoryBytes(const Napi::CallbackInfo& info) {
    const auto layer = get(info.Env());
    Napi::Object r = Napi::Object::New(info.Env());
    r.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(layer->host_bytes())));
    r.Set("reported", Napi::Number::New(info.Env(), static_cast<double>(memory_.bytes())));
    return r;
  }

  // { path, fingerprint } -> Promise<void>: the routed experts, packed, written to an expert store on the job thread.
  Napi::Value WriteExpertStore(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    auto layer = get(env);
    const Args a(info, kWriteExpertStore);
    const std::string path = string_value(env, a["path"], "path");
    const std::string fingerprint = string_value(env, a["fingerprint"], "fingerprint");
    return run_async(
        env, moe::JobQueue::cpu, {info.This()},
        [layer, path, fingerprint] { layer->write_expert_store(path, fingerprint); },
        [](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value { return env.Undefined(); });
  }

  // { x, tokens } -> the expert reads started (a layer reading its experts through a cache; others: 0).
  Napi::Value Prefetch(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    auto layer = get(env);
    const Args a(info, kPrefetch);
    const int64_t d = config_.experts.d_model;
    const int64_t tokens = int_arg(a, "tokens", 1, kMaxDim);
    const Held<float> x = held_float32(a, "x", tokens * d, false);
    check_finite(env, "x", x.data, tokens, d);
    int64_t started = 0;
    run_guarded(env, [&] { started = layer->prefetch(x.data, tokens); });
    return Napi::Number::New(env, static_cast<double>(started));
  }

  Napi::Value PackedBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(get(info.Env())->packed_bytes()));
  }

  std::shared_ptr<moe::Layer> layer_;
  std::shared_ptr<moe::LayerRouter> router_;  // the layer's routing rule and training randomness (core)
  moe::LayerConfig config_;
  ReportedMemory memory_;  // the layer's host memory (packed weights on the CPU)
};

}  // namespace

void init_layer(Napi::Env env, Napi::Object exports) { exports.Set("NativeLayer", NativeLayer::Define(env)); }

}  // namespace moe_binding
