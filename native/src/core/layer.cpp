// The MoE layer: router -> top-k -> dispatch -> grouped expert FFN -> combine, over a reusable workspace.
#include <mutex>

#include "experts.h"
#include "isa.h"
#include "thread_pool.h"

namespace moe {

struct Layer::State {
  State(const LayerConfig& c, const float* router_weights, const ExpertWeights& w)
      : config(c),
        router(kernels().geometry, 1, c.experts.num_experts, c.experts.d_model, router_weights, nullptr),
        experts(c.experts, w) {}
  LayerConfig config;
  PackedMatrix router;
  PackedExperts experts;
  std::mutex mutex;  // one forward at a time on this layer's workspace
  FfnWorkspace ffn;
  AlignedBuffer<float> slot_out;
  AlignedBuffer<int32_t> offsets, order;
};

Layer::Layer(const LayerConfig& config, const float* router, const ExpertWeights& weights)
    : state_(std::make_unique<State>(config, router, weights)) {}
Layer::~Layer() = default;

const LayerConfig& Layer::config() const { return state_->config; }
size_t Layer::packed_bytes() const { return state_->router.bytes() + moe::packed_bytes(state_->experts); }

void Layer::forward(const float* x, int64_t tokens, const LayerOutputs& out) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  const ThreadLimit limit(s.config.threads);
  const ExpertShape& shape = s.config.experts;
  const int k = s.config.top_k;
  const int64_t slots = tokens * k;
  packed_router_logits(s.router, x, tokens, shape.d_model, out.logits);
  top_k_softmax(out.logits, tokens, shape.num_experts, k, s.config.normalize_top_k, out.experts, out.weights);
  int32_t* offsets = s.offsets.reserve(static_cast<size_t>(shape.num_experts + 1));
  int32_t* order = s.order.reserve(static_cast<size_t>(slots));
  dispatch(out.experts, slots, shape.num_experts, out.tokens_per_expert, offsets, order);
  float* slot_out = s.slot_out.reserve(static_cast<size_t>(slots * shape.d_model));
  expert_ffn(s.experts, x, tokens, k, offsets, order, slot_out, s.ffn);
  combine(slot_out, out.weights, tokens, k, shape.d_model, out.output);
}

}  // namespace moe
