// The one place a backend is chosen: the binding (and any C++ user) asks for a layer by spec and gets the
// Layer interface back. A new backend is one more implementation of moe::Layer and one more case here.
#include "moe/cuda.h"
#include "moe/moe.h"

namespace moe {

std::shared_ptr<Layer> make_layer(const LayerSpec& spec) {
  switch (spec.backend) {
    case Backend::cuda:
      return std::make_shared<cuda::CudaLayer>(spec.config, spec.routing, spec.router, spec.experts, spec.noise_router);
    case Backend::cpu: break;
  }
  return std::make_shared<CpuLayer>(spec.config, spec.router, spec.experts, spec.shared, spec.routing,
                                    spec.noise_router, spec.shared_gate);
}

}  // namespace moe
