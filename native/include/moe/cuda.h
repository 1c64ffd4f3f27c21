// The optional CUDA backend: the same MoE layer on an NVIDIA GPU (bf16 weights, fp32 accumulation and
// routing). Plain C++ API; it exists in every build, and reports compiled = false where CUDA was not built.
#pragma once
#include <memory>
#include <string>

#include "moe/moe.h"

namespace moe::cuda {

struct DeviceInfo {
  bool compiled = false;  // this build has the CUDA backend
  int devices = 0;        // usable devices (0 without a driver or GPU)
  std::string reason;     // why devices is 0, or the first device's name
};
DeviceInfo device_info();

// Routing rules the GPU runs itself (others come from the caller through forward_routed).
using GpuRouting = BuiltInRouting;

// A layer resident on device 0: weights uploaded once as bf16, device buffers reused across calls.
// Inputs and outputs are host float32. Every CUDA failure throws std::runtime_error naming the CUDA error.
// Router (and noise router) logits asked for on their own are computed on the host, with the CPU kernels, from
// host copies (the routing that follows them runs on the host too).
class CudaLayer final : public Layer {
 public:
  CudaLayer(const LayerConfig& config, const GpuRouting& routing, const float* router, const ExpertWeights& weights,
            const float* noise_router = nullptr);
  ~CudaLayer() override;
  void forward(const float* x, int64_t tokens, const LayerOutputs& out) override;
  void router_logits(const float* x, int64_t tokens, float* logits) override;
  void noise_logits(const float* x, int64_t tokens, float* logits) override;
  // keep_for_backward is ignored: the GPU has no backward yet.
  void forward_routed(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights,
                      float* output, int32_t* tokens_per_expert, bool keep_for_backward = false) override;
  // Not offered on the GPU yet (its table, native/src/cuda/cuda_capabilities.cpp): these refuse with its message.
  void slot_outputs(const float* x, int64_t tokens, int k, const int32_t* experts, float* slot_out) override;
  LayerTimings last_timings() const override;
  void export_weights(const LayerWeightsOut& out) const override;
  LayerWeightsPresent weights_present() const override;
  void backward(const float*, int64_t, int, const int32_t*, const float*, const float*, const LayerGradients&) override;
  void apply_gradients(const ParameterGradients&, const OptimizerStep&) override;
  const LayerConfig& config() const override;
  size_t packed_bytes() const override { return device_bytes(); }
  size_t host_bytes() const override;
  bool runs_inline(int64_t) const override { return false; }  // the GPU thread never holds up the event loop
  JobQueue queue() const override { return JobQueue::gpu; }
  size_t device_bytes() const;
  // Milliseconds the last call spent on the device between its input upload and its output download.
  double last_device_ms() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace moe::cuda
