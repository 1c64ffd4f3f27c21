#include "spec.h"

#include <cmath>
#include <stdexcept>
#include <utility>

#include "../src/cpu/half.h"
#include "args.h"
#include "expert_cache_binding.h"

namespace moe_binding {

namespace {}

Fields::Fields(Napi::Env env, const Napi::Value& value, std::string path, DeferredScans* deferred)
    : env_(env), path_(std::move(path)), deferred_(deferred) {
  if (!value.IsObject() || value.IsTypedArray() || value.IsArray())
    throw_type_error(env, "expected " + path_ + " to be an object");
  object_ = value.As<Napi::Object>();
}

int64_t Fields::integer(const char* name, int64_t min, int64_t max) const {
  return int_value(env_, object_.Get(name), path(name), min, max);
}
bool Fields::boolean(const char* name) const { return bool_value(env_, object_.Get(name), path(name)); }
std::string Fields::string(const char* name) const { return string_value(env_, object_.Get(name), path(name)); }
double Fields::number(const char* name) const { return number_value(env_, object_.Get(name), path(name)); }
void Fields::matrix(const char* name, int64_t rows, int64_t cols, moe::WeightDtype dtype, int64_t g, bool optional,
                    const float** values, moe::QuantizedSource* quantized, moe::HalfSource* half) const {
  *values = nullptr;
  *quantized = {};
  *half = {};
  const Napi::Value v = object_.Get(name);
  if (v.IsObject() && !v.IsTypedArray() && v.As<Napi::Object>().Has("bits")) {
    const Fields h(env_, v, path(name));
    const std::string format = h.string("format");
    if (format != "bfloat16" && format != "float16")
      throw_range_error(env_,
                        "expected " + h.path("format") + " to be 'bfloat16' or 'float16' but got '" + format + "'");
    half->bfloat16 = format == "bfloat16";
    half->bits = uint16_value(env_, h.object_.Get("bits"), h.path("bits"), rows * cols);
    const uint16_t* bits = half->bits;
    scan([bits, rows, cols, format, where = h.path("bits")]() -> std::string {
      // An all-ones exponent is an infinity or a NaN in both formats.
      const uint16_t exponent = format == "bfloat16" ? 0x7f80u : 0x7c00u;
      for (int64_t i = 0; i < rows * cols; ++i)
        if ((bits[i] & exponent) == exponent)
          return "expected " + where + " to hold finite " + format + " values but got an infinity or NaN (bits " +
                 std::to_string(bits[i]) + ") at [" + std::to_string(i / cols) + ", " + std::to_string(i % cols) + "]";
      return "";
    });
    return;
  }
  if (v.IsTypedArray() || !v.IsObject() || !moe::is_quantized(dtype)) {
    *values = float32(name, rows, cols, optional);
    return;
  }
  const Fields q(env_, v, path(name));
  const int64_t groups = moe::scales_per_row(dtype, cols, g);
  quantized->codes = bytes_value(env_, q.object_.Get("codes"), q.path("codes"), rows * moe::code_bytes(dtype, cols));
  quantized->scales = uint16_value(env_, q.object_.Get("scales"), q.path("scales"), rows * groups);
  for (int64_t i = 0; i < rows * groups; ++i)
    if ((quantized->scales[i] & 0x7c00u) == 0x7c00u)
      throw_range_error(env_, "expected " + q.path("scales") +
                                  " to hold finite float16 values but got an infinity or NaN (bits " +
                                  std::to_string(quantized->scales[i]) + ") at [" + std::to_string(i) + "]");
}

Fields Fields::object(const char* name) const { return Fields(env_, object_.Get(name), path(name), deferred_); }

void Fields::scan(std::function<std::string()> scan) const {
  if (deferred_) {
    deferred_->push_back([scan] {
      const std::string failed = scan();
      if (!failed.empty()) throw std::invalid_argument("moe-kernels: " + failed);
    });
    return;
  }
  const std::string failed = scan();
  if (!failed.empty()) throw_range_error(env_, failed);
}
bool Fields::present(const char* name) const {
  const Napi::Value v = object_.Get(name);
  return !v.IsUndefined() && !v.IsNull();
}

const float* Fields::float32(const char* name, int64_t rows, int64_t cols, bool optional) const {
  const std::string where = path(name);
  const float* data = float32_value(env_, object_.Get(name), where, rows * cols, optional);
  if (data)
    scan([data, rows, cols, where]() -> std::string {
      const int64_t bad = moe::find_non_finite(data, rows * cols);
      if (bad < 0) return "";
      const float v = data[bad];
      return "expected " + where + " to contain only finite values but got " +
             (std::isnan(v) ? "NaN"
              : v > 0       ? "Infinity"
                            : "-Infinity") +
             " at " + where + "[" + std::to_string(bad / cols) + ", " + std::to_string(bad % cols) + "]";
    });
  return data;
}

void check_group_size(Napi::Env env, moe::WeightDtype dtype, int64_t g, int64_t k, const std::string& what) {
  if (moe::is_k_quant(dtype)) {  // super-blocks of 256 inputs; no group size of their own
    if (k % 256 != 0)
      throw_range_error(env, "expected " + what + " to be a multiple of 256 for " + moe::weight_dtype_name(dtype) +
                                 " (super-blocks of 256) but got " + std::to_string(k));
    return;
  }
  if (g > 0 && (g % 8 != 0 || k % g != 0))
    throw_range_error(
        env, "expected groupSize to be a multiple of 8 that divides " + what + " but got " + std::to_string(g));
  if (g == 0 && dtype == moe::WeightDtype::int4 && k % 2 != 0)
    throw_range_error(env,
                      "expected an even " + what + " for int4 with one scale per row but got " + std::to_string(k));
}

std::string values_within(const std::string& name, const float* data, const moe::HalfSource& half, int64_t count,
                          float limit, const std::string& range) {
  for (int64_t i = 0; (data || half.bits) && i < count; ++i) {
    const float w = data            ? data[i]
                    : half.bfloat16 ? moe::cpu::bfloat16_to_float(half.bits[i])
                                    : moe::cpu::half_to_float(half.bits[i]);
    if (std::abs(w) > limit)
      return "expected " + name + " within " + range + " but got " + std::to_string(w) + " at " + name + "[" +
             std::to_string(i) + "]";
  }
  return "";
}

ExpertSpec read_experts(const Fields& f) {
  ExpertSpec spec;
  moe::ExpertShape& s = spec.shape;
  s.num_experts = f.integer("numExperts", 1, kMaxExperts);
  // Experts in the weight arrays: all, or (given) an expert-parallel rank's slice of them.
  const int64_t given = f.present("given") ? f.integer("given", 0, s.num_experts) : s.num_experts;
  spec.given = f.present("given") ? given : -1;
  s.d_model = f.integer("dModel", 1, kMaxDim);
  s.d_hidden = f.integer("dHidden", 1, kMaxDim);
  const std::string act = f.string("activation");
  if (!moe::parse_activation(act, &s.activation))
    throw_range_error(f.env(), "expected activation to be a known activation but got '" + act + "'");
  if (s.activation == moe::Activation::swiglu_clamped) {
    s.alpha = static_cast<float>(f.number("swigluAlpha"));
    s.limit = static_cast<float>(f.number("swigluLimit"));
    if (!(s.limit > 0)) throw_range_error(f.env(), "expected swigluLimit > 0 but got " + std::to_string(s.limit));
  }
  const std::string dtype = f.string("weightDtype");
  if (!moe::parse_weight_dtype(dtype, &s.weight_dtype))
    throw_range_error(f.env(), "expected weightDtype to be a known weight dtype but got '" + dtype + "'");
  // w2 in a dtype of its own (downWeightDtype), or the same.
  const std::string down = f.present("downWeightDtype") ? f.string("downWeightDtype") : dtype;
  if (!moe::parse_weight_dtype(down, &s.down_weight_dtype))
    throw_range_error(f.env(), "expected downWeightDtype to be a known weight dtype but got '" + down + "'");
  s.separate_down_dtype = s.down_weight_dtype != s.weight_dtype;
  if (moe::is_quantized(s.weight_dtype) || moe::is_quantized(s.down_weight_dtype)) {
    // Groups of 8k inputs (the packed octets) that divide the input dimension of each matrix, or one scale per row
    // (0), which int4 (two codes a byte) can give only to even rows.
    s.group_size = f.integer("groupSize", 0, kMaxDim);
    if (moe::is_quantized(s.weight_dtype))
      check_group_size(f.env(), s.weight_dtype, s.group_size, s.d_model, "dModel (" + std::to_string(s.d_model) + ")");
    if (moe::is_quantized(s.down_weight_dtype))
      check_group_size(f.env(), s.down_weight_dtype, s.group_size, s.d_hidden,
                       "dHidden (" + std::to_string(s.d_hidden) + ")");
  }
  // An expert store's layer (spec.expertStore) gets its routed experts from the store: its spec is their shape.
  if (f.present("stored") && f.boolean("stored")) return spec;
  // Checked products first: three dimensions of up to 2^31 each could wrap int64 and match a short array.
  elements(f.env(), "w1", {std::max<int64_t>(given, 1), s.d_hidden, s.d_model});
  const bool gated = moe::is_gated(s.activation);
  moe::ExpertWeights& w = spec.weights;
  f.matrix("w1", given * s.d_hidden, s.d_model, s.weight_dtype, s.group_size, false, &w.w1, &w.q1, &w.h1);
  f.matrix("w3", given * s.d_hidden, s.d_model, s.weight_dtype, s.group_size, !gated, &w.w3, &w.q3, &w.h3);
  f.matrix("w2", given * s.d_model, s.d_hidden, moe::down_dtype(s), s.group_size, false, &w.w2, &w.q2, &w.h2);
  // float16 holds magnitudes up to 65504, and a quantized group's scale too: a weight that would need more (an
  // infinity once stored) is refused here (w1 / w3 by weightDtype's range, w2 by its own dtype's).
  const auto limited = [](moe::WeightDtype d) { return d == moe::WeightDtype::float16 || moe::is_quantized(d); };
  const auto limit_of = [](moe::WeightDtype d) {
    return d == moe::WeightDtype::float16 ? moe::kFloat16Max : moe::max_quantizable(d);
  };
  const auto range_of = [&](moe::WeightDtype d, const char* option) {
    const std::string name = moe::weight_dtype_name(d);
    return name + "'s range (|w| <= " + std::to_string(static_cast<int64_t>(limit_of(d))) +
           (d == moe::WeightDtype::float16 ? "" : ", a float16 scale's") + ") for " + option + " '" + name + "'";
  };
  const int64_t count = given * s.d_hidden * s.d_model;
  if (limited(s.weight_dtype)) {
    const float limit = limit_of(s.weight_dtype);
    const std::string range = range_of(s.weight_dtype, "weightDtype");
    f.scan([w, count, limit, range] {
      std::string failed = values_within("w1", w.w1, w.h1, count, limit, range);
      if (failed.empty()) failed = values_within("w3", w.w3, w.h3, count, limit, range);
      return failed;
    });
  }
  const moe::WeightDtype down_dtype = moe::down_dtype(s);
  if (limited(down_dtype)) {
    const float limit = limit_of(down_dtype);
    const std::string range = range_of(down_dtype, s.separate_down_dtype ? "downWeightDtype" : "weightDtype");
    f.scan([w, count, limit, range] { return values_within("w2", w.w2, w.h2, count, limit, range); });
  }
  w.b1 = f.float32("b1", given, s.d_hidden, true);
  w.b3 = f.float32("b3", given, s.d_hidden, true);
  w.b2 = f.float32("b2", given, s.d_model, true);
  return spec;
}

std::vector<int32_t> expert_slices(Napi::Env env, const Napi::Value& value, int64_t num_experts,
                                   const std::string& name) {
  std::vector<int32_t> counts;
  if (!value.IsArray()) throw_type_error(env, "expected " + name + " to be an array of expert counts per rank");
  const Napi::Array a = value.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    const Napi::Value v = a.Get(i);
    const double count = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
    if (!(count >= 0 && count <= static_cast<double>(num_experts) &&
          count == static_cast<double>(static_cast<int64_t>(count))))
      throw_range_error(env, "expected " + name + "[" + std::to_string(i) +
                                 "] to be an integer count of experts in 0.." + std::to_string(num_experts));
    counts.push_back(static_cast<int32_t>(count));
  }
  return counts;
}

