// Softmax top-k routing (Mixtral / Hugging Face rule; docs/routing.md, topK) and the dropless dispatch plan.
#include <algorithm>
#include <cmath>
#include <vector>

#include "moe/moe.h"

namespace moe {

// HF MixtralSparseMoeBlock: softmax over all E logits, top-k, renormalise the k (Jiang et al. 2024);
// without renormalisation the weights are the full-softmax probabilities (Switch, Fedus et al. eq. 2).
// Selection compares logits (softmax is monotonic); ties go to the lower expert index.
void top_k_softmax(const float* logits, int64_t tokens, int64_t num_experts, int k, bool normalize, int32_t* experts,
                   float* weights) {
  thread_local std::vector<double> e;  // grow-only scratch: no allocation once warm
  thread_local std::vector<char> taken;
  e.resize(static_cast<size_t>(num_experts));
  taken.resize(static_cast<size_t>(num_experts));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits + t * num_experts;
    const float m = *std::max_element(l, l + num_experts);
    double all = 0.0;
    for (int64_t i = 0; i < num_experts; ++i) all += (e[i] = std::exp(static_cast<double>(l[i]) - m));
    std::fill(taken.begin(), taken.end(), 0);
    double selected = 0.0;
    int32_t* slot_expert = experts + t * k;
    for (int j = 0; j < k; ++j) {
      int64_t best = -1;
      for (int64_t i = 0; i < num_experts; ++i)
        if (!taken[i] && (best < 0 || l[i] > l[best])) best = i;
      taken[best] = 1;
      slot_expert[j] = static_cast<int32_t>(best);
      selected += e[best];
    }
    const double denominator = normalize ? selected : all;
    for (int j = 0; j < k; ++j) weights[t * k + j] = static_cast<float>(e[slot_expert[j]] / denominator);
  }
}

// MegaBlocks-style dropless plan: histogram, exclusive prefix sum, then a stable counting-sort permutation,
// so the slots of one expert keep token order and every result is deterministic.
void dispatch(const int32_t* experts, int64_t slots, int64_t num_experts, int32_t* tokens_per_expert,
              int32_t* expert_offsets, int32_t* order) {
  std::fill(tokens_per_expert, tokens_per_expert + num_experts, 0);
  for (int64_t s = 0; s < slots; ++s)
    if (experts[s] >= 0) ++tokens_per_expert[experts[s]];
  expert_offsets[0] = 0;
  for (int64_t e = 0; e < num_experts; ++e) expert_offsets[e + 1] = expert_offsets[e] + tokens_per_expert[e];
  // tokens_per_expert doubles as the write cursor, then is restored from the offsets.
  std::copy(expert_offsets, expert_offsets + num_experts, tokens_per_expert);
  for (int64_t s = 0; s < slots; ++s)
    if (experts[s] >= 0) order[tokens_per_expert[experts[s]]++] = static_cast<int32_t>(s);
  for (int64_t e = 0; e < num_experts; ++e) tokens_per_expert[e] = expert_offsets[e + 1] - expert_offsets[e];
  std::fill(order + expert_offsets[num_experts], order + slots, -1);
}

}  // namespace moe
