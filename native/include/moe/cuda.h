// The optional CUDA backend: the same MoE layer on an NVIDIA GPU (bf16 weights, fp32 accumulation and
// routing). Plain C++ API; it exists in every build, and reports compiled = false where CUDA was not built.
#pragma once
#include <memory>
#include <string>

#include "moe/moe.h"

namespace moe::cuda {

struct DeviceInfo {
  bool compiled = false;   // this build has the CUDA backend
  int devices = 0;         // usable devices (0 without a driver or GPU)
  std::string reason;      // why devices is 0, or the first device's name
};
DeviceInfo device_info();

// Routing rules the GPU runs itself (others come from the caller through forward_routed).
struct GpuRouting {
  enum class Rule { softmax_top_k, sigmoid_bias } rule = Rule::softmax_top_k;
  int num_groups = 1, top_k_groups = 1;  // sigmoid_bias: group-limited selection (DeepSeek-V3)
  float route_scale = 1.0f;
  const float* bias = nullptr;           // [E], selection only; copied at construction
};

// A layer resident on device 0: weights uploaded once as bf16, device buffers reused across calls.
// Inputs and outputs are host float32. Every CUDA failure throws std::runtime_error naming the CUDA error.
class CudaLayer {
 public:
  CudaLayer(const LayerConfig& config, const GpuRouting& routing, const float* router, const ExpertWeights& weights);
  ~CudaLayer();
  void forward(const float* x, int64_t tokens, const LayerOutputs& out);
  void forward_routed(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights,
                      float* output, int32_t* tokens_per_expert);
  const LayerConfig& config() const;
  size_t device_bytes() const;
  // Milliseconds the last call spent on the device between its input upload and its output download.
  double last_device_ms() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace moe::cuda
