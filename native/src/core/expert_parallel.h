// Expert parallelism (issue 20; GShard, DeepSpeed-MoE, Tutel): each rank owns a contiguous slice of the routed
// experts; a forward sends every routed slot's token row to its expert's owner, which runs its slice's grouped FFN
// and sends the outputs back, in two all-to-all exchanges (ExpertExchange).
#pragma once
#include <vector>

#include "aligned_buffer.h"
#include "expert_exchange.h"
#include "experts.h"
#include "moe/moe.h"

namespace moe {

// The first expert of every rank and the end: bounds[r] .. bounds[r + 1] are rank r's. slices: experts per rank
// (empty: as even as possible, the first E % ranks ranks one more). Throws std::invalid_argument when slices do not
// name `ranks` counts >= 0 that add up to num_experts.
std::vector<int64_t> expert_bounds(int64_t num_experts, int ranks, const std::vector<int32_t>& slices);

// The weights of experts first .. first + count - 1 of a [E, ...] set: every pointer moved to expert `first`.
ExpertWeights slice_weights(const ExpertShape& shape, const ExpertWeights& w, int64_t first);

// What one forward's exchanges cost this rank (LayerTimings::exchange and its bytes).
struct ExchangeStats {
  double ms = 0, bytes_sent = 0, bytes_received = 0;
};

struct ExchangeWorkspace {
  AlignedBuffer<float> send_rows, recv_rows, results, returned;
  AlignedBuffer<float> rows_x, rows_go, rows_w, rows_dx, rows_dw;  // the backward's rows, expert-major
  std::vector<int64_t> source_of;                                  // expert-major row -> source-major row
  std::vector<int32_t> counts_out, counts_in, local_offsets, identity;
  std::vector<int64_t> sc, so, rc, ro;
};

// The routed slots of one forward (the plan of dispatch over all E experts: offsets [E + 1], order) computed where
// their experts live: rows x[token] out, outputs back into slot_out[slot]. The owner runs the rows of each source
// rank as their own groups, so every output is bitwise the one a single process holding all experts computes for
// that rank's tokens. Collective: every rank calls it once per forward.
void exchange_routed(ExpertExchange& exchange, const std::vector<int64_t>& bounds, const PackedExperts& local,
                     const float* x, int64_t d_model, int slots_per_token, const int32_t* offsets, const int32_t* order,
                     float* slot_out, ExchangeWorkspace& ws, FfnWorkspace& ffn, ExchangeStats& stats);

// The backward of exchange_routed's slots (see experts_backward): each routed slot's token row, output gradient and
// weight go to its expert's owner, which runs the backward of its slice over the rows of every source rank together,
// expert by expert in rank order (the rows a single process given every rank's tokens in rank order would have), and
// sends each row's dL/dx and dL/d(weight) back into dx_slots and d_slot_weights. The weight gradients stay here, in
// g_local (this rank's experts). Collective.
void exchange_backward(ExpertExchange& exchange, const std::vector<int64_t>& bounds, const PackedExperts& local,
                       const float* x, const float* d_out, int64_t d_model, int slots_per_token, const int32_t* offsets,
                       const int32_t* order, const float* slot_weights, float* d_slot_weights, float* dx_slots,
                       const ExpertWeightsOut& g_local, BackwardWorkspace& backward, ExchangeWorkspace& ws);

}  // namespace moe
