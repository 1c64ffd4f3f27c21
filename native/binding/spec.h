// The spec objects that cross the seam, read by name: lib/native.ts declares their fields (NativeExpertSpec,
// NativeLayerSpec), and this is the one place the binding checks them, each message naming the field's path
// ("expected spec.experts.dModel to be an integer ..."). Adding a field is one line here and one there.
#pragma once
#include <napi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moe/moe.h"

namespace moe_binding {

// Scans of the weights' values (finite, within a dtype's range) kept for later: NativeLayer.build runs them on the
// job thread with the packing, so that a multi-GB layer is not scanned on the event loop. Each throws a RangeError
// (std::invalid_argument) in the one format.
using DeferredScans = std::vector<std::function<void()>>;

// The fields of one JS object, read by name.
class Fields {
 public:
  // TypeError unless an object. With `deferred`, the value scans of weights are added to it instead of run now.
  Fields(Napi::Env env, const Napi::Value& value, std::string path, DeferredScans* deferred = nullptr);
  int64_t integer(const char* name, int64_t min, int64_t max) const;
  bool boolean(const char* name) const;
  std::string string(const char* name) const;
  double number(const char* name) const;  // finite
  // A Float32Array of exactly `length` elements, each finite; null/undefined allowed when `optional` (nullptr).
  const float* float32(const char* name, int64_t rows, int64_t cols, bool optional = false) const;
  // A weight matrix of rows x cols: a Float32Array as float32() reads it, or, for int8 / int4 weights in groups
  // of g (0: one per row), { codes, scales } as moe::QuantizedSource lays them out (scales finite float16 bits), or,
  // for any dtype, { bits, format } with a Uint16Array of finite 'bfloat16' or 'float16' values (moe::HalfSource).
  void matrix(const char* name, int64_t rows, int64_t cols, moe::WeightDtype dtype, int64_t g, bool optional,
              const float** values, moe::QuantizedSource* quantized, moe::HalfSource* half) const;
  Fields object(const char* name) const;
  bool present(const char* name) const;
  Napi::Value value(const char* name) const { return object_.Get(name); }  // neither missing, undefined nor null
  Napi::Env env() const { return env_; }
  // Runs `scan` (a message when it fails, "" when not) now, or adds it to the deferred scans.
  void scan(std::function<std::string()> scan) const;

 private:
  std::string path(const char* name) const { return path_ + "." + name; }
  Napi::Env env_;
  Napi::Object object_;
  std::string path_;
  DeferredScans* deferred_;
};

// int8 / int4 groups of g inputs along rows of k: a multiple of 8 dividing k, or 0 for one per row (int4: an even
// k, two codes a byte). `what` names k in the message ("dModel (64)").
void check_group_size(Napi::Env env, moe::WeightDtype dtype, int64_t g, int64_t k, const std::string& what);
// "expected <name> within <range> but got <value> at <name>[i]" for the first |w[i]| > limit, w being data or,
// where data is null, half's values (neither: nothing to check); "" when every value is within.
std::string values_within(const std::string& name, const float* data, const moe::HalfSource& half, int64_t count,
                          float limit, const std::string& range);

// NativeExpertSpec: { numExperts, dModel, dHidden, activation, weightDtype, groupSize, w1, w3, w2, b1, b3, b2 }. The
// arrays are the caller's memory, read while the constructor packs them.
struct ExpertSpec {
  moe::ExpertShape shape;
  moe::ExpertWeights weights;
  int64_t given = -1;  // spec.given: the experts in the weight arrays when not all (an expert-parallel rank's slice)
};
ExpertSpec read_experts(const Fields& spec);
// An array of routed-expert counts per rank (config.expertParallel), each an integer in 0..num_experts; `name` for
// the messages. (expert_bounds checks that there is one per rank and that they add up.)
std::vector<int32_t> expert_slices(Napi::Env env, const Napi::Value& value, int64_t num_experts,
                                   const std::string& name);

// NativeLayerSpec: { experts, shared, router, noiseRouter, topK, normalizeTopK, threads, backend, routing }, as the
// core's LayerSpec (whose arrays are the caller's memory, read while the layer is built).
moe::LayerSpec read_layer(const Fields& spec);

}  // namespace moe_binding
