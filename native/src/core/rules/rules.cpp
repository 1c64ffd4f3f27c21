// The table of routing rules (one entry each: public name, route, backward, whether it reads the noise router), the
// options' checks, and route / backward by kind.
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common.h"
#include "moe/keyed_table.h"

namespace moe::rules {

namespace {

struct RuleInfo {
  Kind key;
  const char* name;  // config.router.kind (lib/gating/registry.ts has the same names; a test compares them)
  RouteFn route;
  BackwardFn backward;
  bool uses_noise_router;
};

constexpr std::array<RuleInfo, kKinds> kRules = keyed_table<RuleInfo>({
    {Kind::top_k, "topK", route_top_k, backward_top_k, false},
    {Kind::soft, "soft", route_soft, backward_full_softmax, false},
    {Kind::switch_top1, "switch", route_switch, backward_full_softmax, false},
    {Kind::noisy_top_k, "noisyTopK", route_noisy_top_k, backward_noisy_top_k, true},
    {Kind::gshard_top2, "gshardTop2", route_gshard_top2, backward_selected_softmax, false},
    {Kind::expert_choice, "expertChoice", route_expert_choice, backward_full_softmax, false},
    {Kind::sigmoid_bias, "sigmoidBias", route_sigmoid_bias, backward_sigmoid_bias, false},
});

const RuleInfo& info(Kind kind) { return kRules[static_cast<int>(kind)]; }

[[noreturn]] void refuse(const std::string& expected, const std::string& got) {
  throw std::invalid_argument("moe-kernels: expected " + expected + " but got " + got);
}

std::string number(double v) {
  std::string s = std::to_string(v);
  return s;
}

}  // namespace

bool parse_kind(const char* name, Kind* out) {
  for (const RuleInfo& r : kRules)
    if (std::strcmp(r.name, name) == 0) {
      *out = r.key;
      return true;
    }
  return false;
}
const char* kind_name(Kind kind) { return info(kind).name; }
bool uses_noise_router(Kind kind) { return info(kind).uses_noise_router; }

int slots_per_token(const Options& o, int64_t num_experts, int top_k) {
  switch (o.kind) {
    case Kind::soft: return static_cast<int>(num_experts);
    case Kind::switch_top1: return 1;
    case Kind::gshard_top2: return 2;
    default: return top_k;
  }
}

void check_options(const Options& o, int64_t n, int top_k) {
  const int k = slots_per_token(o, n, top_k);
  if (k < 1 || k > n) refuse("k in [1, " + std::to_string(n) + "] (numExperts)", std::to_string(k));
  if (o.kind == Kind::gshard_top2 && n < 2) refuse("at least 2 experts for top-2 gating", std::to_string(n));
  if (!(o.capacity_factor >= 0) || !std::isfinite(o.capacity_factor))
    refuse("capacityFactor to be a finite number > 0", number(o.capacity_factor));
  if (o.num_groups < 1 || n % o.num_groups != 0)
    refuse("numGroups to divide numExperts = " + std::to_string(n), std::to_string(o.num_groups));
  if (o.top_k_groups < 1 || o.top_k_groups > o.num_groups)
    refuse("topKGroups in [1, " + std::to_string(o.num_groups) + "]", std::to_string(o.top_k_groups));
  if (k > o.top_k_groups * (n / o.num_groups))
    refuse("k at most topKGroups x experts per group = " + std::to_string(o.top_k_groups * (n / o.num_groups)),
           std::to_string(k));
  if (!(o.route_scale > 0) || !std::isfinite(o.route_scale))
    refuse("routeScale to be a finite number > 0", number(o.route_scale));
  if (!(o.noise_epsilon >= 0) || !std::isfinite(o.noise_epsilon))
    refuse("noiseEpsilon to be a finite number >= 0", number(o.noise_epsilon));
  if (!(o.exploration >= 0) || !std::isfinite(o.exploration))
    refuse("explorationNoise to be a finite number >= 0", number(o.exploration));
  if (!(o.jitter >= 0) || !(o.jitter < 1)) refuse("jitter in [0, 1)", number(o.jitter));
  if (o.group_size < 0) refuse("groupSize >= 1", std::to_string(o.group_size));
}

Gate route(const Options& o, const RouteInput& in) {
  const int64_t n = in.num_experts, count = in.tokens * n;
  const auto check_finite = [&](const double* m, const char* name) {
    for (int64_t i = 0; m && i < count; ++i)
      if (!std::isfinite(m[i]))
        refuse(std::string(name) + " to contain only finite values", (std::isnan(m[i]) ? std::string("NaN")
                                                                      : m[i] > 0       ? "Infinity"
                                                                                       : "-Infinity") +
                                                                         " at " + name + "[" + std::to_string(i / n) +
                                                                         ", " + std::to_string(i % n) + "]");
  };
  check_finite(in.logits, "logits");
  if (info(o.kind).uses_noise_router) {
    if (!in.noise_logits) refuse("the noise router's logits for noisy top-k", "none");
    check_finite(in.noise_logits, "noiseLogits");
  }
  Gate gate;
  gate.kind = o.kind;
  gate.tokens = in.tokens;
  gate.num_experts = n;
  gate.top_k = slots_per_token(o, n, in.top_k);
  RouteInput routed = in;
  routed.top_k = gate.top_k;
  info(o.kind).route(o, routed, gate);
  // (expert choice's tokens per expert are its capacity, the others' the slots each expert kept)
  gate.tokens_per_expert =
      o.kind == Kind::expert_choice ? std::vector<int32_t>(static_cast<size_t>(n), static_cast<int32_t>(gate.capacity))
      : o.kind == Kind::soft        ? std::vector<int32_t>(static_cast<size_t>(n), static_cast<int32_t>(in.tokens))
                                    : count_per_expert(gate.experts, n);
  return gate;
}

void backward(const Gate& gate, const double* grad_weights, double* grad_logits, double* grad_noise_logits) {
  info(gate.kind).backward(gate, grad_weights, grad_logits, grad_noise_logits);
}

}  // namespace moe::rules
