// What the routing rules share (core/rules/*.cpp): softmax rows, ranking with a tie rule, expert capacity and
// dropping, and the two softmax backwards. Each computes as its twin in lib/gating/common.ts and capacity.ts does,
// in the same order, so that the two agree to the last bit wherever exp and log do.
#pragma once
#include <cstdint>
#include <vector>

#include "moe/routing_rules.h"

namespace moe::rules {

// A rule's route and backward (one pair per rule, in its own file).
using RouteFn = void (*)(const Options&, const RouteInput&, Gate&);
using BackwardFn = void (*)(const Gate&, const double* grad_weights, double* grad_logits, double* grad_noise_logits);

// Softmax of one row of n values (max subtracted), into out.
void softmax_row(const double* row, int64_t n, double* out);
// Softmax of every row of a [T, E] matrix.
std::vector<double> softmax_rows(const double* data, int64_t tokens, int64_t n);

// The indices of the k largest of values[offset + i * stride] (i < count), largest first; equal values go to the
// lower index, or the higher one with `higher`. `allowed` (count flags, or null) masks candidates.
void rank_top(const double* values, int64_t offset, int64_t count, int64_t k, bool higher, const char* allowed,
              int64_t stride, std::vector<int32_t>& out);

// Group-limited choice (DeepSeek-V2 / V3): allowed[e] = 1 for the experts of the top_k_groups groups (of
// num_groups equal groups of group_size) with the largest group_score, ties to the lower group; 0 for the others.
void allow_best_groups(const std::vector<double>& group_score, int top_k_groups, int64_t group_size,
                       std::vector<char>& allowed);

// Slots one expert may take: max(1, ceil(k T capacity_factor / E)) (Switch eq. 3; GShard's 2S/E for top-2).
int64_t expert_capacity(int64_t tokens, int64_t num_experts, int k, double capacity_factor);
// Drops the slots over each expert's capacity (expert -1, weight 0); returns how many. By position: every token's
// first choice before any second, then in token order (GShard, DeepSpeed); by score: the highest weights first.
int64_t apply_capacity(int32_t* experts, double* weights, const double* scores, int64_t tokens, int k,
                       int64_t num_experts, int64_t capacity, bool by_score);
std::vector<int32_t> count_per_expert(const std::vector<int32_t>& experts, int64_t num_experts);

// Weights that are a softmax over each token's selected logits: dl_i = w_i (g_i - sum_j w_j g_j) over the selected
// i (a dropped slot's upstream gradient ignored, its expert still in the denominator).
void selected_softmax_backward(const Gate& gate, const double* grad, double* out);
// Weights that are full-softmax probabilities p: dl_i = p_i (G_i - sum_e p_e G_e), G_e summed over e's slots.
void full_softmax_backward(const Gate& gate, const double* grad, double* out);

// The rules (core/rules/<rule>.cpp).
void route_top_k(const Options&, const RouteInput&, Gate&);
void backward_top_k(const Gate&, const double*, double*, double*);
void route_soft(const Options&, const RouteInput&, Gate&);
void route_switch(const Options&, const RouteInput&, Gate&);
void route_noisy_top_k(const Options&, const RouteInput&, Gate&);
void backward_noisy_top_k(const Gate&, const double*, double*, double*);
void route_gshard_top2(const Options&, const RouteInput&, Gate&);
void route_expert_choice(const Options&, const RouteInput&, Gate&);
void route_sigmoid_bias(const Options&, const RouteInput&, Gate&);
void backward_sigmoid_bias(const Gate&, const double*, double*, double*);
// The backwards that are one of the two above as they stand.
void backward_full_softmax(const Gate&, const double*, double*, double*);
void backward_selected_softmax(const Gate&, const double*, double*, double*);

}  // namespace moe::rules
