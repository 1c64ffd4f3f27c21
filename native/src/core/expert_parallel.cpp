// Expert parallelism: the two all-to-all exchanges of a forward around the owner's grouped FFN (see
// expert_parallel.h).
#include "expert_parallel.h"

#include <chrono>
#include <numeric>
#include <stdexcept>
#include <string>

#include "thread_pool.h"
#include "weight_formats.h"

namespace moe {

std::vector<int64_t> expert_bounds(int64_t num_experts, int ranks, const std::vector<int32_t>& slices) {
  std::vector<int64_t> bounds(static_cast<size_t>(ranks) + 1, 0);
  if (slices.empty()) {
    for (int r = 0; r < ranks; ++r) bounds[r + 1] = bounds[r] + num_experts / ranks + (r < num_experts % ranks ? 1 : 0);
    return bounds;
  }
  if (static_cast<int64_t>(slices.size()) != ranks)
    throw std::invalid_argument("moe-kernels: expected expertParallel.slices to have one count per rank (" +
                                std::to_string(ranks) + ") but got " + std::to_string(slices.size()));
  for (int r = 0; r < ranks; ++r) {
    if (slices[r] < 0)
      throw std::invalid_argument("moe-kernels: expected expertParallel.slices to be counts >= 0 but got " +
                                  std::to_string(slices[r]) + " for rank " + std::to_string(r));
    bounds[r + 1] = bounds[r] + slices[r];
  }
  if (bounds[ranks] != num_experts)
    throw std::invalid_argument("moe-kernels: expected expertParallel.slices to add up to numExperts (" +
                                std::to_string(num_experts) + ") but they add up to " + std::to_string(bounds[ranks]));
  return bounds;
}

ExpertWeights slice_weights(const ExpertShape& s, const ExpertWeights& w, int64_t first) {
  const int64_t h = s.d_hidden, d = s.d_model;
  ExpertWeights out = w;
  // A matrix of `rows` rows of `cols` inputs per expert, in whichever of its three forms it came.
  const auto move = [&](const float*& f, QuantizedSource& q, HalfSource& half, int64_t rows, int64_t cols,
                        WeightDtype dtype) {
    if (f) f += first * rows * cols;
    if (half.bits) half.bits += first * rows * cols;
    if (q.codes) {
      const int64_t groups = scales_per_row(dtype, cols, s.group_size);
      q.codes += first * rows * code_bytes(dtype, cols);
      q.scales += first * rows * groups;
    }
  };
  move(out.w1, out.q1, out.h1, h, d, s.weight_dtype);
  move(out.w3, out.q3, out.h3, h, d, s.weight_dtype);
  move(out.w2, out.q2, out.h2, d, h, down_dtype(s));
  if (out.b1) out.b1 += first * h;
  if (out.b3) out.b3 += first * h;
  if (out.b2) out.b2 += first * d;
  return out;
}

namespace {

// fn(i) for i < n over the pool, 64 rows an item: the gathers and scatters of rows around the exchanges.
template <class F>
void for_rows(int64_t n, F&& fn) {
  ThreadPool::instance().run((n + 63) / 64, [&](int64_t blk) {
    for (int64_t i = blk * 64; i < std::min(n, blk * 64 + 64); ++i) fn(i);
  });
}

// The all-to-alls of one call, timed, with their bytes to and from the other ranks (what stays here is not counted).
struct TimedExchange {
  ExpertExchange& ex;
  ExchangeStats& stats;
  template <class T>
  void operator()(const T* send, const int64_t* sc, const int64_t* so, T* recv, const int64_t* rc, const int64_t* ro) {
    const auto t0 = std::chrono::steady_clock::now();
    ex.all_to_all(send, sc, so, recv, rc, ro);
    stats.ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    for (int q = 0; q < ex.size(); ++q)
      if (q != ex.rank())
        stats.bytes_sent += static_cast<double>(sc[q] * sizeof(T)),
            stats.bytes_received += static_cast<double>(rc[q] * sizeof(T));
  }
};

// Both exchanges' first step: to rank q the row counts of its experts, from every rank those of mine
// (ws.counts_in[q * mine + e]). Returns where each source rank's rows start among the rows received here
// ([ranks + 1], in rank order).
std::vector<int64_t> exchange_counts(TimedExchange& exchange, const std::vector<int64_t>& bounds,
                                     const int32_t* offsets, ExchangeWorkspace& ws) {
  const int ranks = exchange.ex.size(), me = exchange.ex.rank();
  const int64_t mine = bounds[me + 1] - bounds[me], routed_experts = bounds[ranks];
  const size_t R = static_cast<size_t>(ranks);
  ws.sc.assign(R, 0), ws.so.assign(R, 0), ws.rc.assign(R, 0), ws.ro.assign(R, 0);
  ws.counts_out.resize(static_cast<size_t>(routed_experts));
  for (int64_t e = 0; e < routed_experts; ++e) ws.counts_out[e] = offsets[e + 1] - offsets[e];
  ws.counts_in.assign(R * static_cast<size_t>(mine), 0);
  for (int q = 0; q < ranks; ++q) {
    ws.sc[q] = bounds[q + 1] - bounds[q], ws.so[q] = bounds[q];
    ws.rc[q] = mine, ws.ro[q] = q * mine;
  }
  exchange(ws.counts_out.data(), ws.sc.data(), ws.so.data(), ws.counts_in.data(), ws.rc.data(), ws.ro.data());
  std::vector<int64_t> source_at(R + 1, 0);
  for (int q = 0; q < ranks; ++q) {
    source_at[q + 1] = source_at[q];
    for (int64_t e = 0; e < mine; ++e) source_at[q + 1] += ws.counts_in[q * mine + e];
  }
  return source_at;
}

// The counts and offsets (in floats) of an exchange of rows of `width` floats: to rank q the rows of its experts in
// plan order, from rank q its rows for mine (at source_at[q]).
void row_counts(const std::vector<int64_t>& bounds, const int32_t* offsets, const std::vector<int64_t>& source_at,
                int64_t width, ExchangeWorkspace& ws) {
  for (size_t q = 0; q + 1 < bounds.size(); ++q) {
    ws.sc[q] = (offsets[bounds[q + 1]] - offsets[bounds[q]]) * width;
    ws.so[q] = (offsets[bounds[q]] - offsets[0]) * width;
    ws.rc[q] = (source_at[q + 1] - source_at[q]) * width, ws.ro[q] = source_at[q] * width;
  }
}

}  // namespace

void exchange_routed(ExpertExchange& ex, const std::vector<int64_t>& bounds, const PackedExperts& local, const float* x,
                     int64_t d, int spt, const int32_t* offsets, const int32_t* order, float* slot_out,
                     ExchangeWorkspace& ws, FfnWorkspace& ffn, ExchangeStats& stats) {
  const int ranks = ex.size(), me = ex.rank();
  const int64_t mine = bounds[me + 1] - bounds[me], routed_experts = bounds[ranks];
  stats = ExchangeStats{};
  TimedExchange exchange{ex, stats};

  // 1. Rows per expert: to rank q the counts of its experts; from every rank, the counts of mine.
  const std::vector<int64_t> source_at = exchange_counts(exchange, bounds, offsets, ws);
  const int64_t in_rows = source_at[ranks];

  // 2. The token rows in plan order (the experts of rank q are contiguous in it).
  const int64_t out_rows = offsets[routed_experts] - offsets[0];
  float* send = ws.send_rows.reserve(static_cast<size_t>(std::max<int64_t>(1, out_rows * d)));
  for_rows(out_rows, [&](int64_t p) {
    const float* row = x + static_cast<int64_t>(order[offsets[0] + p] / spt) * d;
    std::copy(row, row + d, send + p * d);
  });
  row_counts(bounds, offsets, source_at, d, ws);
  float* recv = ws.recv_rows.reserve(static_cast<size_t>(std::max<int64_t>(1, in_rows * d)));
  exchange(static_cast<const float*>(send), ws.sc.data(), ws.so.data(), recv, ws.rc.data(), ws.ro.data());

  // 3. My slice's FFN, each source's rows as their own groups (the row blocks a single process would form).
  float* results = ws.results.reserve(static_cast<size_t>(std::max<int64_t>(1, in_rows * d)));
  ws.identity.resize(static_cast<size_t>(std::max<int64_t>(1, in_rows)));
  std::iota(ws.identity.begin(), ws.identity.end(), 0);
  ws.local_offsets.resize(static_cast<size_t>(mine) + 1);
  for (int q = 0; q < ranks; ++q) {
    if (source_at[q + 1] == source_at[q]) continue;
    ws.local_offsets[0] = 0;
    for (int64_t e = 0; e < mine; ++e) ws.local_offsets[e + 1] = ws.local_offsets[e] + ws.counts_in[q * mine + e];
    expert_ffn(local, recv + ws.ro[q], source_at[q + 1] - source_at[q], 1, ws.local_offsets.data(), ws.identity.data(),
               results + ws.ro[q], ffn);
  }

  // 4. The outputs back to their sources (the exchange of step 2 reversed), then into their slots.
  float* back = ws.returned.reserve(static_cast<size_t>(std::max<int64_t>(1, out_rows * d)));
  exchange(static_cast<const float*>(results), ws.rc.data(), ws.ro.data(), back, ws.sc.data(), ws.so.data());
  for_rows(out_rows, [&](int64_t p) {
    std::copy(back + p * d, back + p * d + d, slot_out + static_cast<int64_t>(order[offsets[0] + p]) * d);
  });
}

void exchange_backward(ExpertExchange& ex, const std::vector<int64_t>& bounds, const PackedExperts& local,
                       const float* x, const float* d_out, int64_t d, int spt, const int32_t* offsets,
                       const int32_t* order, const float* slot_weights, float* d_slot, float* dx_slots,
                       const ExpertWeightsOut& g_local, BackwardWorkspace& bws, ExchangeWorkspace& ws) {
  const int ranks = ex.size(), me = ex.rank();
  const int64_t mine = bounds[me + 1] - bounds[me], routed_experts = bounds[ranks];
  ExchangeStats stats;  // (not reported for the backward)
  TimedExchange exchange{ex, stats};

  // 1. Rows per expert, as the forward's exchange.
  const std::vector<int64_t> source_at = exchange_counts(exchange, bounds, offsets, ws);
  const int64_t in_rows = source_at[ranks];

  // 2. Per slot in plan order, one row [x | dL/dy | w] of 2d + 1 floats.
  const int64_t wide = 2 * d + 1, out_rows = offsets[routed_experts] - offsets[0];
  float* send = ws.send_rows.reserve(static_cast<size_t>(std::max<int64_t>(1, out_rows * wide)));
  for_rows(out_rows, [&](int64_t p) {
    const int32_t slot = order[offsets[0] + p];
    const int64_t token = slot / spt;
    float* row = send + p * wide;
    std::copy(x + token * d, x + token * d + d, row);
    std::copy(d_out + token * d, d_out + token * d + d, row + d);
    row[2 * d] = slot_weights[slot];
  });
  row_counts(bounds, offsets, source_at, wide, ws);
  float* recv = ws.recv_rows.reserve(static_cast<size_t>(std::max<int64_t>(1, in_rows * wide)));
  exchange(static_cast<const float*>(send), ws.sc.data(), ws.so.data(), recv, ws.rc.data(), ws.ro.data());

  // 3. The rows expert-major (each expert's rows from rank 0, then rank 1, ...), and the backward of my slice.
  ws.source_of.resize(static_cast<size_t>(std::max<int64_t>(1, in_rows)));
  ws.local_offsets.assign(static_cast<size_t>(mine) + 1, 0);
  {
    // Rank q's rows came expert by expert: a cursor per source walks them.
    std::vector<int64_t> next(source_at.begin(), source_at.end() - 1);
    int64_t at = 0;
    for (int64_t e = 0; e < mine; ++e) {
      for (int q = 0; q < ranks; ++q)
        for (int64_t r = 0; r < ws.counts_in[q * mine + e]; ++r) ws.source_of[at++] = next[q]++;
      ws.local_offsets[e + 1] = static_cast<int32_t>(at);
    }
  }
  float* xs = ws.rows_x.reserve(static_cast<size_t>(std::max<int64_t>(1, in_rows * d)));
  float* gos = ws.rows_go.reserve(static_cast<size_t>(std::max<int64_t>(1, in_rows * d)));
  float* ws_w = ws.rows_w.reserve(static_cast<size_t>(std::max<int64_t>(1, in_rows)));
  for_rows(in_rows, [&](int64_t r) {
    const float* row = recv + ws.source_of[r] * wide;
    std::copy(row, row + d, xs + r * d);
    std::copy(row + d, row + 2 * d, gos + r * d);
    ws_w[r] = row[2 * d];
  });
  ws.identity.resize(static_cast<size_t>(std::max<int64_t>(1, in_rows)));
  std::iota(ws.identity.begin(), ws.identity.end(), 0);
  float* dxs = ws.rows_dx.reserve(static_cast<size_t>(std::max<int64_t>(1, in_rows * d)));
  float* dws = ws.rows_dw.reserve(static_cast<size_t>(std::max<int64_t>(1, in_rows)));
  experts_backward(local, xs, 1, ws.local_offsets.data(), ws.identity.data(), ws_w, gos, dws, dxs, g_local, bws);

  // 4. Per row [dL/dx | dL/dw] back to its source, in the order it came, then into the slots.
  const int64_t narrow = d + 1;
  float* results = ws.results.reserve(static_cast<size_t>(std::max<int64_t>(1, in_rows * narrow)));
  for_rows(in_rows, [&](int64_t r) {
    float* row = results + ws.source_of[r] * narrow;
    std::copy(dxs + r * d, dxs + r * d + d, row);
    row[d] = dws[r];
  });
  row_counts(bounds, offsets, source_at, narrow, ws);
  float* back = ws.returned.reserve(static_cast<size_t>(std::max<int64_t>(1, out_rows * narrow)));
  exchange(static_cast<const float*>(results), ws.rc.data(), ws.ro.data(), back, ws.sc.data(), ws.so.data());
  for_rows(out_rows, [&](int64_t p) {
    const int32_t slot = order[offsets[0] + p];
    std::copy(back + p * narrow, back + p * narrow + d, dx_slots + static_cast<int64_t>(slot) * d);
    d_slot[slot] = back[p * narrow + d];
  });
}

}  // namespace moe
