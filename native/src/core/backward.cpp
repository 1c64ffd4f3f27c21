// The backward of the expert part (issue 19): for every routed and shared slot, the gradients of the experts'
// weights and biases, of the slot's routing weight and of the token's input, from dL/d(output). Per expert, with
// its n rows in plan order, g / u the pre-activations, a the hidden units, go the output gradients (unweighted),
// w the slots' routing weights and dy = w go:
//   q    = go W2                  (so dL/da = w q, and dL/dw = <go, y> = <q, a> + <go, b2>: y is never rebuilt)
//   dpre = (w q) * a'(g, u)       (the fused activation's derivative, per unit: the ISA's unit_backward)
//   dx   = dpre [W1; W3]          dW2 = dy^T a     dW1 = dpre_g^T x     dW3 = dpre_u^T x
// All five products run through the forward's GEMM (run_gemm_groups: the same panel kernels, SIMD and threads).
// q and dx multiply by the weights transposed: PackedMatrix::transposed, the panels of the transposes, built at the
// first backward and refreshed by the optimizer step from the panels it has just updated, so both GEMMs stream
// weights as the forward does. The weight gradients' GEMMs reduce over the expert's rows (k = n), with the row data as
// B and the transposed rows, packed straight from them, as A; up to 256 rows they run by the kernel written for such
// short products (KernelTable::gemm_short, which writes each block of output rows whole). Every reduction runs in a
// fixed order inside one work item, so gradients are bitwise the same for any thread count. The pre-activations are
// recomputed by the up GEMM without its activation, unless the forward kept them. lib/reference/backward.ts is the
// float64 oracle.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "experts.h"
#include "isa.h"
#include "thread_pool.h"

