// Internal pieces of the expert path shared by the free functions and the Layer.
#pragma once
#include <vector>

#include "aligned_buffer.h"
#include "moe/moe.h"
#include "packing.h"

namespace moe {

class PackedExperts {
 public:
  PackedExperts(const ExpertShape& shape, const ExpertWeights& weights);
  ExpertShape shape;
  PackedMatrix up;    // W1 (with W3 interleaved when gated): dModel -> dHidden, activation fused
  PackedMatrix down;  // W2: dHidden -> dModel
};

struct FfnWorkspace {
  AlignedBuffer<float> hidden;    // [routed slots, dHidden], expert-sorted, packed as the second GEMM's A
  AlignedBuffer<float> packed_a;  // the GEMM input rows, packed per row tile (cpu::KernelTable::pack_a)
  std::vector<char> routed;       // per slot, for zeroing dropped ones
};

// Leaves the rows of slots outside the plan untouched (see zero_unrouted_slots).
void expert_ffn(const PackedExperts& packed, const float* x, int64_t tokens, int k, const int32_t* expert_offsets,
                const int32_t* order, float* slot_out, FfnWorkspace& workspace);

// Zeroes the rows of the slots that are not among the first `routed` entries of `order` (dropped slots).
void zero_unrouted_slots(const int32_t* order, int64_t routed, int64_t slots, int64_t d_model, float* slot_out,
                         FfnWorkspace& workspace);

// The backward of expert_ffn over the same plan (core/backward.cpp): for each slot in the plan, d_slot_weights[slot]
// = <d_out[token], y_slot> and dx_slots[slot] (rows [slots, dModel], added to: start from zeros) the input's
// gradient through that slot; the weights' gradients of every expert into g (each expert's written whole, zeros
// for one without rows; null pointers skipped). slot_weights: the weight each slot's output was combined with.
void experts_backward(const PackedExperts& packed, const float* x, int slots_per_token, const int32_t* offsets,
                      const int32_t* order, const float* slot_weights, const float* d_out, float* d_slot_weights,
                      float* dx_slots, const ExpertWeightsOut& g);

// x[T, dModel] times a packed [1, n, dModel] matrix, identity epilogue: the router logits.
void packed_router_logits(const PackedMatrix& router, const float* x, int64_t tokens, int64_t d_model, float* logits,
                          FfnWorkspace& workspace);

}  // namespace moe
