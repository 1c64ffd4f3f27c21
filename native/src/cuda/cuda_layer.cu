// The CUDA layer: weights uploaded once as bf16; per call: router, routing, dispatch, two grouped GEMMs and the
// combine on one stream, with device buffers reused across calls.
#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cpu/half.h"
#include "cuda_check.cuh"
#include "dispatch_scratch.cuh"
#include "kernels.cuh"
#include "moe/capabilities.h"
#include "moe/cuda.h"

namespace moe::cuda {

DeviceInfo device_info() {
  DeviceInfo info;
  info.compiled = true;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it
    info.reason = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    return info;
  }
  info.devices = n;
  if (n == 0) {
    info.reason = "no CUDA device";
    return info;
  }
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, 0) == cudaSuccess)
    info.reason = std::string(p.name) + ", sm_" + std::to_string(p.major * 10 + p.minor);
  return info;
}

namespace {

__global__ void to_bf16(const float* in, __nv_bfloat16* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

// Host fp32 -> device bf16 (round to nearest even), through a staging buffer of at most 64 MiB.
void upload_bf16(const float* host, __nv_bfloat16* device, int64_t count, DeviceBuffer<float>& staging,
                 cudaStream_t s) {
  const int64_t chunk = int64_t{16} << 20;
  float* stage = staging.reserve(static_cast<size_t>(std::min(count, chunk)));
  for (int64_t i = 0; i < count; i += chunk) {
    const int64_t n = std::min(chunk, count - i);
    MOE_CUDA_CHECK(cudaMemcpyAsync(stage, host + i, sizeof(float) * n, cudaMemcpyHostToDevice, s));
    to_bf16<<<unsigned((n + 255) / 256), 256, 0, s>>>(stage, device + i, n);
    MOE_CUDA_LAUNCHED("to_bf16");
    MOE_CUDA_CHECK(cudaStreamSynchronize(s));  // the staging buffer is reused
  }
}

// A weight matrix of rows x k to device bf16: float32 values converted, or quantized codes dequantized on the host
// (row by row, a few MiB at a time) and then converted: the GPU computes in bf16 whatever the weightDtype.
// 16-bit float sources are widened on the host the same way.
void upload_weights(const float* values, const QuantizedSource& q, const HalfSource& h, int64_t rows, int64_t k,
                    const ExpertShape& s, WeightDtype dtype, __nv_bfloat16* device, DeviceBuffer<float>& staging,
                    cudaStream_t stream) {
  if (!q.codes && !h.bits) return upload_bf16(values, device, rows * k, staging, stream);
  const int64_t g = s.group_size > 0 ? s.group_size : k;
  const int64_t row_bytes = code_bytes(dtype, k);
  const int64_t chunk_rows = std::max<int64_t>(1, (int64_t{4} << 20) / k);
  std::vector<float> host(static_cast<size_t>(std::min(rows, chunk_rows) * k));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      float* row = host.data() + r * k;
      if (h.bits) {
        const uint16_t* bits = h.bits + (r0 + r) * k;
        for (int64_t i = 0; i < k; ++i)
          row[i] = h.bfloat16 ? moe::cpu::bfloat16_to_float(bits[i]) : moe::cpu::half_to_float(bits[i]);
      } else {
        dequantize_row(dtype, q.codes + (r0 + r) * row_bytes, q.scales + (r0 + r) * scales_per_row(dtype, k, g), k, g,
                       row);
      }
    }
    upload_bf16(host.data(), device + r0 * k, n * k, staging, stream);
  }
}

// Host -> device copy into a reusable buffer; a count of 0 (every slot dropped: no row tiles) copies nothing
// but still returns a valid device pointer.
template <class T>
T* upload(const T* host, size_t count, DeviceBuffer<T>& buffer, cudaStream_t s) {
  T* d = buffer.reserve(std::max<size_t>(1, count));
  if (count > 0) MOE_CUDA_CHECK(cudaMemcpyAsync(d, host, sizeof(T) * count, cudaMemcpyHostToDevice, s));
  return d;
}

}  // namespace

