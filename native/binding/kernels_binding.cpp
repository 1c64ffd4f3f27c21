// The building blocks, one function each, over plain typed arrays (shapes passed explicitly).
#include "kernels_binding.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "async_job.h"
#include "moe/moe.h"
#include "reported_memory.h"
#include "result_arrays.h"
#include "spec.h"
#include "type_tags.h"

namespace moe_binding {

namespace {

const Signature& kRouterLogits = declare("routerLogits", {"x", "tokens", "dModel", "router", "numExperts"});
Napi::Value RouterLogits(const Napi::CallbackInfo& info) {
  const Args a(info, kRouterLogits);
  const int64_t tokens = int_arg(a, "tokens", 1, kMaxDim);
  const int64_t d_model = int_arg(a, "dModel", 1, kMaxDim);
  const int64_t experts = int_arg(a, "numExperts", 1, kMaxExperts);
  const Held<float> x = held_float32(a, "x", tokens * d_model, false);
  const Held<float> router = held_float32(a, "router", experts * d_model, false);
  check_finite(info.Env(), "x", x.data, tokens, d_model);
  check_finite(info.Env(), "router", router.data, experts, d_model);
  auto logits = new_float32_array(info.Env(), static_cast<size_t>(tokens * experts));
  moe::router_logits(x.data, tokens, d_model, router.data, experts, logits.Data());
  return logits;
}

// What both router-gradient bindings open with: { gradLogits: Float64Array [T*E], tokens, numExperts, dModel }.
struct RouterGradientArgs {
  int64_t tokens, experts, d_model;
  const double* grad;
};
RouterGradientArgs router_gradient_args(const Args& args) {
  RouterGradientArgs a;
  a.tokens = int_arg(args, "tokens", 1, kMaxDim);
  a.experts = int_arg(args, "numExperts", 1, kMaxElements);
  a.d_model = int_arg(args, "dModel", 1, kMaxDim);
  a.grad = finite_float64_arg(args, "gradLogits", elements(args.Env(), "gradLogits", {a.tokens, a.experts}));
  return a;
}

// { gradLogits, x: Float64Array or Float32Array [T*dModel], tokens, numExperts, dModel } -> Float64Array [E*dModel]
const Signature& kRouterWeightGradient =
    declare("routerWeightGradient", {"gradLogits", "x", "tokens", "numExperts", "dModel"});
Napi::Value RouterWeightGradient(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const Args args(info, kRouterWeightGradient);
  const RouterGradientArgs a = router_gradient_args(args);
  const int64_t tokens = a.tokens, experts = a.experts, d_model = a.d_model;
  const double* grad = a.grad;
  const int64_t x_count = elements(env, "x", {tokens, d_model});
  auto out = Napi::Float64Array::New(env, static_cast<size_t>(elements(env, "the gradient", {experts, d_model})));
  // x as float64, or the layer's float32 input as it is (widened exactly while read: no float64 copy of it).
  if (args["x"].IsTypedArray() && args["x"].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    const Held<float> x = held_float32(args, "x", x_count, false);
    check_finite(env, "x", x.data, tokens, d_model);
    run_guarded(env, [&] { moe::router_weight_gradient(grad, x.data, tokens, experts, d_model, out.Data()); });
  } else {
    const double* x = finite_float64_arg(args, "x", x_count);
    run_guarded(env, [&] { moe::router_weight_gradient(grad, x, tokens, experts, d_model, out.Data()); });
  }
  return out;
}

// { gradLogits, router: Float32Array [E*dModel], tokens, numExperts, dModel, dx: Float32Array [T*dModel] } ->
// undefined: dx += gradLogits router, in place.
const Signature& kRouterInputGradient =
    declare("routerInputGradient", {"gradLogits", "router", "tokens", "numExperts", "dModel", "dx"});
Napi::Value RouterInputGradient(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const Args args(info, kRouterInputGradient);
  const RouterGradientArgs a = router_gradient_args(args);
  const int64_t tokens = a.tokens, experts = a.experts, d_model = a.d_model;
  const double* grad = a.grad;
  const float* router = float32_arg(args, "router", elements(env, "router", {experts, d_model}));
  // dx is written in place: the caller's own array (lib/layer-backward.ts passes the backward's new dx).
  float* dx = const_cast<float*>(float32_arg(args, "dx", elements(env, "dx", {tokens, d_model})));
  run_guarded(env, [&] { moe::router_input_gradient(grad, router, tokens, experts, d_model, dx); });
  return env.Undefined();
}

const Signature& kTopK = declare("topK", {"logits", "tokens", "numExperts", "k", "normalize"});
Napi::Value TopK(const Napi::CallbackInfo& info) {
  const Args a(info, kTopK);
  const int64_t tokens = int_arg(a, "tokens", 1, kMaxDim);
  const int64_t experts = int_arg(a, "numExperts", 1, kMaxExperts);
  const int64_t k = int_arg(a, "k", 1, experts);
  const bool normalize = bool_arg(a, "normalize");
  const Held<float> logits = held_float32(a, "logits", tokens * experts, false);
  check_finite(info.Env(), "logits", logits.data, tokens, experts);
  auto chosen = new_int32_array(info.Env(), static_cast<size_t>(tokens * k));
  auto weights = new_float32_array(info.Env(), static_cast<size_t>(tokens * k));
  moe::top_k_softmax(logits.data, tokens, experts, static_cast<int>(k), normalize, chosen.Data(), weights.Data());
  auto out = Napi::Object::New(info.Env());
  out.Set("experts", chosen);
  out.Set("weights", weights);
  return out;
}

const Signature& kDispatch = declare("dispatch", {"experts", "numExperts"});
Napi::Value Dispatch(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const Args a(info, kDispatch);
  if (!a["experts"].IsTypedArray()) throw_type_error(env, "expected experts to be an Int32Array");
  const int64_t slots = slot_count(env, static_cast<int64_t>(a["experts"].As<Napi::TypedArray>().ElementLength()), 1);
  const int64_t experts = int_arg(a, "numExperts", 1, kMaxExperts);
  const int32_t* chosen = int32_arg(a, "experts", slots);
  check_experts(env, chosen, slots, experts);
  auto counts = new_int32_array(env, static_cast<size_t>(experts));
  auto offsets = new_int32_array(env, static_cast<size_t>(experts + 1));
  auto order = new_int32_array(env, static_cast<size_t>(slots));
  moe::dispatch(chosen, slots, experts, counts.Data(), offsets.Data(), order.Data());
  auto out = Napi::Object::New(env);
  out.Set("tokensPerExpert", counts);
  out.Set("expertOffsets", offsets);
  out.Set("order", order);
  return out;
}

// Experts packed once for expertFFN; dispose() frees them (calls in flight keep their own reference).
class NativeExperts : public Napi::ObjectWrap<NativeExperts> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeExperts",
                       {InstanceMethod("dispose", &NativeExperts::Dispose),
                        InstanceMethod("packedBytes", &NativeExperts::PackedBytes)});
  }
  // (spec: NativeExpertSpec, read by name in spec.cpp)
  explicit NativeExperts(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeExperts>(info) {
    tag_object(info.Env(), info.This().As<Napi::Object>(), kExpertsTag);
    const ExpertSpec spec = read_experts(Fields(info.Env(), info[0], "spec"));
    packed_ = moe::pack_experts(spec.shape, spec.weights);
    memory_.report(info.Env(), static_cast<int64_t>(moe::packed_bytes(*packed_)));
  }
  std::shared_ptr<const moe::PackedExperts> get(Napi::Env env) const {
    if (!packed_) throw_type_error(env, "expected experts that are not disposed but got disposed experts");
    return packed_;
  }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    packed_.reset();  // a call in flight holds its own reference; the memory goes when it settles
    memory_.release();
    return info.Env().Undefined();
  }
  Napi::Value PackedBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(moe::packed_bytes(*get(info.Env()))));
  }
  std::shared_ptr<const moe::PackedExperts> packed_;
  ReportedMemory memory_;
};

