// The backward of the expert part (issue 19, first version): for every routed and shared slot, the gradients of
// the experts' weights and biases, of the slot's routing weight and of the token's input, from dL/d(output). The
// forward's hidden activations are recomputed (nothing is kept between forward and backward). Each expert's
// gradients are computed by one thread, over its rows in plan order, and the input's gradient is summed per token
// in slot order: the result is bitwise the same for any thread count. The arithmetic of a block of rows (weights
// reused across it) is the ISA's backward_block (cpu/backward_kernel.h, loops the compiler vectorises per ISA), not
// yet the panel GEMMs of the forward; lib/reference/backward.ts is its float64 oracle.
#include <algorithm>
#include <cmath>
#include <vector>

#include "experts.h"
#include "isa.h"
#include "thread_pool.h"

namespace moe {

namespace {
constexpr int64_t kBlock = 128;  // rows per block: each weight row (and gradient row) is read once per block
}  // namespace

void experts_backward(const PackedExperts& packed, const float* x, int slots_per_token, const int32_t* offsets,
                      const int32_t* order, const float* slot_weights, const float* d_out, float* d_slot_weights,
                      float* dx_slots, const ExpertWeightsOut& g) {
  const ExpertShape& s = packed.shape;
  const int64_t d = s.d_model, h = s.d_hidden;
  const bool gated = is_gated(s.activation);
  ThreadPool::instance().run(s.num_experts, [&](int64_t e) {
    const int64_t n = offsets[e + 1] - offsets[e];
    float* dw1 = g.w1 + e * h * d;
    float* dw3 = gated && g.w3 ? g.w3 + e * h * d : nullptr;
    float* dw2 = g.w2 + e * d * h;
    float* db1 = g.b1 ? g.b1 + e * h : nullptr;
    float* db3 = gated && g.b3 ? g.b3 + e * h : nullptr;
    float* db2 = g.b2 ? g.b2 + e * d : nullptr;
    std::fill(dw1, dw1 + h * d, 0.0f);
    if (dw3) std::fill(dw3, dw3 + h * d, 0.0f);
    std::fill(dw2, dw2 + d * h, 0.0f);
    if (db1) std::fill(db1, db1 + h, 0.0f);
    if (db3) std::fill(db3, db3 + h, 0.0f);
    if (db2) std::fill(db2, db2 + d, 0.0f);
    if (n == 0) return;
    thread_local std::vector<float> w1, w3, w2, b1, b3, b2, scratch;
    thread_local std::vector<const float*> xs, gs;
    thread_local std::vector<float*> dxs;
    w1.resize(h * d), w2.resize(d * h), b1.resize(h), b2.resize(d);
    if (gated) w3.resize(h * d), b3.resize(h);
    packed.up.unpack(e, 0, w1.data(), b1.data());
    if (gated) packed.up.unpack(e, 1, w3.data(), b3.data());
    packed.down.unpack(e, 0, w2.data(), b2.data());
    scratch.resize(kBlock * (6 * h + 2 * d));
    xs.resize(kBlock), gs.resize(kBlock), dxs.resize(kBlock);
    std::vector<float> weight(kBlock), d_weight(kBlock);
    cpu::BackwardBlock blk;
    blk.d = d, blk.h = h, blk.gated = gated, blk.activation = s.activation, blk.alpha = s.alpha, blk.limit = s.limit;
    blk.w1 = w1.data(), blk.w3 = gated ? w3.data() : nullptr, blk.w2 = w2.data();
    blk.b1 = b1.data(), blk.b3 = gated ? b3.data() : nullptr, blk.b2 = b2.data();
    blk.x = xs.data(), blk.d_out = gs.data(), blk.dx = dxs.data();
    blk.slot_weight = weight.data(), blk.d_slot_weight = d_weight.data();
    blk.dw1 = dw1, blk.dw3 = dw3, blk.dw2 = dw2, blk.db1 = db1, blk.db3 = db3, blk.db2 = db2;
    blk.scratch = scratch.data();
    const cpu::KernelTable& kt = kernels();
    for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
      blk.rows = std::min(kBlock, n - r0);
      const int32_t* slots = order + offsets[e] + r0;
      for (int64_t r = 0; r < blk.rows; ++r) {
        const int64_t token = slots[r] / slots_per_token;
        xs[r] = x + token * d;
        gs[r] = d_out + token * d;
        dxs[r] = dx_slots + static_cast<int64_t>(slots[r]) * d;
        weight[r] = slot_weights[slots[r]];
      }
      kt.backward_block(blk);
      for (int64_t r = 0; r < blk.rows; ++r) d_slot_weights[slots[r]] = d_weight[r];
    }
  });
}

}  // namespace moe
