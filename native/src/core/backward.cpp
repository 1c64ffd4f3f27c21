// The backward of the expert part (issue 19, first version): for every routed and shared slot, the gradients of
// the experts' weights and biases, of the slot's routing weight and of the token's input, from dL/d(output). The
// forward's hidden activations are recomputed (nothing is kept between forward and backward). Each expert's
// gradients are computed by one thread, over its rows in plan order, and the input's gradient is summed per token
// in slot order: the result is bitwise the same for any thread count. The arithmetic is plain loops over rows in
// blocks (weights reused across a block), compiled for the baseline ISA: the correctness reference of the SIMD
// kernels that will replace it (lib/reference/backward.ts is its float64 oracle).
#include <algorithm>
#include <cmath>
#include <vector>

#include "experts.h"
#include "thread_pool.h"

namespace moe {

namespace {

float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

float activate(Activation a, float x) {
  switch (a) {
    case Activation::swiglu:
    case Activation::swiglu_clamped:
    case Activation::silu: return x * sigmoid(x);
    case Activation::geglu:
    case Activation::gelu: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case Activation::gelu_tanh: return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case Activation::relu: return x > 0 ? x : 0.0f;
    case Activation::identity: break;
  }
  return x;
}

float derivative(Activation a, float x) {
  switch (a) {
    case Activation::swiglu:
    case Activation::swiglu_clamped:
    case Activation::silu: {
      const float s = sigmoid(x);
      return s * (1.0f + x * (1.0f - s));
    }
    case Activation::geglu:
    case Activation::gelu:
      return 0.5f * (1.0f + std::erf(x * 0.70710678118654752f)) + x * std::exp(-0.5f * x * x) * 0.3989422804014327f;
    case Activation::gelu_tanh: {
      const float c = 0.7978845608028654f, t = std::tanh(c * (x + 0.044715f * x * x * x));
      return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * c * (1.0f + 3.0f * 0.044715f * x * x);
    }
    case Activation::relu: return x > 0 ? 1.0f : 0.0f;
    case Activation::identity: break;
  }
  return 1.0f;
}

// The hidden unit and its partial derivatives from the pre-activations g (and u when gated).
struct Unit {
  float a, dg, du;
};
Unit unit(const ExpertShape& s, bool gated, float g, float u) {
  if (s.activation == Activation::swiglu_clamped) {  // gpt-oss; the clamps pass gradient inside their range
    const float gc = std::min(g, s.limit), uc = std::max(std::min(u, s.limit), -s.limit);
    const float sg = sigmoid(s.alpha * gc);
    return {gc * sg * (uc + 1.0f), g <= s.limit ? (sg + s.alpha * gc * sg * (1.0f - sg)) * (uc + 1.0f) : 0.0f,
            u >= -s.limit && u <= s.limit ? gc * sg : 0.0f};
  }
  if (!gated) return {activate(s.activation, g), derivative(s.activation, g), 0.0f};
  return {activate(s.activation, g) * u, derivative(s.activation, g) * u, activate(s.activation, g)};
}

// Eight partial sums in a fixed order: the compiler vectorises it without reassociating (no -ffast-math), and
// the result does not depend on the thread that computes it.
float dot(const float* a, const float* b, int64_t n) {
  float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}
void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

constexpr int64_t kBlock = 16;  // rows per block: each weight row is read once per block

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
    thread_local std::vector<float> w1, w3, w2, b1, b3, b2, pre_g, pre_u, a, dpre_g, dpre_u, y, dy, da;
    w1.resize(h * d), w2.resize(d * h), b1.resize(h), b2.resize(d);
    if (gated) w3.resize(h * d), b3.resize(h);
    packed.up.unpack(e, 0, w1.data(), b1.data());
    if (gated) packed.up.unpack(e, 1, w3.data(), b3.data());
    packed.down.unpack(e, 0, w2.data(), b2.data());
    for (auto* v : {&pre_g, &pre_u, &a, &dpre_g, &dpre_u, &da}) v->resize(kBlock * h);
    for (auto* v : {&y, &dy}) v->resize(kBlock * d);
    for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
      const int64_t rows = std::min(kBlock, n - r0);
      const int32_t* slots = order + offsets[e] + r0;
      auto xr = [&](int64_t r) { return x + (slots[r] / slots_per_token) * d; };
      // forward again: pre-activations, hidden units, output rows
      for (int64_t j = 0; j < h; ++j)
        for (int64_t r = 0; r < rows; ++r) {
          pre_g[r * h + j] = dot(&w1[j * d], xr(r), d) + b1[j];
          if (gated) pre_u[r * h + j] = dot(&w3[j * d], xr(r), d) + b3[j];
        }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < h; ++j) {
          const Unit u = unit(s, gated, pre_g[r * h + j], gated ? pre_u[r * h + j] : 0.0f);
          a[r * h + j] = u.a;
          dpre_g[r * h + j] = u.dg;
          dpre_u[r * h + j] = u.du;
        }
      for (int64_t i = 0; i < d; ++i)
        for (int64_t r = 0; r < rows; ++r) y[r * d + i] = dot(&w2[i * h], &a[r * h], h) + b2[i];
      // dL/dy of each row, the slot weight's gradient, and the down projection's gradients
      for (int64_t r = 0; r < rows; ++r) {
        const float* go = d_out + (slots[r] / slots_per_token) * d;
        const float w = slot_weights[slots[r]];
        d_slot_weights[slots[r]] = dot(go, &y[r * d], d);
        for (int64_t i = 0; i < d; ++i) dy[r * d + i] = w * go[i];
      }
      std::fill(da.begin(), da.begin() + rows * h, 0.0f);
      for (int64_t i = 0; i < d; ++i)
        for (int64_t r = 0; r < rows; ++r) {
          const float v = dy[r * d + i];
          axpy(v, &a[r * h], &dw2[i * h], h);
          axpy(v, &w2[i * h], &da[r * h], h);
          if (db2) db2[i] += v;
        }
      // through the hidden unit to the up projections' gradients and the input's
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < h; ++j) {
          dpre_g[r * h + j] *= da[r * h + j];
          dpre_u[r * h + j] *= da[r * h + j];
        }
      for (int64_t j = 0; j < h; ++j)
        for (int64_t r = 0; r < rows; ++r) {
          const float vg = dpre_g[r * h + j];
          axpy(vg, xr(r), &dw1[j * d], d);
          if (db1) db1[j] += vg;
          if (gated) {
            const float vu = dpre_u[r * h + j];
            if (dw3) axpy(vu, xr(r), &dw3[j * d], d);
            if (db3) db3[j] += vu;
          }
        }
      for (int64_t r = 0; r < rows; ++r) {
        float* dx = dx_slots + static_cast<int64_t>(slots[r]) * d;
        for (int64_t j = 0; j < h; ++j) {
          axpy(dpre_g[r * h + j], &w1[j * d], dx, d);
          if (gated) axpy(dpre_u[r * h + j], &w3[j * d], dx, d);
        }
      }
    }
  });
}

}  // namespace moe