// { experts, x, tokens, k, expertOffsets, order } -> Float32Array [tokens * k * dModel], or a Promise of it when
// `async` (expertFFNAsync).
const Signature& kExpertFFN = declare("expertFFN", {"experts", "x", "tokens", "k", "expertOffsets", "order"});
const Signature& kExpertFFNAsync = declare("expertFFNAsync", {"experts", "x", "tokens", "k", "expertOffsets", "order"});
Napi::Value expert_ffn(const Napi::CallbackInfo& info, bool async) {
  const Napi::Env env = info.Env();
  const Args a(info, async ? kExpertFFNAsync : kExpertFFN);
  const Napi::Value handle = a["experts"];
  auto packed = unwrap_tagged<NativeExperts>(env, handle, kExpertsTag, "packed experts")->get(env);
  const moe::ExpertShape& s = moe::packed_shape(*packed);
  const int64_t tokens = int_arg(a, "tokens", 1, kMaxDim);
  const int64_t k = int_arg(a, "k", 1, s.num_experts);
  const int64_t slots = slot_count(env, tokens, k);
  // The plan is always copied (it is small) and x when the job runs later: what is checked is what is read.
  const Held<float> x = held_float32(a, "x", tokens * s.d_model, async);
  const Held<int32_t> offsets = held_int32(a, "expertOffsets", s.num_experts + 1, true);
  const Held<int32_t> order = held_int32(a, "order", slots, true);
  check_finite(env, "x", x.data, tokens, s.d_model);
  // The plan must address rows inside the buffers (monotone offsets within [0, slots], slots in range) and list
  // each slot at most once: a repeated slot would leave another unwritten and race on its own row.
  if (offsets.data[0] != 0)
    throw_range_error(env, "expected expertOffsets[0] = 0 but got " + std::to_string(offsets.data[0]));
  for (int64_t e = 0; e < s.num_experts; ++e)
    if (offsets.data[e + 1] < offsets.data[e] || offsets.data[e + 1] > slots)
      throw_range_error(env, "expected expertOffsets to be non-decreasing and at most " + std::to_string(slots) +
                                 " but got expertOffsets[" + std::to_string(e + 1) +
                                 "] = " + std::to_string(offsets.data[e + 1]));
  std::vector<uint8_t> seen(static_cast<size_t>(slots), 0);
  for (int64_t i = 0; i < offsets.data[s.num_experts]; ++i) {
    const int32_t slot = order.data[i];
    if (slot < 0 || slot >= slots)
      throw_range_error(env, "expected order[" + std::to_string(i) + "] in [0, " + std::to_string(slots - 1) +
                                 "] but got " + std::to_string(slot));
    if (seen[slot]++)
      throw_range_error(env, "expected order to list each slot at most once but got slot " + std::to_string(slot) +
                                 " again at order[" + std::to_string(i) + "]");
  }
  auto out = new_float32_array(env, static_cast<size_t>(elements(env, "the slot outputs", {slots, s.d_model})));
  float* out_data = out.Data();
  auto work = [packed, x, tokens, k, offsets, order, out_data] {
    moe::expert_ffn(*packed, x.data, tokens, static_cast<int>(k), offsets.data, order.data, out_data);
  };
  if (!async) {
    run_guarded(env, work);
    return out;
  }
  return run_async(env, moe::JobQueue::cpu, {out, handle}, work,
                   [](Napi::Env, const std::vector<Napi::Value>& kept) { return kept[0]; });
}