// The settings the routing kernels rely on, checked once: every token must have k eligible experts, or a scan
// would find none and index past the logits.
static void validate(const LayerConfig& c, const GpuRouting& r) {
  const int64_t n = c.experts.num_experts;
  const auto fail = [](const std::string& what) { throw std::runtime_error("moe-kernels: expected " + what); };
  if (n < 1 || c.experts.d_model < 1 || c.experts.d_hidden < 1) fail("positive dimensions and numExperts");
  if (c.top_k < 1 || c.top_k > n) fail("1 <= topK <= numExperts but got topK = " + std::to_string(c.top_k));
  if (r.rule != GpuRouting::Rule::sigmoid_bias) return;
  if (r.num_groups < 1 || r.num_groups > 32 || n % r.num_groups != 0)
    fail("numGroups in [1, 32] dividing numExperts = " + std::to_string(n) + " but got " +
         std::to_string(r.num_groups));
  if (r.top_k_groups < 1 || r.top_k_groups > r.num_groups)
    fail("topKGroups in [1, numGroups] but got " + std::to_string(r.top_k_groups));
  if (int64_t{r.top_k_groups} * (n / r.num_groups) < c.top_k)
    fail("topKGroups * (numExperts / numGroups) >= topK (enough experts in the kept groups) but got " +
         std::to_string(r.top_k_groups * (n / r.num_groups)) + " < " + std::to_string(c.top_k));
  if (!std::isfinite(r.route_scale)) fail("a finite routeScale");
  if (r.bias)
    for (int64_t e = 0; e < n; ++e)
      if (!std::isfinite(r.bias[e]))
        fail("a finite bias but got a non-finite value at bias[" + std::to_string(e) + "]");
}

struct CudaLayer::State {
  LayerConfig config;
  GpuRouting routing;
  std::vector<float> host_router, host_noise_router;  // for router / noise logits on their own (on the host)
  cudaStream_t stream = nullptr;
  std::mutex mutex;
  DeviceBuffer<float> router, bias, b1, b3, b2, staging;
  DeviceBuffer<__nv_bfloat16> w1, w3, w2, hidden;
  DeviceBuffer<float> x, logits, weights, slot_out, out;
  DeviceBuffer<int32_t> experts, counts, offsets, order;
  DeviceBuffer<RowTile> tiles;
  DispatchScratch scratch;
  std::vector<int32_t> host_offsets;
  std::vector<RowTile> host_tiles;
  cudaEvent_t started = nullptr, finished = nullptr;
  float device_ms = 0;

  // The stream and events belong to the state, so a constructor that throws after making them (a failed
  // upload, say) frees them too: the unique_ptr holding the state is already constructed.
  ~State() {
    if (started) cudaEventDestroy(started);
    if (finished) cudaEventDestroy(finished);
    if (stream) cudaStreamDestroy(stream);
  }

  void run_experts(int64_t tokens, int k) {
    const ExpertShape& s = config.experts;
    const int e = static_cast<int>(s.num_experts);
    const int64_t slots = tokens * k;
    int32_t* d_offsets = offsets.reserve(e + 1);
    int32_t* d_order = order.reserve(slots);
    dispatch_on_device(experts.get(), slots, e, counts.reserve(e + 1), d_offsets, d_order, scratch, stream);
    host_offsets.resize(e + 1);
    MOE_CUDA_CHECK(
        cudaMemcpyAsync(host_offsets.data(), d_offsets, sizeof(int32_t) * (e + 1), cudaMemcpyDeviceToHost, stream));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
    host_tiles.clear();
    for (int ex = 0; ex < e; ++ex) {
      const int32_t n = host_offsets[ex + 1] - host_offsets[ex];
      for (int32_t r = 0; r < n; r += 64) host_tiles.push_back({ex, host_offsets[ex], r, std::min<int32_t>(64, n - r)});
    }
    const int n_tiles = static_cast<int>(host_tiles.size());
    RowTile* d_tiles = upload(host_tiles.data(), host_tiles.size(), tiles, stream);  // none: the GEMMs launch nothing
    const int64_t routed = host_offsets[e];
    GemmArgs g{};
    g.tiles = d_tiles;
    g.order = d_order;
    g.slots_per_token = k;
    g.x = x.get();
    g.k_dim = s.d_model;
    g.w = w1.get();
    g.w_up = is_gated(s.activation) ? w3.get() : nullptr;
    g.bias = b1.get();
    g.bias_up = b3.get();
    g.n = s.d_hidden;
    g.activation = s.activation;
    g.alpha = s.alpha;
    g.limit = s.limit;
    g.hidden_out = hidden.reserve(static_cast<size_t>(std::max<int64_t>(routed, 1) * s.d_hidden));
    launch_grouped_gemm_up(g, n_tiles, stream);
    GemmArgs down{};
    down.tiles = d_tiles;
    down.order = d_order;
    down.slots_per_token = k;
    down.hidden_in = g.hidden_out;
    down.k_dim = s.d_hidden;
    down.w = w2.get();
    down.bias = b2.get();
    down.n = s.d_model;
    down.activation = Activation::identity;
    down.slot_out = slot_out.reserve(static_cast<size_t>(slots * s.d_model));
    launch_grouped_gemm_down(down, n_tiles, stream);
    launch_combine(down.slot_out, weights.get(), experts.get(), tokens, k, e, s.d_model,
                   out.reserve(tokens * s.d_model), stream);
  }
};

