// The routing rules of the literature in the core, in float64, each with its backward (dL/dweights -> dL/dlogits):
// what a layer runs on every forward and backward whatever its rule. lib/gating has the same rules in TypeScript
// as the public functions and the reference; test/core-routing.test.ts compares the two on random inputs. The C
// library's exp and log may differ from V8's Math.exp / Math.log in the last bit, so values agree to ~1e-15
// relative and choices agree except between logits within an ulp of a tie.
//
// Adding a rule: its file in core/rules/ (route and backward), its entry in kRules (core/rules/rules.cpp), its
// TypeScript twin in lib/gating/ with a fromCore that wraps the Gate below.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace moe {
class Layer;
struct LayerGradients;
}  // namespace moe

namespace moe::rules {

enum class Kind { top_k, soft, switch_top1, noisy_top_k, gshard_top2, expert_choice, sigmoid_bias };
constexpr int kKinds = static_cast<int>(Kind::sigmoid_bias) + 1;
// The public name ('topK', 'noisyTopK', ... as config.router.kind), or false when unknown.
bool parse_kind(const char* name, Kind* out);
const char* kind_name(Kind kind);
// Whether the rule reads the noise router's logits (x W_noise^T): noisy top-k.
bool uses_noise_router(Kind kind);

// config.router as the layer resolved it (lib/router-config.ts checks it first; check_options again).
struct Options {
  Kind kind = Kind::top_k;
  bool normalize = true;       // topK, sigmoidBias: renormalise the selected weights
  bool ties_higher = false;    // equal values go to the higher index (onnxruntime) instead of the lower (torch)
  double capacity_factor = 0;  // 0: no capacity (topK, switch, noisyTopK); gshardTop2 1, expertChoice 2 by default
  bool drop_by_score = false;  // capacity drops the lowest weights first instead of the latest positions
  int num_groups = 1, top_k_groups = 1;  // group-limited choice (DeepSeek-V2 topK, DeepSeek-V3 sigmoidBias)
  double route_scale = 1;                // multiplies the final weights
  double noise_epsilon = 1e-2;           // noisyTopK: added to softplus(x W_noise^T)
  int64_t group_size = 0;                // gshardTop2: tokens per group; 0 = the whole batch
  bool random_routing = true;            // gshardTop2: keep the second expert with probability 2 g2 (training)
  // Training only: U[0, exploration) added to the logits (Chen et al. 2022); the router's input multiplied by
  // U(1 - jitter, 1 + jitter) (Switch Transformer).
  double exploration = 0, jitter = 0;
  uint32_t seed = 0;  // of the layer's training randomness
};
// std::invalid_argument (a RangeError at the binding) for options that do not fit num_experts and top_k.
void check_options(const Options& options, int64_t num_experts, int top_k);
// The experts per token the rule routes to: config top_k, E (soft), 1 (switch), 2 (gshardTop2); expert choice's
// varies per forward (this returns top_k, unused).
int slots_per_token(const Options& options, int64_t num_experts, int top_k);

// A seeded, reproducible random source, the same sequence as lib/random.ts: xoshiro128** seeded through
// splitmix32; uniforms of 53 bits; normals by Marsaglia's polar method on 32-bit uniforms.
class Random {
 public:
  explicit Random(uint32_t seed);
  uint32_t next_uint32();
  double uniform();
  double normal();

 private:
  uint32_t s_[4];
  double spare_ = 0;
  bool has_spare_ = false;
};

// A rule's result: slots token-major (token t's at t * top_k .. t * top_k + top_k - 1), -1 for a dropped or unused
// slot, with what its backward and the balance losses read.
struct Gate {
  Kind kind = Kind::top_k;
  int64_t tokens = 0, num_experts = 0;
  int top_k = 0;
  std::vector<int32_t> experts;            // [T * k]
  std::vector<double> weights;             // [T * k], 0 for dropped slots
  std::vector<int32_t> tokens_per_expert;  // [E] after dropping
  int64_t dropped = 0;
  // [T, E] the full softmax (topK, soft, switch, gshardTop2, expertChoice) or the sigmoid scores (sigmoidBias)
  std::vector<double> probs;
  // topK, noisyTopK, gshardTop2: the experts before dropping and the softmax over their logits
  std::vector<int32_t> selected;
  std::vector<double> selected_weights;
  bool normalized = true;
  double route_scale = 1;
  int64_t capacity = 0, dropped_tokens = 0;  // gshardTop2 (last group's capacity), expertChoice
  // noisyTopK (Shazeer et al. eqs. 3-5): clean = the ranked logits, noisy = clean + noise * noise_std, the noise
  // router's logits, the k-th and (k+1)-th noisy values and their experts (the load estimator's thresholds)
  bool training = false;
  std::vector<double> clean, noisy, noise_std, noise, noise_logits, kth_noisy, kplus1_noisy;
  std::vector<int32_t> kth_expert, kplus1_expert;
};

// What a rule routes: the ranked logits [T, E] (exploration noise added), the noise router's logits (noisyTopK),
// the selection bias (sigmoidBias, [E] or null) and the seed of its own draws (noisyTopK, gshardTop2; training).
struct RouteInput {
  const double* logits = nullptr;
  const double* noise_logits = nullptr;
  const double* bias = nullptr;
  int64_t tokens = 0, num_experts = 0;
  int top_k = 0;
  bool training = false;
  uint32_t seed = 0;
};
// Routes by options.kind. std::invalid_argument for non-finite logits (named with their position).
Gate route(const Options& options, const RouteInput& in);

// dL/dlogits [T, E] (and dL/d(noise logits) [T, E] for noisyTopK, else untouched) from dL/dweights [T * k], with
// the gate's choices, dropping and noise held fixed. Both outputs are overwritten.
void backward(const Gate& gate, const double* grad_weights, double* grad_logits, double* grad_noise_logits);

}  // namespace moe::rules
