// What the CPU backend (CpuLayer) offers. DeepSeek-V3's sigmoid + bias routing is not among its own rules: on the
// CPU that rule routes in TypeScript (lib/gating/sigmoid-bias.ts) and the layer runs the routed forward.
#include "moe/capabilities.h"

namespace moe {

extern const Capabilities kCpuCapabilities;
const Capabilities kCpuCapabilities{
    Backend::cpu,
    "cpu",
    offering({Feature::route_softmax_top_k, Feature::shared_experts, Feature::shared_gate, Feature::expert_parallel,
              Feature::backward, Feature::optimizer_step, Feature::export_weights, Feature::slot_outputs,
              Feature::timings, Feature::router_bias_update, Feature::expert_cache}),
    "every weight dtype stored as given and computed in its own kernels (docs/precision.md)",
};

}  // namespace moe