namespace moe {

namespace {

// The A of a weight-gradient GEMM, A[m][r] = rows[r * ld + cols[m]] for m < m_total, r < n (cols null: m): the row
// data turned straight into pack_a's layout (KernelTable::pack_a_transposed), 64 rows of A per item.
float* pack_transposed(const float* rows, int64_t ld, int64_t n, const int32_t* cols, int64_t m_total,
                       AlignedBuffer<float>& buffer) {
  constexpr int64_t kItem = 64;
  const cpu::KernelTable& kt = kernels();
  float* out = buffer.reserve(static_cast<size_t>(kt.geometry.packed_a_floats(m_total, n)));
  ThreadPool::instance().run((m_total + kItem - 1) / kItem, [&](int64_t item) {
    const int64_t m0 = item * kItem;
    kt.pack_a_transposed(rows, ld, n, cols, m0, std::min(m_total, m0 + kItem), m_total, out);
  });
  return out;
}

// out[c] = the sum over r < n of rows[r * ld + c], in row order, for c < cols: the bias gradients.
void column_sums(const float* rows, int64_t ld, int64_t n, int64_t cols, float* out) {
  constexpr int64_t kBlock = 256;
  ThreadPool::instance().run((cols + kBlock - 1) / kBlock, [&](int64_t blk) {
    const int64_t c0 = blk * kBlock, c1 = std::min(cols, c0 + kBlock);
    std::fill(out + c0, out + c1, 0.0f);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = c0; c < c1; ++c) out[c] += rows[r * ld + c];
  });
}

// Eight partial sums in a fixed order: vectorised without reassociation, the same on every thread.
float dot(const float* a, const float* b, int64_t n) {
  float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

// B [k, n] with row kk at src.row(kk), into float32 panels of nr columns (panel p, row kk: columns p * nr .. p * nr
// + nr - 1 of row kk, zeros past n), for a GEMM whose B is data rather than weights.
void pack_b_rows(int64_t k, int64_t n, int64_t nr, const cpu::RowMap<const float>& src, float* out) {
  const int64_t panels = (n + nr - 1) / nr, chunks = (k + 63) / 64;
  ThreadPool::instance().run(panels * chunks, [&](int64_t item) {
    const int64_t p = item / chunks, k0 = item % chunks * 64, k1 = std::min(k, k0 + 64);
    const int64_t valid = std::min(nr, n - p * nr);
    for (int64_t kk = k0; kk < k1; ++kk) {
      float* dst = out + (p * k + kk) * nr;
      const float* row = src.row(kk) + p * nr;
      std::copy(row, row + valid, dst);
      std::fill(dst + valid, dst + nr, 0.0f);
    }
  });
}

// The GEMM problem of a float32 B in panels of k rows (panel_k allocated), n columns: a plain product (no bias, so
// the kernel stores its sums without an epilogue; 7-10% off the weight gradients' GEMMs, whose k is only the rows).
cpu::GemmProblem data_problem(const float* panels, int64_t k, int64_t n, int64_t nr, int64_t panel_k = 0) {
  cpu::GemmProblem p;
  p.panels = panels;
  p.weight_dtype = WeightDtype::float32;
  p.panel_bytes = std::max(k, panel_k) * nr * int64_t{sizeof(float)};
  p.bias = nullptr;
  p.k = k;
  p.n = n;
  return p;
}

// A float32 copy of packed experts in another dtype: what they compute with, so the backward differentiates the
// layer as it runs. Slow (a repack per backward) and meant for checking; training steps need float32 anyway.
std::unique_ptr<PackedExperts> widened(const PackedExperts& packed) {
  const ExpertShape& s = packed.shape;
  const int64_t e = s.num_experts, h = s.d_hidden, d = s.d_model;
  const bool gated = is_gated(s.activation);
  bool has_b1, has_b3, has_b2;
  packed_biases(packed, &has_b1, &has_b3, &has_b2);
  std::vector<float> w1(e * h * d), w3(gated ? e * h * d : 0), w2(e * d * h), b1(e * h), b3(e * h), b2(e * d);
  unpack_experts(packed, {w1.data(), gated ? w3.data() : nullptr, w2.data(), b1.data(), b3.data(), b2.data()});
  ExpertShape f = s;
  f.weight_dtype = WeightDtype::float32;
  f.separate_down_dtype = false;
  ExpertWeights w;
  w.w1 = w1.data(), w.w3 = gated ? w3.data() : nullptr, w.w2 = w2.data();
  w.b1 = has_b1 ? b1.data() : nullptr, w.b3 = has_b3 ? b3.data() : nullptr, w.b2 = has_b2 ? b2.data() : nullptr;
  return std::make_unique<PackedExperts>(f, w);
}

}  // namespace

void experts_backward(const PackedExperts& packed_in, const float* x, int slots_per_token, const int32_t* offsets,
                      const int32_t* order, const float* slot_weights, const float* d_out, float* d_slot_weights,
                      float* dx_slots, const ExpertWeightsOut& g, BackwardWorkspace& ws, const float* kept_pre) {
  std::unique_ptr<PackedExperts> wide;
  if (!all_float32(packed_in.shape)) wide = widened(packed_in);
  const PackedExperts& packed = wide ? *wide : packed_in;
  const ExpertShape& s = packed.shape;
  const cpu::PanelGeometry& geo = kernels().geometry;
  const int64_t d = s.d_model, h = s.d_hidden, nr = geo.nr();
  const bool gated = is_gated(s.activation);
  // Pre-activation columns as the up GEMM lays them out: per panel, nr gate units or nr / 2 gate then nr / 2 up.
  const int64_t up_panels = packed.up.panel_count(), width = up_panels * nr, down_panels = packed.down.panel_count();
  const int64_t per_panel = packed.up.out_cols(), up_at = gated ? nr / 2 : 0;
  auto unit_col = [&](int64_t j) { return j / per_panel * nr + j % per_panel; };
  int32_t* col_g = ws.columns.reserve(static_cast<size_t>(2 * h));
  int32_t* col_u = col_g + h;
  for (int64_t j = 0; j < h; ++j) col_g[j] = static_cast<int32_t>(unit_col(j)), col_u[j] = col_g[j] + up_at;
  std::vector<GemmGroup> groups;
  // The weight gradients' GEMMs go chunk by chunk: their B (a few rows' data) is far smaller than their A.
  const auto run = [&](std::vector<GemmGroup>& list, bool chunk_major) {
    for (GemmGroup& g : list) g.chunk_major = chunk_major;
    run_gemm_groups(list, nr, WeightDtype::float32, ws.packed_a);
  };
  const int64_t h_panels = (h + nr - 1) / nr, d_panels = (d + nr - 1) / nr;
  const cpu::KernelTable& kt = kernels();
  cpu::GemmProblem unit_problem;
  unit_problem.activation = s.activation;
  unit_problem.gated = gated;
  unit_problem.alpha = s.alpha;
  unit_problem.limit = s.limit;

  for (int64_t e = 0; e < s.num_experts; ++e) {
    const int64_t n = offsets[e + 1] - offsets[e];
    float* dw1 = g.w1 ? g.w1 + e * h * d : nullptr;
    float* dw3 = gated && g.w3 ? g.w3 + e * h * d : nullptr;
    float* dw2 = g.w2 ? g.w2 + e * d * h : nullptr;
    float* db1 = g.b1 ? g.b1 + e * h : nullptr;
    float* db3 = gated && g.b3 ? g.b3 + e * h : nullptr;
    float* db2 = g.b2 ? g.b2 + e * d : nullptr;
    if (n == 0) {  // an expert without rows: zero gradients
      const std::pair<float*, int64_t> parts[] = {{dw1, h * d}, {dw3, h * d}, {dw2, d * h},
                                                  {db1, h},     {db3, h},     {db2, d}};
      for (const auto& [p, count] : parts)
        if (p) std::fill(p, p + count, 0.0f);
      continue;
    }
    const int32_t* slots = order + offsets[e];
    const cpu::RowMap<const float> xs{x, d, slots, slots_per_token}, gos{d_out, d, slots, slots_per_token};

    // The pre-activations [n, width]: kept by the forward, or the up GEMM again without its epilogue.
    const float* pre = kept_pre ? kept_pre + static_cast<int64_t>(offsets[e] - offsets[0]) * width : nullptr;
    if (!pre) {
      float* out = ws.pre.reserve(static_cast<size_t>(n * width));
      groups.assign(1, GemmGroup{packed.up.problem(e, Activation::identity), n, nullptr, up_panels});
      groups[0].problem.gated = false;
      groups[0].problem.n = width;
      groups[0].problem.a = xs;
      groups[0].problem.c = {out, width, nullptr, 1};
      run(groups, false);
      pre = out;
    }

    // q [n, h] = go W2: W2 as [dModel, h] panels (the down matrix's transposed panels).
    const cpu::GemmProblem down = packed.down.problem(e, Activation::identity);
    float* q = ws.q.reserve(static_cast<size_t>(n * h));
    groups.assign(1,
                  GemmGroup{data_problem(packed.down.transposed(e), d, h, nr, down_panels * nr), n, nullptr, h_panels});
    groups[0].problem.a = gos;
    groups[0].problem.c = {q, h, nullptr, 1};
    run(groups, false);

    // Per row: the hidden units (act [n, h]), dL/dw, and dL/d(pre-activations) (dpre [n, width], zeros in padding
    // columns), by the ISA's unit_backward.
    float* act = ws.act.reserve(static_cast<size_t>(n * h));
    float* dpre_rows = ws.dpre_rows.reserve(static_cast<size_t>(n * width));
    float* dy_rows = ws.dy_rows.reserve(static_cast<size_t>(n * d));
    ThreadPool::instance().run(n, [&](int64_t r) {
      const float* go = gos.row(r);
      const float wr = slot_weights[slots[r]];
      for (int64_t i = 0; i < d; ++i) dy_rows[r * d + i] = wr * go[i];
      const float* pre_r = pre + r * width;
      float* dpre_r = dpre_rows + r * width;
      alignas(64) float da[256];
      for (int64_t p = 0; p * per_panel < h; ++p) {
        const int64_t j0 = p * per_panel, count = std::min(per_panel, h - j0);
        for (int64_t c = 0; c < count; ++c) da[c] = wr * q[r * h + j0 + c];
        float* dg = dpre_r + p * nr;
        kt.unit_backward(unit_problem, pre_r + p * nr, pre_r + p * nr + up_at, da, act + r * h + j0, dg, dg + up_at,
                         count);
        if (count < per_panel) {  // the last panel's padding columns
          std::fill(dg + count, dg + per_panel, 0.0f);
          if (gated) std::fill(dg + up_at + count, dg + nr, 0.0f);
        }
      }
      d_slot_weights[slots[r]] = dot(q + r * h, act + r * h, h) + dot(go, down.bias, d);
    });

    // dx [n, dModel] = dpre [W1; W3], into the rows' slots: [W1; W3] as [width, dModel] panels (the up matrix's
    // transposed panels).
    groups.assign(1, GemmGroup{data_problem(packed.up.transposed(e), width, d, nr), n, nullptr, d_panels});
    groups[0].problem.a = {dpre_rows, width, nullptr, 1};
    groups[0].problem.c = {dx_slots, d, slots, 1};
    run(groups, false);

    // Bias gradients: sums over the rows, in row order.
    if (db1 || db3 || db2) {
      float* sums = ws.column_sums.reserve(static_cast<size_t>(std::max(width, d)));
      if (db1 || db3) {
        column_sums(dpre_rows, width, n, width, sums);
        for (int64_t j = 0; j < h; ++j) {
          if (db1) db1[j] = sums[col_g[j]];
          if (db3) db3[j] = sums[col_u[j]];
        }
      }
      if (db2) column_sums(dy_rows, d, n, d, db2);
    }

    // dW2 [dModel, h] = dy^T a; dW1, dW3 [h, dModel] = dpre_g^T x, dpre_u^T x: B is the rows' data (k = n).
    float* b = ws.b.reserve(static_cast<size_t>(std::max(h_panels, d_panels) * nr * n));
    // The weight gradients reduce over the rows: their A is dy^T [dModel, n] or dpre^T [width, n] (its gate or up
    // columns), packed straight from the rows.
    if (dw2) {
      pack_b_rows(n, h, nr, {act, h, nullptr, 1}, b);
      const float* a = pack_transposed(dy_rows, d, n, nullptr, d, ws.packed_t);
      groups.assign(1, GemmGroup{data_problem(b, n, h, nr), d, a, h_panels});
      groups[0].problem.c = {dw2, h, nullptr, 1};
      run(groups, true);
    }
    if (dw1 || dw3) {
      pack_b_rows(n, d, nr, xs, b);
      groups.clear();
      const std::pair<float*, const int32_t*> parts[] = {{dw1, col_g}, {dw3, col_u}};
      AlignedBuffer<float>* packed[] = {&ws.packed_t, &ws.packed_t2};
      for (int part = 0; part < 2; ++part) {
        const auto& [dw_part, cols] = parts[part];
        if (!dw_part) continue;
        const float* a = pack_transposed(dpre_rows, width, n, cols, h, *packed[part]);
        groups.push_back(GemmGroup{data_problem(b, n, d, nr), h, a, d_panels});
        groups.back().problem.c = {dw_part, d, nullptr, 1};
      }
      run(groups, true);
    }
  }
}

}  // namespace moe
