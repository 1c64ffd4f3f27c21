// Internal pieces of the expert path shared by the free functions and the Layer.
#pragma once
#include <vector>

#include "aligned_buffer.h"
#include "expert_store.h"
#include "moe/moe.h"
#include "packing.h"

namespace moe {

class PackedExperts {
 public:
  PackedExperts(const ExpertShape& shape, const ExpertWeights& weights);
  // No weights, only their geometry: the experts of a layer whose panels are read from a store (ExpertRecords).
  explicit PackedExperts(const ExpertShape& shape);
  ExpertShape shape;
  PackedMatrix up;    // W1 (with W3 interleaved when gated): dModel -> dHidden, activation fused
  PackedMatrix down;  // W2: dHidden -> dModel
};

struct FfnWorkspace {
  AlignedBuffer<float> hidden;    // [routed slots, dHidden], expert-sorted, packed as the second GEMM's A
  AlignedBuffer<float> packed_a;  // the GEMM input rows, packed per row tile (cpu::KernelTable::pack_a)
  std::vector<char> routed;       // per slot, for zeroing dropped ones
};

// One group of rows multiplied by one packed matrix: an expert's segment, all tokens for the router, or one of the
// backward's GEMMs (core/backward.cpp).
struct GemmGroup {
  cpu::GemmProblem problem;
  int64_t rows;
  const float* packed_a = nullptr;  // A already in pack_a's layout (written so by the previous GEMM), or null
  int64_t panels = 0;               // panels of B (problem.panels)
  // Every panel tile of a chunk of rows before the next chunk, whatever A's size: for a B much smaller than A (the
  // backward's GEMMs, whose A is a weight matrix or thousands of rows and whose B is a few tokens' data).
  bool chunk_major = false;
};

// Runs the groups' GEMMs over the thread pool: work items are (group, row tile, panel tile), each writing its own
// outputs with the reduction in a fixed order, so results are bitwise the same for any thread count. out_cols:
// output columns per panel (the kernels' nr, or nr / 2 for a gated epilogue).
void run_gemm_groups(std::vector<GemmGroup>& groups, int64_t out_cols, WeightDtype dtype,
                     AlignedBuffer<float>& packed_a);

// Two lists of groups in one job of the pool, where group j of `second` reads (as its packed A) what group j of
// `first` writes: each of second's items waits for its group's items of first, not for all of them.
void run_gemm_chain(std::vector<GemmGroup>& first, int64_t first_cols, WeightDtype first_dtype,
                    std::vector<GemmGroup>& second, int64_t second_cols, WeightDtype second_dtype,
                    AlignedBuffer<float>& packed_a);

// Experts whose panels lie in records read from their store (core/expert_store.h) instead of in the PackedExperts:
// per expert its record, or null for one this call leaves out (its slots untouched).
struct ExpertRecords {
  const unsigned char* const* records = nullptr;
  StoreLayout layout;
};

// Leaves the rows of slots outside the plan untouched (see zero_unrouted_slots).
// records: where the experts' panels are when not in `packed` (see ExpertRecords), or null.
// pre_out: where to keep the up GEMM's pre-activations (rows in plan order, up.panel_count() * nr columns), or null.
void expert_ffn(const PackedExperts& packed, const float* x, int64_t tokens, int k, const int32_t* expert_offsets,
                const int32_t* order, float* slot_out, FfnWorkspace& workspace, float* pre_out = nullptr,
                const ExpertRecords* records = nullptr);

// Zeroes the rows of the slots that are not among the first `routed` entries of `order` (dropped slots).
void zero_unrouted_slots(const int32_t* order, int64_t routed, int64_t slots, int64_t d_model, float* slot_out,
                         FfnWorkspace& workspace);

// Scratch of experts_backward, reused across calls (grow-only).
struct BackwardWorkspace {
  AlignedBuffer<float> pre, b, q, act, dpre_rows, dy_rows, column_sums, packed_t, packed_t2, packed_a, dx_slots;
  AlignedBuffer<int32_t> columns;
};

// The backward of expert_ffn over the same plan (core/backward.cpp): for each slot in the plan, d_slot_weights[slot]
// = <d_out[token], y_slot> and dx_slots[slot] (rows [slots, dModel]; rows of slots outside the plan untouched) the
// input's gradient through that slot; the weights' gradients of every expert into g (each expert's written whole,
// zeros for one without rows; null pointers skipped). slot_weights: the weight each slot's output was combined
// with. kept_pre: the pre-activations the forward kept for these rows ([rows in plan order, up columns], see
// Layer training), or null to recompute them.
void experts_backward(const PackedExperts& packed, const float* x, int slots_per_token, const int32_t* offsets,
                      const int32_t* order, const float* slot_weights, const float* d_out, float* d_slot_weights,
                      float* dx_slots, const ExpertWeightsOut& g, BackwardWorkspace& workspace,
                      const float* kept_pre = nullptr);

// x[T, dModel] times a packed [1, n, dModel] matrix, identity epilogue: the router logits.
void packed_router_logits(const PackedMatrix& router, const float* x, int64_t tokens, int64_t d_model, float* logits,
                          FfnWorkspace& workspace);

}  // namespace moe