CudaLayer::CudaLayer(const LayerConfig& config, const GpuRouting& routing, const float* router, const ExpertWeights& w,
                     const float* noise_router)
    : state_(std::make_unique<State>()) {
  State& st = *state_;
  st.config = config;
  st.routing = routing;
  const ExpertShape& s = config.experts;
  if (config.shared.num_experts > 0)
    throw std::runtime_error("moe-kernels: shared experts are not supported on CUDA yet");
  validate(config, routing);
  const DeviceInfo info = device_info();
  if (info.devices == 0) throw std::runtime_error("moe-kernels: no CUDA device (" + info.reason + ")");
  MOE_CUDA_CHECK(cudaSetDevice(0));
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&st.stream, cudaStreamNonBlocking));
  MOE_CUDA_CHECK(cudaEventCreate(&st.started));
  MOE_CUDA_CHECK(cudaEventCreate(&st.finished));
  const int64_t big = s.num_experts * s.d_hidden * s.d_model;
  st.host_router.assign(router, router + s.num_experts * s.d_model);
  if (noise_router) st.host_noise_router.assign(noise_router, noise_router + s.num_experts * s.d_model);
  upload(router, s.num_experts * s.d_model, st.router, st.stream);
  if (routing.bias) st.routing.bias = upload(routing.bias, s.num_experts, st.bias, st.stream);
  const int64_t up_rows = s.num_experts * s.d_hidden, down_rows = s.num_experts * s.d_model;
  upload_weights(w.w1, w.q1, w.h1, up_rows, s.d_model, s, s.weight_dtype, st.w1.reserve(big), st.staging, st.stream);
  if (is_gated(s.activation))
    upload_weights(w.w3, w.q3, w.h3, up_rows, s.d_model, s, s.weight_dtype, st.w3.reserve(big), st.staging, st.stream);
  upload_weights(w.w2, w.q2, w.h2, down_rows, s.d_hidden, s, down_dtype(s), st.w2.reserve(big), st.staging, st.stream);
  if (w.b1) upload(w.b1, s.num_experts * s.d_hidden, st.b1, st.stream);
  if (w.b3) upload(w.b3, s.num_experts * s.d_hidden, st.b3, st.stream);
  if (w.b2) upload(w.b2, s.num_experts * s.d_model, st.b2, st.stream);
  MOE_CUDA_CHECK(cudaStreamSynchronize(st.stream));
}

CudaLayer::~CudaLayer() = default;

double CudaLayer::last_device_ms() const { return state_->device_ms; }

size_t CudaLayer::host_bytes() const {
  return (state_->host_router.size() + state_->host_noise_router.size()) * sizeof(float);
}

void CudaLayer::noise_logits(const float* x, int64_t tokens, float* logits) {
  const ExpertShape& s = state_->config.experts;
  if (state_->host_noise_router.empty())
    throw Unsupported("moe-kernels: expected a layer with a noise router (noisy top-k) for noise logits");
  moe::router_logits(x, tokens, s.d_model, state_->host_noise_router.data(), s.num_experts, logits);
}

void CudaLayer::router_logits(const float* x, int64_t tokens, float* logits) {
  const ExpertShape& s = state_->config.experts;
  moe::router_logits(x, tokens, s.d_model, state_->host_router.data(), s.num_experts, logits);
}

void CudaLayer::slot_outputs(const float*, int64_t, int, const int32_t*, float*) {
  refuse(capabilities(Backend::cuda), Feature::slot_outputs);
}

void CudaLayer::export_weights(const LayerWeightsOut&) const {
  refuse(capabilities(Backend::cuda), Feature::export_weights);  // (the GPU keeps bf16 copies only)
}
LayerWeightsPresent CudaLayer::weights_present() const { return {}; }
void CudaLayer::backward(const float*, int64_t, int, const int32_t*, const float*, const float*,
                         const LayerGradients&) {
  refuse(capabilities(Backend::cuda), Feature::backward);
}
void CudaLayer::apply_gradients(const ParameterGradients&, const OptimizerStep&) {
  refuse(capabilities(Backend::cuda), Feature::optimizer_step);
}

