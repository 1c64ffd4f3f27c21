// The one place a backend is chosen: the binding (and any C++ user) asks for a layer by spec and gets the
// Layer interface back, once the spec is checked against the backend's table of what it offers. A new backend is
// one more implementation of moe::Layer, its table (moe/capabilities.h) and one more case here.
#include "moe/capabilities.h"
#include "moe/cuda.h"
#include "moe/moe.h"

namespace moe {

namespace {

// Everything the spec asks of its backend, refused with the table's one message where the backend lacks it.
void check_spec(const LayerSpec& spec) {
  const Capabilities& backend = capabilities(spec.backend);
  switch (spec.routing.rule) {
    case BuiltInRouting::Rule::softmax_top_k: require(backend, Feature::route_softmax_top_k); break;
    case BuiltInRouting::Rule::sigmoid_bias: require(backend, Feature::route_sigmoid_bias); break;
    case BuiltInRouting::Rule::none: break;
  }
  if (spec.config.shared.num_experts > 0) require(backend, Feature::shared_experts);
  if (spec.shared_gate) require(backend, Feature::shared_gate);
  if (spec.config.expert_parallel) require(backend, Feature::expert_parallel);
  if (spec.store.cache) {
    require(backend, Feature::expert_cache);
    if (spec.config.expert_parallel)
      throw Unsupported(
          "moe-kernels: expected a layer either expert-parallel or reading its experts through a cache "
          "but got both");
  }
}

}  // namespace

std::shared_ptr<Layer> make_layer(const LayerSpec& spec) {
  check_spec(spec);
  switch (spec.backend) {
    case Backend::cuda:
      return std::make_shared<cuda::CudaLayer>(spec.config, spec.routing, spec.router, spec.experts, spec.noise_router);
    case Backend::cpu: break;
  }
  return std::make_shared<CpuLayer>(spec.config, spec.router, spec.experts, spec.shared, spec.routing,
                                    spec.noise_router, spec.shared_gate, spec.store);
}

}  // namespace moe