Napi::Value ExpertFFNSync(const Napi::CallbackInfo& info) { return expert_ffn(info, false); }
Napi::Value ExpertFFNAsync(const Napi::CallbackInfo& info) { return expert_ffn(info, true); }

// { slotOutputs, weights, tokens, k, dModel } -> Float32Array [tokens * dModel]
const Signature& kCombine = declare("combine", {"slotOutputs", "weights", "tokens", "k", "dModel"});
Napi::Value Combine(const Napi::CallbackInfo& info) {
  const Args a(info, kCombine);
  const int64_t tokens = int_arg(a, "tokens", 1, kMaxDim);
  const int64_t k = int_arg(a, "k", 1, kMaxExperts);
  const int64_t d_model = int_arg(a, "dModel", 1, kMaxDim);
  const int64_t slots = slot_count(info.Env(), tokens, k);
  const Held<float> slot_out =
      held_float32(a, "slotOutputs", elements(info.Env(), "slotOutputs", {slots, d_model}), false);
  const Held<float> weights = held_float32(a, "weights", slots, false);
  check_finite(info.Env(), "slotOutputs", slot_out.data, slots, d_model);
  check_finite(info.Env(), "weights", weights.data, tokens, k);
  auto out = new_float32_array(info.Env(), static_cast<size_t>(tokens * d_model));
  moe::combine(slot_out.data, weights.data, tokens, static_cast<int>(k), d_model, out.Data());
  return out;
}

// The shape, dtype and group of a quantize / dequantize call (its rows, k, dtype, groupSize): rows of k inputs, int8
// or int4, groups of a multiple of 8 that divides k, or 0 for one per row (check_group_size).
struct QuantCall {
  int64_t rows, k, g, code_bytes, scales;  // g in inputs (k for one per row); code_bytes and scales per row
  moe::WeightDtype dtype;
};

