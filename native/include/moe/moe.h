// moe-kernels core C++ API: plain pointers and small shape structs, no Node types.
// Every array is row-major float32 unless named otherwise. Weight layouts follow nn.Linear: [out, in].
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace moe {

enum class Isa { scalar, avx2, avx512, neon };
const char* isa_name(Isa isa);

// Activation of the expert FFN. Gated ones compute act(x W1^T + b1) * (x W3^T + b3) (Shazeer 2020, GLU variants).
enum class Activation { swiglu, geglu, gelu, gelu_tanh, relu, silu, identity };
inline bool is_gated(Activation act) { return act == Activation::swiglu || act == Activation::geglu; }
// Parses the public name ('swiglu', 'gelu-tanh', ...); returns false when unknown.
bool parse_activation(const std::string& name, Activation* out);

// --- backend --------------------------------------------------------------------------------------
Isa active_isa();                       // chosen once at load: best supported, or MOE_FORCE_ISA
std::vector<Isa> supported_isas();      // every ISA this CPU can run and this build compiled
int thread_count();
void set_thread_count(int threads);     // 1..256; the pool resizes between calls
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
void top_k_softmax(const float* logits, int64_t tokens, int64_t num_experts, int k, bool normalize,
                   int32_t* experts, float* weights);

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
};

struct ExpertWeights {            // host pointers, read once by pack_experts; biases may be null
  const float* w1 = nullptr;      // [E, dHidden, dModel] gate (or the only up-projection)
  const float* w3 = nullptr;      // [E, dHidden, dModel] up; required iff the activation is gated
  const float* w2 = nullptr;      // [E, dModel, dHidden] down
  const float* b1 = nullptr;      // [E, dHidden]
  const float* b3 = nullptr;      // [E, dHidden]
  const float* b2 = nullptr;      // [E, dModel]
};

class PackedExperts;              // weights in the active ISA's panel layout, immutable once built
std::shared_ptr<const PackedExperts> pack_experts(const ExpertShape& shape, const ExpertWeights& weights);
const ExpertShape& packed_shape(const PackedExperts& packed);
size_t packed_bytes(const PackedExperts& packed);

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
  ExpertShape experts;            // the routed experts
  int top_k = 2;
  bool normalize_top_k = true;
  int threads = 0;                // at most this many pool threads per forward; 0 = all
  ExpertShape shared;             // always-on shared experts (DeepSeekMoE); shared.num_experts = 0 for none
};

struct LayerOutputs {             // caller-owned buffers
  float* output = nullptr;        // [T, dModel]
  float* logits = nullptr;        // [T, E]
  int32_t* experts = nullptr;     // [T * k]
  float* weights = nullptr;       // [T * k]
  int32_t* tokens_per_expert = nullptr;  // [E]
};

// Where the time of the last forward on a layer went, in milliseconds.
struct LayerTimings {
  double router = 0, routing = 0, dispatch = 0, experts = 0, combine = 0, total = 0;
};

// router -> top-k -> dispatch -> grouped FFN -> combine, with a reusable workspace; thread-safe (calls on one
// layer are serialised).
class Layer {
 public:
  Layer(const LayerConfig& config, const float* router, const ExpertWeights& weights,
        const ExpertWeights& shared = ExpertWeights{});
  ~Layer();
  // The whole layer with the built-in softmax top-k routing.
  void forward(const float* x, int64_t tokens, const LayerOutputs& out);
  // logits [T, E] of the layer's router.
  void router_logits(const float* x, int64_t tokens, float* logits);
  // The expert part with routing decided by the caller: experts / weights [T * k] token-major, -1 = dropped
  // (k may differ from config.top_k). Writes output [T, dModel] and tokens_per_expert [E].
  void forward_routed(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights,
                      float* output, int32_t* tokens_per_expert);
  // Each routed slot's unweighted expert output, slot_out [T * k, dModel] (zero rows for dropped slots): what
  // dL/d(routing weights) needs, dL/dw_s = <dL/dy_t, slot_out[s]>.
  void slot_outputs(const float* x, int64_t tokens, int k, const int32_t* experts, float* slot_out);
  const LayerConfig& config() const;
  size_t packed_bytes() const;
  LayerTimings last_timings() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

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

// Index of the first non-finite value, or -1 when all are finite.
int64_t find_non_finite(const float* data, int64_t count);

}  // namespace moe