moe::LayerSpec read_layer(const Fields& f) {
  moe::LayerSpec spec;
  moe::LayerConfig& c = spec.config;
  const ExpertSpec experts = read_experts(f.object("experts"));
  c.experts = experts.shape;
  spec.experts = experts.weights;
  c.sliced_experts = experts.given;
  const int64_t n = c.experts.num_experts;
  c.top_k = static_cast<int>(f.integer("topK", 1, n));
  c.normalize_top_k = f.boolean("normalizeTopK");
  c.threads = static_cast<int>(f.integer("threads", 0, 256));
  spec.router = f.float32("router", n, c.experts.d_model);
  spec.noise_router = f.float32("noiseRouter", n, c.experts.d_model, true);
  c.shared = c.experts;
  c.shared.num_experts = 0;
  if (f.present("shared")) {
    const ExpertSpec shared = read_experts(f.object("shared"));
    if (shared.shape.d_model != c.experts.d_model || shared.shape.activation != c.experts.activation ||
        shared.shape.alpha != c.experts.alpha || shared.shape.limit != c.experts.limit)
      throw_range_error(f.env(), "expected spec.shared to have the routed experts' dModel and activation");
    c.shared = shared.shape;
    spec.shared = shared.weights;
    spec.shared_gate = f.float32("sharedGate", c.shared.num_experts, c.experts.d_model, true);
  } else if (f.present("sharedGate")) {
    throw_range_error(f.env(), "expected no spec.sharedGate without shared experts but got one");
  }
  // expertParallel: true (slices as even as possible) or the routed experts per rank, [count, ...].
  if (f.present("expertParallel")) {
    const Napi::Value ep = f.value("expertParallel");
    if (!ep.IsArray() && !ep.IsBoolean())
      throw_type_error(f.env(), "expected spec.expertParallel to be a boolean or an array of expert counts per rank");
    c.expert_parallel = ep.IsArray() || ep.As<Napi::Boolean>().Value();
    if (ep.IsArray()) c.expert_slices = expert_slices(f.env(), ep, n, "spec.expertParallel");
  }
  const std::string backend = f.string("backend");
  if (backend != "cpu" && backend != "cuda")
    throw_range_error(f.env(), "expected spec.backend to be 'cpu' or 'cuda' but got '" + backend + "'");
  spec.backend = backend == "cuda" ? moe::Backend::cuda : moe::Backend::cpu;
  // (what the backend offers, shared experts and gates, expert parallelism, its own routing: make_layer checks)
  const Fields r = f.object("routing");
  const std::string rule = r.string("rule");
  if (rule != "softmax" && rule != "sigmoidBias" && rule != "none")
    throw_range_error(f.env(),
                      "expected spec.routing.rule to be 'softmax', 'sigmoidBias' or 'none' but got '" + rule + "'");
  moe::BuiltInRouting& g = spec.routing;
  if (rule == "sigmoidBias") g.rule = moe::BuiltInRouting::Rule::sigmoid_bias;
  if (rule == "none") g.rule = moe::BuiltInRouting::Rule::none;
  g.num_groups = static_cast<int>(r.integer("numGroups", 1, n));
  g.top_k_groups = static_cast<int>(r.integer("topKGroups", 1, g.num_groups));
  g.route_scale = static_cast<float>(r.number("routeScale"));
  g.bias = r.float32("bias", 1, n, true);
  // expertStore: { cache, path, fingerprint, label }: the routed experts read from a store through a cache.
  if (f.present("expertStore")) {
    const Fields s = f.object("expertStore");
    spec.store.cache = expert_cache_of(f.env(), s.value("cache"));
    spec.store.path = s.string("path");
    spec.store.fingerprint = s.string("fingerprint");
    spec.store.label = s.string("label");
  }
  return spec;
}

}  // namespace moe_binding