QuantCall quant_call(const Args& a) {
  QuantCall c;
  c.rows = int_arg(a, "rows", 1, kMaxElements);
  c.k = int_arg(a, "k", 1, kMaxDim);
  const std::string name = string_value(a.Env(), a["dtype"], "dtype");
  if (!moe::parse_weight_dtype(name, &c.dtype) || !moe::is_quantized(c.dtype))
    throw_range_error(a.Env(), "expected dtype to be 'int8', 'int4', 'q4_k', 'q5_k' or 'q6_k' but got '" + name + "'");
  const int64_t g = int_arg(a, "groupSize", 0, kMaxDim);
  check_group_size(a.Env(), c.dtype, g, c.k, "the row length (" + std::to_string(c.k) + ")");
  c.g = g > 0 ? g : c.k;
  c.code_bytes = moe::code_bytes(c.dtype, c.k);
  c.scales = moe::scales_per_row(c.dtype, c.k, c.g);
  return c;
}

// { tensor: Float32Array [rows * k], rows, k, dtype, groupSize } -> { codes: Uint8Array, scales: Uint16Array }
const Signature& kQuantize = declare("quantize", {"tensor", "rows", "k", "dtype", "groupSize"});
Napi::Value Quantize(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const Args a(info, kQuantize);
  const QuantCall c = quant_call(a);
  const Held<float> values = held_float32(a, "tensor", elements(env, "tensor", {c.rows, c.k}), false);
  check_finite(env, "tensor", values.data, c.rows, c.k);
  const float limit = moe::max_quantizable(c.dtype);
  const std::string outside =
      values_within("tensor", values.data, {}, c.rows * c.k, limit,
                    "|w| <= " + std::to_string(static_cast<int64_t>(limit)) + " (a float16 scale's range)");
  if (!outside.empty()) throw_range_error(env, outside);
  auto codes = Napi::Uint8Array::New(env, static_cast<size_t>(c.rows * c.code_bytes));
  auto scales = Napi::Uint16Array::New(env, static_cast<size_t>(c.rows * c.scales));
  moe::quantize_rows(c.dtype, values.data, c.rows, c.k, c.g, codes.Data(), scales.Data());
  auto out = Napi::Object::New(env);
  out.Set("codes", codes);
  out.Set("scales", scales);
  return out;
}

// { q: { codes: Uint8Array | Int8Array, scales: Uint16Array }, rows, k, dtype, groupSize } -> Float32Array [rows * k]
const Signature& kDequantize = declare("dequantize", {"q", "rows", "k", "dtype", "groupSize"});
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const Args a(info, kDequantize);
  const QuantCall c = quant_call(a);
  const Fields q(env, a["q"], "q");
  const uint8_t* codes =
      bytes_value(env, q.value("codes"), "q.codes", elements(env, "q.codes", {c.rows, c.code_bytes}));
  const uint16_t* scales =
      uint16_value(env, q.value("scales"), "q.scales", elements(env, "q.scales", {c.rows, c.scales}));
  auto out = new_float32_array(env, static_cast<size_t>(c.rows * c.k));
  for (int64_t r = 0; r < c.rows; ++r)
    moe::dequantize_row(c.dtype, codes + r * c.code_bytes, scales + r * c.scales, c.k, c.g, out.Data() + r * c.k);
  return out;
}

}  // namespace

void init_kernels(Napi::Env env, Napi::Object exports) {
  exports.Set("routerLogits", Napi::Function::New(env, RouterLogits));
  exports.Set("topK", Napi::Function::New(env, TopK));
  exports.Set("routerWeightGradient", Napi::Function::New(env, RouterWeightGradient));
  exports.Set("routerInputGradient", Napi::Function::New(env, RouterInputGradient));
  exports.Set("dispatch", Napi::Function::New(env, Dispatch));
  exports.Set("expertFFN", Napi::Function::New(env, ExpertFFNSync));
  exports.Set("expertFFNAsync", Napi::Function::New(env, ExpertFFNAsync));
  exports.Set("combine", Napi::Function::New(env, Combine));
  exports.Set("quantize", Napi::Function::New(env, Quantize));
  exports.Set("largeBuffer", Napi::Function::New(env, LargeBuffer));
  exports.Set("dequantize", Napi::Function::New(env, Dequantize));
  exports.Set("NativeExperts", NativeExperts::Define(env));
}

}  // namespace moe_binding