LayerTimings CudaLayer::last_timings() const { refuse(capabilities(Backend::cuda), Feature::timings); }

const LayerConfig& CudaLayer::config() const { return state_->config; }

size_t CudaLayer::device_bytes() const {
  const State& s = *state_;
  return s.router.bytes() + s.w1.bytes() + s.w3.bytes() + s.w2.bytes() + s.b1.bytes() + s.b3.bytes() + s.b2.bytes();
}

void CudaLayer::forward(const float* x, int64_t tokens, const LayerOutputs& out) {
  State& s = *state_;
  if (s.routing.rule == GpuRouting::Rule::none)
    throw Unsupported("moe-kernels: expected a layer whose own routing the GPU runs but got one routed by its caller");
  std::lock_guard<std::mutex> lock(s.mutex);
  const ExpertShape& shape = s.config.experts;
  const int k = s.config.top_k;
  const int e = static_cast<int>(shape.num_experts);
  if (tokens <= 0) {  // nothing to compute: zero counts, and no grid of zero blocks
    std::fill(out.tokens_per_expert, out.tokens_per_expert + e, 0);
    return;
  }
  upload(x, tokens * shape.d_model, s.x, s.stream);
  MOE_CUDA_CHECK(cudaEventRecord(s.started, s.stream));
  float* logits = s.logits.reserve(tokens * e);
  int32_t* experts = s.experts.reserve(tokens * k);
  float* weights = s.weights.reserve(tokens * k);
  launch_router_logits(s.x.get(), s.router.get(), logits, tokens, shape.d_model, e, s.stream);
  if (s.routing.rule == GpuRouting::Rule::sigmoid_bias)
    launch_sigmoid_bias_top_k(logits, s.routing.bias, tokens, e, k, s.routing.num_groups, s.routing.top_k_groups,
                              s.routing.route_scale, experts, weights, s.stream);
  else
    launch_softmax_top_k(logits, tokens, e, k, s.config.normalize_top_k, experts, weights, s.stream);
  s.run_experts(tokens, k);
  MOE_CUDA_CHECK(cudaEventRecord(s.finished, s.stream));
  MOE_CUDA_CHECK(cudaMemcpyAsync(out.output, s.out.get(), sizeof(float) * tokens * shape.d_model,
                                 cudaMemcpyDeviceToHost, s.stream));
  MOE_CUDA_CHECK(cudaMemcpyAsync(out.logits, logits, sizeof(float) * tokens * e, cudaMemcpyDeviceToHost, s.stream));
  MOE_CUDA_CHECK(cudaMemcpyAsync(out.experts, experts, sizeof(int32_t) * tokens * k, cudaMemcpyDeviceToHost, s.stream));
  MOE_CUDA_CHECK(cudaMemcpyAsync(out.weights, weights, sizeof(float) * tokens * k, cudaMemcpyDeviceToHost, s.stream));
  MOE_CUDA_CHECK(
      cudaMemcpyAsync(out.tokens_per_expert, s.counts.get(), sizeof(int32_t) * e, cudaMemcpyDeviceToHost, s.stream));
  MOE_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  MOE_CUDA_CHECK(cudaEventElapsedTime(&s.device_ms, s.started, s.finished));
}

void CudaLayer::forward_routed(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights,
                               float* output, int32_t* tokens_per_expert, bool) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  const ExpertShape& shape = s.config.experts;
  if (tokens <= 0) {
    std::fill(tokens_per_expert, tokens_per_expert + shape.num_experts, 0);
    return;
  }
  if (k < 1) throw std::runtime_error("moe-kernels: expected k >= 1 but got " + std::to_string(k));
  upload(x, tokens * shape.d_model, s.x, s.stream);
  upload(experts, tokens * k, s.experts, s.stream);
  upload(weights, tokens * k, s.weights, s.stream);
  MOE_CUDA_CHECK(cudaEventRecord(s.started, s.stream));
  s.run_experts(tokens, k);
  MOE_CUDA_CHECK(cudaEventRecord(s.finished, s.stream));
  MOE_CUDA_CHECK(
      cudaMemcpyAsync(output, s.out.get(), sizeof(float) * tokens * shape.d_model, cudaMemcpyDeviceToHost, s.stream));
  MOE_CUDA_CHECK(cudaMemcpyAsync(tokens_per_expert, s.counts.get(), sizeof(int32_t) * shape.num_experts,
                                 cudaMemcpyDeviceToHost, s.stream));
  MOE_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  MOE_CUDA_CHECK(cudaEventElapsedTime(&s.device_ms, s.started, s.finished));
}

}  // namespace moe::cuda
