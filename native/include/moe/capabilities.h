// What a backend offers, declared once per backend as a table (CPU: native/src/core/cpu_capabilities.cpp; CUDA:
// native/src/cuda/cuda_capabilities.cpp, compiled in every build so that its table is known where it is not built).
// make_layer checks a spec against its backend's table and the layers refuse a call through require(), so every
// "not on this backend" is one message; the binding hands the tables to TypeScript (backendInfo().backends), whose
// checks read the same table and format the same message.
#pragma once
#include <array>
#include <initializer_list>
#include <string>

#include "moe/moe.h"

namespace moe {

enum class Feature : int {
  route_softmax_top_k,  // the layer's own forward routes by softmax top-k (Mixtral)
  route_sigmoid_bias,   // ... by sigmoid scores + selection bias, group-limited (DeepSeek-V3)
  shared_experts,       // always-on shared experts (DeepSeekMoE)
  shared_gate,          // a sigmoid gate per shared expert (Qwen2-MoE)
  expert_parallel,      // the routed experts split over an MPI job
  backward,             // gradients of a forward
  optimizer_step,       // an optimizer step on the packed weights
  export_weights,       // the weights read back as float32
  slot_outputs,         // each slot's unweighted expert output (slotOutputs, gateGradients)
  timings,              // per-phase timings of the last forward (lastTimings)
  router_bias_update,   // a new selection bias after construction (setRouterBias)
  expert_cache,         // routed experts read from a store through an ExpertCache (fromPretrained's cache)
  count
};
constexpr int kFeatureCount = static_cast<int>(Feature::count);

// A feature's name at the seam (camelCase, as TypeScript sees it) and its description in messages.
struct FeatureInfo {
  Feature feature;
  const char* name;
  const char* description;
};
const FeatureInfo& feature_info(Feature feature);

// One backend's table: its name and the features it offers. Built from a list of features (never by position).
struct Capabilities {
  Backend backend;
  const char* name;
  std::array<bool, kFeatureCount> offers{};
  const char* weights;  // how it holds and computes each weight dtype, in words

  bool has(Feature f) const { return offers[static_cast<int>(f)]; }
};
constexpr std::array<bool, kFeatureCount> offering(std::initializer_list<Feature> features) {
  std::array<bool, kFeatureCount> offers{};
  for (Feature f : features) offers[static_cast<int>(f)] = true;
  return offers;
}

const Capabilities& capabilities(Backend backend);
// "moe-kernels: expected a backend that offers <description> but got backend '<name>' (it offers: <names>)",
// thrown as Unsupported (a RangeError in JavaScript).
[[noreturn]] void refuse(const Capabilities& backend, Feature feature);
inline void require(const Capabilities& backend, Feature feature) {
  if (!backend.has(feature)) refuse(backend, feature);
}
// The message refuse() throws (the TypeScript side builds the same text from the same table).
std::string refusal(const Capabilities& backend, Feature feature);

}  // namespace moe
