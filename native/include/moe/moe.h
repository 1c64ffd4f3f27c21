// moe-kernels core C++ API: plain pointers and small shape structs, no Node types.
// Every array is row-major float32 unless named otherwise. Weight layouts follow nn.Linear: [out, in].
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe/keyed_table.h"

namespace moe {

// avx512_bf16: AVX-512 with AVX512-BF16 (vdpbf16ps) and AVX512-VNNI (vpdpbusd), whose 16-bit and 8/4-bit weight
// GEMMs round or quantize the activations to use those dot-product instructions (see docs/precision.md).
// avx512: AVX512F and AVX512BW; avx2: AVX2, FMA and F16C. Their int4 (avx2: and int8) and K-quant GEMMs quantize
// the activations too, with vpmaddubsw and vpmaddwd for vpdpbusd.
// neon_dotprod: AArch64 with ARMv8.2's dot product (sdot; Apple M, Graviton 2 on, Cortex-A76 on), whose int8, int4
// and K-quant GEMMs quantize the activations for it (the Raspberry Pi 4's Cortex-A72 lacks it and takes neon).
enum class Isa { scalar, avx2, avx512, neon, avx512_bf16, neon_dotprod };
const char* isa_name(Isa isa);

// Activation of the expert FFN. Gated ones compute act(x W1^T + b1) * (x W3^T + b3) (Shazeer 2020, GLU variants);
// swiglu_clamped is gpt-oss's variant: g = min(g, limit), u = clamp(u, -limit, limit), g sigmoid(alpha g) (u + 1)
// (transformers GptOssExperts; alpha and limit in ExpertShape).
enum class Activation { swiglu, geglu, gelu, gelu_tanh, relu, silu, identity, swiglu_clamped };
constexpr int kActivations = static_cast<int>(Activation::swiglu_clamped) + 1;  // (the last one + 1)

// One entry per activation: its public name (lib/activation.ts has the same table; a test compares them) and
// whether it is gated (uses w3). Its math is the kernels' epilogue (cpu/kernel_impl.h, cuda/grouped_gemm.cu), its
// derivative unit_backward, its float64 twin lib/reference.
struct ActivationInfo {
  Activation key;
  const char* name;
  bool gated;
};
inline constexpr std::array<ActivationInfo, kActivations> kActivationTable = keyed_table<ActivationInfo>({
    {Activation::swiglu, "swiglu", true},
    {Activation::geglu, "geglu", true},
    {Activation::gelu, "gelu", false},
    {Activation::gelu_tanh, "gelu-tanh", false},
    {Activation::relu, "relu", false},
    {Activation::silu, "silu", false},
    {Activation::identity, "identity", false},
    {Activation::swiglu_clamped, "swiglu-clamped", true},
});
constexpr bool is_gated(Activation act) { return kActivationTable[static_cast<int>(act)].gated; }
// Parses the public name ('swiglu', 'gelu-tanh', ...); returns false when unknown.
bool parse_activation(const std::string& name, Activation* out);

// The stored format of packed expert weights: a property of the packed experts, with one entry per dtype in the
// kernel table (its GEMM per ISA) and in core/weight_formats.h (its packing and size). bfloat16 and float16
// weights are float32 ones rounded to nearest (ties to even) when packed. int8 and int4 are block-quantized along
// the input dimension, one float16 scale per group of `group_size` weights of a row, with the formulas of
// llama.cpp's Q8_0 and Q4_0 blocks (a GGUF block of 32 maps onto a group of 32 as it is):
//   int8: w = q * d, q in [-128, 127]   (quantizing: d = max|w| / 127, q = round(w / d))
//   int4: w = (u - 8) * d, u in [0, 15] (quantizing: d = m / -8 where m is the w of largest magnitude,
//                                        u = min(15, floor(w / d + 8.5)))
// q4_k, q5_k, q6_k are llama.cpp's K-quants (GGUF's Q4_K, Q5_K, Q6_K), kept as their super-blocks of 256 weights
// (core/kquants.h has the layouts and formulas): their codes are the blocks, they have no separate scales, and
// group_size does not apply (each sub-block of 32, or 16 for q6_k, has its own factors).
// The router stays float32.
// One entry per dtype in core/weight_formats.cpp (name, bits, packing; lib/weight-dtypes.ts has the same names and
// facts, a test compares them) and, per ISA, a GEMM in the kernel table (keyed by dtype: cpu/kernel_table.h).
enum class WeightDtype { float32, bfloat16, float16, int8, int4, q4_k, q5_k, q6_k };
constexpr int kWeightDtypes = static_cast<int>(WeightDtype::q6_k) + 1;  // (the last one + 1)
// Stored as codes (QuantizedSource) rather than floats: int8, int4 and the K-quants.
inline bool is_quantized(WeightDtype dtype) { return dtype >= WeightDtype::int8; }
// The K-quants: codes are GGUF super-blocks of 256 weights, with their factors inside.
inline bool is_k_quant(WeightDtype dtype) { return dtype >= WeightDtype::q4_k; }
// The largest magnitude a float16 weight (or scale) can hold (larger ones are refused, not turned into infinities).
constexpr float kFloat16Max = 65504.0f;
const char* weight_dtype_name(WeightDtype dtype);
// Bytes of codes in a row of k int8 (k) or int4 (k / 2) weights, or of k / 256 K-quant super-blocks (144, 176 or
// 210 bytes each).
inline int64_t code_bytes(WeightDtype dtype, int64_t k) {
  switch (dtype) {
    case WeightDtype::int4: return k / 2;
    case WeightDtype::q4_k: return k / 256 * 144;
    case WeightDtype::q5_k: return k / 256 * 176;
    case WeightDtype::q6_k: return k / 256 * 210;
    default: return k;
  }
}
// float16 scales per row of k weights in groups of g: none for the K-quants (their factors are in the blocks).
inline int64_t scales_per_row(WeightDtype dtype, int64_t k, int64_t g) {
  return is_k_quant(dtype) ? 0 : k / (g > 0 ? g : k);
}
// Block quantization of one row of k weights in groups of g, with the formulas above (llama.cpp's Q8_0 and Q4_0;
// the K-quants with llama.cpp's reference quantizers, g unused, scales untouched).
// codes: k bytes (int8) or k / 2 (int4, nibbles as QuantizedSource lays them out); scales: k / g float16 bits. A
// group whose scale rounds to zero gets zero codes (int4: 8). Callers refuse weights past max_quantizable first,
// whose scale would overflow float16.
void quantize_row(WeightDtype dtype, const float* w, int64_t k, int64_t g, uint8_t* codes, uint16_t* scales);
// quantize_row for `rows` rows of k, spread over the process's thread pool (the same codes on any thread count).
void quantize_rows(WeightDtype dtype, const float* w, int64_t rows, int64_t k, int64_t g, uint8_t* codes,
                   uint16_t* scales);
// The weights the kernels compute with: out[i] = code * scale, exactly (an 8-bit code times an 11-bit scale fits
// a float32's 24-bit significand).
void dequantize_row(WeightDtype dtype, const uint8_t* codes, const uint16_t* scales, int64_t k, int64_t g, float* out);
// The largest |w| whose group scale stays a finite float16: 65504 * 127 (int8) or 65504 * 8 (int4).
float max_quantizable(WeightDtype dtype);
// Parses the public name ('float32', ...); returns false when unknown.
bool parse_weight_dtype(const std::string& name, WeightDtype* out);

// --- backend --------------------------------------------------------------------------------------
Isa active_isa();                   // chosen once at load: best supported, or MOE_FORCE_ISA
std::vector<Isa> supported_isas();  // every ISA this CPU can run and this build compiled
int thread_count();
void set_thread_count(int threads);  // 1..256; the pool resizes between calls
// Wakes the pool's sleeping threads ahead of a forward that another thread is about to start: its wake-up and
// theirs then overlap. They spin up to 2 ms for the work, then sleep again. post_job(JobQueue::cpu) does this.
void prewake_threads();
// Runs `job` on one of the library's job threads, after every job posted before it to the same queue: the Node
// binding's async calls run there, off the event loop. CPU and GPU work have a thread each, so that a forward
// waiting on its device holds up no CPU work; a CPU job prewakes the pool. A job must not throw.
enum class JobQueue { cpu, gpu };
void post_job(JobQueue queue, std::function<void()> job);

// --- router ---------------------------------------------------------------------------------------
// logits[T, E] = x[T, dModel] W_g^T, W_g: [E, dModel].
void router_logits(const float* x, int64_t tokens, int64_t d_model, const float* router, int64_t num_experts,
                   float* logits);

// Mixtral / Hugging Face rule: softmax over all E logits, the top-k (ties to the lower expert index),
// renormalised to sum to 1 when `normalize`, else the raw softmax probabilities (Switch, Fedus et al. eq. 2).
// experts/weights: [T * k], token-major, slots in descending weight order.
void top_k_softmax(const float* logits, int64_t tokens, int64_t num_experts, int k, bool normalize, int32_t* experts,
                   float* weights);

// --- dispatch -------------------------------------------------------------------------------------
// Dropless dispatch (MegaBlocks): histogram of slots per expert, exclusive prefix sum, stable permutation.
// experts: [slots] with -1 marking a dropped slot (skipped). tokens_per_expert: [E]; expert_offsets: [E + 1];
// order: [slots], the slot indices grouped by expert, slot order kept inside each expert; only the first
// expert_offsets[E] entries are meaningful (the rest are set to -1).
void dispatch(const int32_t* experts, int64_t slots, int64_t num_experts, int32_t* tokens_per_expert,
              int32_t* expert_offsets, int32_t* order);

// --- experts --------------------------------------------------------------------------------------
struct ExpertShape {
  int64_t num_experts = 0, d_model = 0, d_hidden = 0;
  Activation activation = Activation::swiglu;
  float alpha = 1.702f, limit = 7.0f;               // swiglu_clamped's (gpt-oss's values by default)
  WeightDtype weight_dtype = WeightDtype::float32;  // how the packed weights are stored (inputs are float32)
  // The down projection (w2) in another dtype than w1 / w3 (GGUF's Q4_K_M: Q4_K gate / up, Q6_K down); else the same.
  bool separate_down_dtype = false;
  WeightDtype down_weight_dtype = WeightDtype::float32;
  // int8 / int4: input weights per scale, a multiple of 8 dividing d_model and d_hidden; 0: one scale per row.
  int64_t group_size = 32;
};
// The dtype of w2 (down) and of w1 / w3.
inline WeightDtype down_dtype(const ExpertShape& s) {
  return s.separate_down_dtype ? s.down_weight_dtype : s.weight_dtype;
}
// Whether every matrix is float32 (what training and the backward's transposed panels need).
inline bool all_float32(const ExpertShape& s) {
  return s.weight_dtype == WeightDtype::float32 && down_dtype(s) == WeightDtype::float32;
}

// Weights already quantized (int8 / int4), handed over as they are instead of float32 values: codes row-major like
// the float tensor (int8: one int8 per weight; int4: per group of g, byte j holds weight j in its low nibble and
// weight j + g/2 in its high one, as in GGUF's Q4_0), scales float16 bits [rows, k / g].
struct QuantizedSource {
  const uint8_t* codes = nullptr;
  const uint16_t* scales = nullptr;
};

// Weights in 16-bit floats (float16 or bfloat16 bits), handed over as a checkpoint stores them: each row is widened
// to float32 (exactly) just before it is packed, so a bf16 checkpoint never exists in float32 as a whole.
struct HalfSource {
  const uint16_t* bits = nullptr;
  bool bfloat16 = true;  // false: IEEE float16
};

struct ExpertWeights {        // host pointers, read once by pack_experts; biases may be null
  const float* w1 = nullptr;  // [E, dHidden, dModel] gate (or the only up-projection)
  const float* w3 = nullptr;  // [E, dHidden, dModel] up; required iff the activation is gated
  const float* w2 = nullptr;  // [E, dModel, dHidden] down
  const float* b1 = nullptr;  // [E, dHidden]
  const float* b3 = nullptr;  // [E, dHidden]
  const float* b2 = nullptr;  // [E, dModel]
  // Quantized alternatives of w1, w3, w2 (int8 / int4 only): used where codes are set, the float pointer is then
  // null.
  QuantizedSource q1{}, q3{}, q2{};
  // 16-bit float alternatives of w1, w3, w2 (any weight dtype): used where bits are set.
  HalfSource h1{}, h3{}, h2{};
};

class PackedExperts;  // weights in the active ISA's panel layout, immutable once built
std::shared_ptr<const PackedExperts> pack_experts(const ExpertShape& shape, const ExpertWeights& weights);
const ExpertShape& packed_shape(const PackedExperts& packed);
size_t packed_bytes(const PackedExperts& packed);
// The packed experts read back (see ExpertWeightsOut, below); null destinations are skipped.
struct ExpertWeightsOut;
void unpack_experts(const PackedExperts& packed, const ExpertWeightsOut& out);
// Which biases the packed experts were given: b1, b3, b2.
void packed_biases(const PackedExperts& packed, bool* b1, bool* b3, bool* b2);

// Grouped expert FFN over a dispatch plan: for every slot s = t * k + j routed to expert e,
// slot_out[s] = E_e(x[t]); rows gathered from x while loading, results scattered by slot while storing.
// Slots not in the plan (dropped) get zero rows. slot_out: [T * k, dModel]. Experts with no slot cost nothing.
// expert_offsets has E + 1 entries for the E experts of `packed`.
void expert_ffn(const PackedExperts& packed, const float* x, int64_t tokens, int k, const int32_t* expert_offsets,
                const int32_t* order, float* slot_out);

// out[t] = sum over j in 0..k-1, in slot order, of weights[t*k+j] * slot_out[t*k+j]; no atomics, so the
// result is bitwise identical for any thread count.
void combine(const float* slot_out, const float* weights, int64_t tokens, int k, int64_t d_model, float* out);

// --- the layer ------------------------------------------------------------------------------------
struct LayerConfig {
  ExpertShape experts;  // the routed experts
  int top_k = 2;
  bool normalize_top_k = true;
  int threads = 0;     // at most this many pool threads per forward; 0 = all
  ExpertShape shared;  // always-on shared experts (DeepSeekMoE); shared.num_experts = 0 for none
  // Expert parallelism over the ranks of an MPI job (issue 20; a build with MOE_MPI): every rank holds the routed
  // experts of its slice only, and forward / forward_routed are collective. CPU only.
  bool expert_parallel = false;
  std::vector<int32_t> expert_slices{};  // routed experts per rank; empty: as even as possible
  // Expert parallel: the routed experts' weights given are this rank's slice only, of this many experts (-1: all
  // E are given, and the rank packs its slice of them).
  int64_t sliced_experts = -1;
};

struct LayerOutputs {                    // caller-owned buffers
  float* output = nullptr;               // [T, dModel]
  float* logits = nullptr;               // [T, E]
  int32_t* experts = nullptr;            // [T * k]
  float* weights = nullptr;              // [T * k]
  int32_t* tokens_per_expert = nullptr;  // [E]
  // A training forward: keep what the backward of this input and routing needs (the pre-activations), so that it
  // need not recompute them. Kept until the next keeping forward or optimizer step; CPU layers.
  bool keep_for_backward = false;
};

// Where a layer's weights are read back to (Layer::export_weights): caller-owned float32 arrays in the [out, in]
// layout, each null to skip it. The values are those the kernels compute with: 16-bit weights widened, quantized
// ones as codes times scales.
struct ExpertWeightsOut {
  float* w1 = nullptr;  // [E, dHidden, dModel]
  float* w3 = nullptr;  // [E, dHidden, dModel] (gated)
  float* w2 = nullptr;  // [E, dModel, dHidden]
  float* b1 = nullptr;  // [E, dHidden]
  float* b3 = nullptr;  // [E, dHidden]
  float* b2 = nullptr;  // [E, dModel]
};
struct LayerWeightsOut {
  float* router = nullptr;        // [E, dModel]
  float* noise_router = nullptr;  // [E, dModel]
  float* shared_gate = nullptr;   // [shared, dModel]
  ExpertWeightsOut experts, shared;
};
// Where a backward writes (Layer::backward): caller-owned float32 arrays. dx [T, dModel], d_weights [T * k] (dL/d
// each routed slot's weight; 0 for dropped slots), the experts' weight gradients in the layout of ExpertWeightsOut
// (w1 and w2 required; biases and w3 where the layer has them), the shared experts' likewise (when it has some) and
// d_shared_gate [shared, dModel] (when its shared experts are gated). The router's gradient is not here: it follows
// from d_weights through the routing rule's backward (TypeScript).
struct LayerGradients {
  float* dx = nullptr;
  float* d_weights = nullptr;
  ExpertWeightsOut experts, shared;
  float* d_shared_gate = nullptr;
};

// Gradients of a layer's parameters to apply (Layer::apply_gradients), in the layouts of LayerWeightsOut; null
// entries leave that parameter as it is.
struct ExpertGradientsIn {
  const float *w1 = nullptr, *w3 = nullptr, *w2 = nullptr, *b1 = nullptr, *b3 = nullptr, *b2 = nullptr;
};
struct ParameterGradients {
  const float* router = nullptr;
  const float* noise_router = nullptr;
  const float* shared_gate = nullptr;
  ExpertGradientsIn experts, shared;
};

// One optimizer step, PyTorch's formulas (torch.optim.SGD and AdamW), elementwise on the packed float32 weights
// with its state (momentum; first and second moments) kept beside them in the core:
//   sgd:   g += weight_decay w; buf = momentum buf + g; w -= lr buf (buf starts at zero)
//   adamw: w -= lr weight_decay w; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//          w -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps), t = step (from 1)
struct OptimizerStep {
  enum class Kind { sgd, adamw } kind = Kind::sgd;
  float lr = 0.0f, momentum = 0.0f, weight_decay = 0.0f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  int64_t step = 1;
};

// Which of a layer's optional weights it was built with.
struct LayerWeightsPresent {
  bool noise_router = false, shared_gate = false;
  bool b1 = false, b3 = false, b2 = false;                       // routed experts
  bool shared_b1 = false, shared_b3 = false, shared_b2 = false;  // shared experts
};

// Where the time of the last forward on a layer went, in milliseconds.
struct LayerTimings {
  double router = 0, routing = 0, dispatch = 0, experts = 0, combine = 0, total = 0;
  // Expert parallel: of `experts`, the milliseconds inside the all-to-all exchanges (waiting for the other ranks
  // included), and the bytes this rank sent and received in them (token rows out, outputs back, counts).
  double exchange = 0;
  double exchange_bytes_sent = 0, exchange_bytes_received = 0;
};

// The routing rule a layer's own forward applies: Mixtral's softmax top-k (every backend), DeepSeek-V3's
// sigmoid scores with a selection bias and group-limited choice (CUDA; on the CPU that rule, like every other,
// routes in TypeScript and comes back through forward_routed), or none (forward refuses: the caller routes).
struct BuiltInRouting {
  enum class Rule { softmax_top_k, sigmoid_bias, none } rule = Rule::softmax_top_k;
  int num_groups = 1, top_k_groups = 1;  // sigmoid_bias: group-limited selection (DeepSeek-V3)
  float route_scale = 1.0f;
  const float* bias = nullptr;  // [E], selection only; copied at construction
};

enum class Backend { cpu, cuda };

class ExpertCache;  // moe/expert_cache.h
// A layer whose routed experts live on disk (issue 32): their packed form in the store file at `path` (written by
// Layer::write_expert_store for the same `fingerprint`), read through `cache` into memory shared with other layers.
// spec.experts then carries their shape only (its weight pointers are not read). CPU; inference only (forward,
// forward_routed, slot_outputs, export_weights, prefetch).
struct ExpertStoreSpec {
  std::shared_ptr<ExpertCache> cache;  // null: the experts are in spec.experts, as usual
  std::string path, fingerprint;
  std::string label;  // the layer's name in the cache's stats
};

// Everything a layer is built from; the weights are read once, while it is built.
struct LayerSpec {
  LayerConfig config;
  BuiltInRouting routing;
  Backend backend = Backend::cpu;
  const float* router = nullptr;        // [E, dModel] W_g
  const float* noise_router = nullptr;  // [E, dModel] W_noise of noisy top-k, or null
  ExpertWeights experts;
  ExpertWeights shared;  // when config.shared.num_experts > 0
  // [shared experts, dModel] or null: shared expert s is scaled by sigmoid(x . shared_gate[s]) per token instead of
  // 1 (Qwen2-MoE's shared_expert_gate). CPU only.
  const float* shared_gate = nullptr;
  ExpertStoreSpec store;  // routed experts read from a store through a cache (see ExpertStoreSpec), or not
};

// Whether `path` holds a complete expert store for experts of this shape packed by this build, written for
// `fingerprint` (a store of anything else is to be rebuilt, never reused).
bool expert_store_matches(const std::string& path, const std::string& fingerprint, const ExpertShape& shape);

// A call a backend does not offer (slot outputs on CUDA, say): a caller's mistake, reported as a RangeError.
struct Unsupported : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// One MoE layer, whatever runs it: router -> routing -> dispatch -> grouped FFN -> combine. Thread-safe (calls
// on one layer are serialised). Built by make_layer; CpuLayer and cuda::CudaLayer implement it.
class Layer {
 public:
  virtual ~Layer() = default;
  // The whole layer with its built-in routing (spec.routing).
  virtual void forward(const float* x, int64_t tokens, const LayerOutputs& out) = 0;
  // logits [T, E] of the layer's router, and of its noise router (noisy top-k's W_noise; spec.noise_router).
  virtual void router_logits(const float* x, int64_t tokens, float* logits) = 0;
  virtual void noise_logits(const float* x, int64_t tokens, float* logits) = 0;
  // The expert part with routing decided by the caller: experts / weights [T * k] token-major, -1 = dropped
  // (k may differ from config.top_k). Writes output [T, dModel] and tokens_per_expert [E]. keep_for_backward: see
  // LayerOutputs.
  virtual void forward_routed(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights,
                              float* output, int32_t* tokens_per_expert, bool keep_for_backward = false) = 0;
  // Each routed slot's unweighted expert output, slot_out [T * k, dModel] (zero rows for dropped slots): what
  // dL/d(routing weights) needs, dL/dw_s = <dL/dy_t, slot_out[s]>.
  virtual void slot_outputs(const float* x, int64_t tokens, int k, const int32_t* experts, float* slot_out) = 0;
  virtual LayerTimings last_timings() const = 0;
  // The weights read back from their packed form (for saving, inspecting, or a later optimizer step's base).
  virtual void export_weights(const LayerWeightsOut& out) const = 0;
  // The backward of forward_routed with the same routing, for dL/d(output) d_out [T, dModel]: see LayerGradients.
  // Bitwise the same for any thread count.
  virtual void backward(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights,
                        const float* d_out, const LayerGradients& grads) = 0;
  // Updates the packed weights in place by one optimizer step (weightDtype float32 only: Unsupported otherwise).
  virtual void apply_gradients(const ParameterGradients& grads, const OptimizerStep& step) = 0;
  virtual LayerWeightsPresent weights_present() const = 0;
  virtual const LayerConfig& config() const = 0;
  // Bytes of weights the layer holds where it computes (host or device), and of host memory it holds.
  virtual size_t packed_bytes() const = 0;
  virtual size_t host_bytes() const = 0;
  // Whether a call over `slots` routed slots should run on the caller's thread: work this small (well under
  // the tens of microseconds a hand-off to a job thread and back costs) is done before a hand-off would be.
  virtual bool runs_inline(int64_t slots) const = 0;
  // The job queue the layer's async calls go to (post_job).
  virtual JobQueue queue() const = 0;
  // An expert-parallel layer's forwards are collective (every rank calls them); a rank whose call fails its checks
  // before it reaches the layer calls collective_failed() instead, so that the other ranks fail too.
  virtual bool collective() const { return false; }
  virtual void collective_failed() {}
  // Writes the routed experts, packed, to an expert store at `path` for `fingerprint` (ExpertStoreSpec), through a
  // temporary file renamed into place. CPU layers holding their experts.
  virtual void write_expert_store(const std::string& path, const std::string& fingerprint) const {
    (void)path, (void)fingerprint;
    throw Unsupported("moe-kernels: expected a CPU layer holding its experts to write an expert store");
  }
  // A layer reading its experts through a cache: starts reading the experts its router would choose for x (top-k
  // of the router logits), to be resident when a forward of x, or of what follows it, wants them (speculative
  // loading, Eliseev & Mazur 2023: the next layer's router applied to this layer's input guesses well). Returns
  // the reads it started; other layers: 0.
  virtual int64_t prefetch(const float* x, int64_t tokens) {
    (void)x, (void)tokens;
    return 0;
  }
};

// A layer on spec.backend; throws std::runtime_error where that backend is not compiled or has no device.
std::shared_ptr<Layer> make_layer(const LayerSpec& spec);

// The CPU layer: weights packed into the active ISA's panels, a reusable workspace, the core's thread pool.
class CpuLayer final : public Layer {
 public:
  CpuLayer(const LayerConfig& config, const float* router, const ExpertWeights& weights,
           const ExpertWeights& shared = ExpertWeights{}, const BuiltInRouting& routing = BuiltInRouting{},
           const float* noise_router = nullptr, const float* shared_gate = nullptr,
           const ExpertStoreSpec& store = ExpertStoreSpec{});
  ~CpuLayer() override;
  void forward(const float* x, int64_t tokens, const LayerOutputs& out) override;
  void router_logits(const float* x, int64_t tokens, float* logits) override;
  void noise_logits(const float* x, int64_t tokens, float* logits) override;
  void forward_routed(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights,
                      float* output, int32_t* tokens_per_expert, bool keep_for_backward = false) override;
  void slot_outputs(const float* x, int64_t tokens, int k, const int32_t* experts, float* slot_out) override;
  LayerTimings last_timings() const override;
  void export_weights(const LayerWeightsOut& out) const override;
  LayerWeightsPresent weights_present() const override;
  void backward(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights, const float* d_out,
                const LayerGradients& grads) override;
  void apply_gradients(const ParameterGradients& grads, const OptimizerStep& step) override;
  const LayerConfig& config() const override;
  size_t packed_bytes() const override;  // router and experts (the noise router is not counted)
  size_t host_bytes() const override;
  bool runs_inline(int64_t slots) const override;
  JobQueue queue() const override { return JobQueue::cpu; }
  bool collective() const override;
  void collective_failed() override;
  void write_expert_store(const std::string& path, const std::string& fingerprint) const override;
  int64_t prefetch(const float* x, int64_t tokens) override;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// --- router training (float64, like the routers' backward passes) ---------------------------------
// dL/dW [E, dModel] for logits = x W^T, from dL/dlogits [T, E] and x [T, dModel]: W_g's (or W_noise's) gradient.
// Each element sums over tokens in token order (bitwise the same for any thread count).
void router_weight_gradient(const double* grad_logits, const double* x, int64_t tokens, int64_t num_experts,
                            int64_t d_model, double* grad_router);
// The same with a float32 x (each element widened exactly): the same result as its float64 copy.
void router_weight_gradient(const double* grad_logits, const float* x, int64_t tokens, int64_t num_experts,
                            int64_t d_model, double* grad_router);
// dx [T, dModel] += dL/dlogits [T, E] W [E, dModel]: the input's gradient through the router, each token's row
// summed in float64 over experts in order, then added to dx (bitwise the same for any thread count).
void router_input_gradient(const double* grad_logits, const float* router, int64_t tokens, int64_t num_experts,
                           int64_t d_model, float* dx);
// dL/d(routing weight of slot s = t * k + j) = <dL/dy_t, slot_out[s]>, the float32 rows summed in float64 in order.
void slot_weight_gradients(const float* grad_output, const float* slot_out, int64_t tokens, int k, int64_t d_model,
                           double* grad_weights);

// The same for a layer's routing of x (experts [T * k], -1 = dropped): its slot outputs, then the dot products.
void routing_weight_gradients(Layer& layer, const float* x, int64_t tokens, int k, const int32_t* experts,
                              const float* grad_output, double* grad_weights);

// --- machine ceilings (for benchmarks) ---------------------------------------------------------------
// fp32 FMA throughput of the active ISA with `threads` pool threads busy at once, in GFLOP/s.
double measure_fma_peak(int threads, double seconds);
// Streaming read bandwidth: a buffer of `bytes` (far larger than the caches), allocated like packed weights (huge
// pages where the OS gives them) and first touched once. measure() allocates nothing, so a benchmark can take the
// read ceiling between its other measurements without fresh pages in between (a VM may fault those in from its
// host, and slow down what runs next).
class ReadProbe {
 public:
  explicit ReadProbe(size_t bytes);
  ~ReadProbe();
  // GB/s with `threads` pool threads reading one part each, best of `passes`.
  double measure(int threads, int passes) const;

 private:
  struct Buffer;
  std::unique_ptr<Buffer> buffer_;
};

// Memory for large results, allocated like packed weights (64-byte aligned; from 2 MiB on, huge-page aligned and
// advised to use transparent huge pages). Throws std::bad_alloc; free it with free_large.
void* allocate_large(size_t bytes);
void free_large(void* p);

// Index of the first non-finite value, or -1 when all are finite.
int64_t find_non_finite(const float* data, int64_t count);

}  // namespace moe
