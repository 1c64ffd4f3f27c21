// The CUDA backend's stand-in for builds without CUDA: it says so, and refuses to build a layer.
#include <stdexcept>

#include "moe/cuda.h"

namespace moe::cuda {

DeviceInfo device_info() {
  DeviceInfo info;
  info.reason =
      "this build has no CUDA backend (build it where nvcc is installed: "
      "`node node_modules/moe-kernels/scripts/build-native.js --cuda`, or `npm run build:cuda` in a clone)";
  return info;
}

struct CudaLayer::State {};

CudaLayer::CudaLayer(const LayerConfig&, const GpuRouting&, const float*, const ExpertWeights&, const float*) {
  throw std::runtime_error(device_info().reason);
}
CudaLayer::~CudaLayer() = default;
void CudaLayer::forward(const float*, int64_t, const LayerOutputs&) {}
void CudaLayer::forward_routed(const float*, int64_t, int, const int32_t*, const float*, float*, int32_t*, bool) {}
const LayerConfig& CudaLayer::config() const { throw std::runtime_error(device_info().reason); }
size_t CudaLayer::device_bytes() const { return 0; }
size_t CudaLayer::host_bytes() const { return 0; }
void CudaLayer::router_logits(const float*, int64_t, float*) {}
void CudaLayer::noise_logits(const float*, int64_t, float*) {}
void CudaLayer::slot_outputs(const float*, int64_t, int, const int32_t*, float*) {}
LayerTimings CudaLayer::last_timings() const { return {}; }
void CudaLayer::export_weights(const LayerWeightsOut&) const {}
LayerWeightsPresent CudaLayer::weights_present() const { return {}; }
void CudaLayer::backward(const float*, int64_t, int, const int32_t*, const float*, const float*,
                         const LayerGradients&) {}
void CudaLayer::apply_gradients(const ParameterGradients&, const OptimizerStep&) {}
double CudaLayer::last_device_ms() const { return 0; }

}  // namespace moe::cuda
