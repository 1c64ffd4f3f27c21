// The features' names and descriptions, the one refusal message, and the lookup of a backend's table.
#include "moe/capabilities.h"

namespace moe {

namespace {

constexpr std::array<FeatureInfo, kFeatureCount> kFeatures{{
    {Feature::route_softmax_top_k, "routeSoftmaxTopK", "its own softmax top-k routing (Mixtral)"},
    {Feature::route_sigmoid_bias, "routeSigmoidBias", "its own sigmoid + bias routing (DeepSeek-V3)"},
    {Feature::shared_experts, "sharedExperts", "shared experts"},
    {Feature::shared_gate, "sharedGate", "a shared-expert gate (weights.sharedGate)"},
    {Feature::expert_parallel, "expertParallel", "expert parallelism (config.expertParallel)"},
    {Feature::backward, "backward", "backward"},
    {Feature::optimizer_step, "optimizerStep", "an optimizer step"},
    {Feature::export_weights, "exportWeights", "exportWeights"},
    {Feature::slot_outputs, "slotOutputs", "slot outputs (slotOutputs, gateGradients)"},
    {Feature::timings, "timings", "per-phase timings (lastTimings)"},
    {Feature::router_bias_update, "routerBiasUpdate", "setRouterBias"},
    {Feature::expert_cache, "expertCache", "experts read from disk through an ExpertCache (options.cache)"},
}};

constexpr bool in_order() {
  for (int i = 0; i < kFeatureCount; ++i)
    if (static_cast<int>(kFeatures[i].feature) != i) return false;
  return true;
}
static_assert(in_order(), "kFeatures lists every Feature once, in the enum's order");

}  // namespace

// Each backend's own file defines its table.
extern const Capabilities kCpuCapabilities;
extern const Capabilities kCudaCapabilities;

const FeatureInfo& feature_info(Feature feature) { return kFeatures[static_cast<int>(feature)]; }

const Capabilities& capabilities(Backend backend) {
  return backend == Backend::cuda ? kCudaCapabilities : kCpuCapabilities;
}

std::string refusal(const Capabilities& backend, Feature feature) {
  std::string offered;
  for (const FeatureInfo& f : kFeatures)
    if (backend.has(f.feature)) offered += (offered.empty() ? "" : ", ") + std::string(f.name);
  return std::string("moe-kernels: expected a backend that offers ") + feature_info(feature).description +
         " but got backend '" + backend.name + "' (it offers: " + offered + ")";
}

void refuse(const Capabilities& backend, Feature feature) { throw Unsupported(refusal(backend, feature)); }

}  // namespace moe
