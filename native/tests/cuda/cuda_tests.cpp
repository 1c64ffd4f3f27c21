// The CUDA backend against the CPU core, no Node needed: random inputs of awkward sizes (1 token, odd dims,
// experts with no tokens, E = 64 with k = 6, every activation, dropped slots, DeepSeek routing). Expert choices
// and routing weights must match the CPU's (tokens whose k-th and (k+1)-th logits are within 1e-4 are not
// compared: fp32 sums in another order may break such near-ties). Outputs are compared with a reference that
// rounds where the GPU does (x, the weights and the hidden activations to bf16; sums in double) within 2e-3
// relative, tight enough to tell erf-GELU from tanh-GELU. Exit 77 (ctest: skipped) where no CUDA device exists.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../test_support.h"
#include "moe/cuda.h"
#include "moe/moe.h"

namespace {

using moe_test::Case;
using moe_test::CaseData;
using moe_test::failures;
using moe_test::make_case;
using moe_test::randn;

// float -> bf16 -> float, round to nearest even (as __float2bfloat16_rn).
float bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

double activate(moe::Activation a, double v) {
  const double silu = v / (1 + std::exp(-v)), gelu = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
  switch (a) {
    case moe::Activation::swiglu:
    case moe::Activation::swiglu_clamped:  // (clamps and alpha: gated_unit)
    case moe::Activation::silu: return silu;
    case moe::Activation::geglu:
    case moe::Activation::gelu: return gelu;
    case moe::Activation::gelu_tanh: return 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    case moe::Activation::relu: return v > 0 ? v : 0;
    case moe::Activation::identity: return v;
  }
  return v;
}

// act(g) * u, or gpt-oss's clamped SwiGLU with ExpertShape's default alpha and limit.
double gated_unit(moe::Activation a, double g, double u) {
  if (a != moe::Activation::swiglu_clamped) return activate(a, g) * u;
  const moe::ExpertShape shape;
  g = std::min(g, double(shape.limit));
  u = std::max(std::min(u, double(shape.limit)), -double(shape.limit));
  return g / (1 + std::exp(-double(shape.alpha) * g)) * (u + 1);
}

// The layer's output for a routing, rounded where the GPU rounds: bf16 x and weights into each GEMM, bf16 hidden
// activations between them; fp32 biases, sums in double.
std::vector<float> bf16_reference(const Case& c, const CaseData& d, const std::vector<int32_t>& experts,
                                  const std::vector<float>& weights) {
  const bool gated = moe::is_gated(c.act);
  std::vector<float> out(c.tokens * c.d, 0.f);
  std::vector<double> hidden(c.h);
  for (int64_t t = 0; t < c.tokens; ++t)
    for (int j = 0; j < c.k; ++j) {
      const int32_t e = experts[t * c.k + j];
      if (e < 0) continue;
      for (int64_t i = 0; i < c.h; ++i) {
        double a = 0, b = 0;
        for (int64_t q = 0; q < c.d; ++q) {
          const double xv = bf16(d.x[t * c.d + q]);
          a += xv * bf16(d.w1[(e * c.h + i) * c.d + q]);
          if (gated) b += xv * bf16(d.w3[(e * c.h + i) * c.d + q]);
        }
        if (c.bias) a += d.b1[e * c.h + i];
        if (c.bias && gated) b += d.b3[e * c.h + i];
        const double v = gated ? gated_unit(c.act, a, b) : activate(c.act, a);
        hidden[i] = bf16(static_cast<float>(v));
      }
      for (int64_t q = 0; q < c.d; ++q) {
        double y = c.bias ? d.b2[e * c.d + q] : 0.0;
        for (int64_t i = 0; i < c.h; ++i) y += hidden[i] * bf16(d.w2[(e * c.d + q) * c.h + i]);
        out[t * c.d + q] += static_cast<float>(weights[t * c.k + j] * y);
      }
    }
  return out;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

void test_case(const Case& c, uint32_t seed) {
  const CaseData data = make_case(c, seed);
  const auto& x = data.x;
  const auto& router = data.router;
  const moe::LayerConfig& config = data.config;
  const moe::ExpertWeights& w = data.weights;
  moe::CpuLayer cpu(config, router.data(), w);
  moe::cuda::CudaLayer gpu(config, {}, router.data(), w);
  auto run = [&](auto& layer, std::vector<float>& out, std::vector<float>& logits, std::vector<int32_t>& experts,
                 std::vector<float>& weights, std::vector<int32_t>& counts) {
    out.resize(c.tokens * c.d);
    logits.resize(c.tokens * c.e);
    experts.resize(c.tokens * c.k);
    weights.resize(c.tokens * c.k);
    counts.resize(c.e);
    layer.forward(x.data(), c.tokens, {out.data(), logits.data(), experts.data(), weights.data(), counts.data()});
  };
  std::vector<float> o1, l1, w_1, o2, l2, w_2;
  std::vector<int32_t> e1, c1, e2, c2;
  run(cpu, o1, l1, e1, w_1, c1);
  run(gpu, o2, l2, e2, w_2, c2);
  int compared = 0, differ = 0;
  double weight_err = 0;
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::vector<float> row(l1.begin() + t * c.e, l1.begin() + (t + 1) * c.e);
    std::sort(row.rbegin(), row.rend());
    if (c.k < c.e && std::abs(row[c.k - 1] - row[c.k]) < 1e-4f) continue;
    ++compared;
    for (int j = 0; j < c.k; ++j) {
      differ += e1[t * c.k + j] != e2[t * c.k + j];
      weight_err = std::max(weight_err, double(std::abs(w_1[t * c.k + j] - w_2[t * c.k + j])));
    }
  }
  CHECK(differ == 0, "T=%lld E=%lld k=%d: %d expert choices differ", (long long)c.tokens, (long long)c.e, c.k, differ);
  CHECK(weight_err < 1e-5, "T=%lld E=%lld k=%d: routing weights differ by %.3g", (long long)c.tokens, (long long)c.e,
        c.k, weight_err);
  CHECK(rel_err(l2, l1) < 1e-5, "logits: relative error %.3g", rel_err(l2, l1));
  // Compare outputs on the GPU's own routing, so a skipped near-tie cannot fail them.
  std::vector<float> ref(c.tokens * c.d);
  std::vector<int32_t> counts(c.e);
  cpu.forward_routed(x.data(), c.tokens, c.k, e2.data(), w_2.data(), ref.data(), counts.data());
  const double err = rel_err(o2, bf16_reference(c, data, e2, w_2));
  CHECK(err < 2e-3, "T=%lld d=%lld h=%lld E=%lld k=%d act=%d: output relative error %.3g against the bf16 reference",
        (long long)c.tokens, (long long)c.d, (long long)c.h, (long long)c.e, c.k, int(c.act), err);
  CHECK(rel_err(o2, ref) < 2e-2, "output relative error %.3g against the fp32 CPU core", rel_err(o2, ref));
  CHECK(counts == c2, "tokens per expert differ");
  // Dropped slots through forward_routed: every other token loses its first slot.
  std::vector<int32_t> dropped = e2;
  for (int64_t t = 0; t < c.tokens; t += 2) dropped[t * c.k] = -1;
  std::vector<float> g_out(c.tokens * c.d), c_out(c.tokens * c.d);
  std::vector<int32_t> g_counts(c.e), c_counts(c.e);
  gpu.forward_routed(x.data(), c.tokens, c.k, dropped.data(), w_2.data(), g_out.data(), g_counts.data());
  cpu.forward_routed(x.data(), c.tokens, c.k, dropped.data(), w_2.data(), c_out.data(), c_counts.data());
  CHECK(rel_err(g_out, bf16_reference(c, data, dropped, w_2)) < 2e-3, "dropped slots: relative error %.3g",
        rel_err(g_out, bf16_reference(c, data, dropped, w_2)));
  CHECK(g_counts == c_counts, "tokens per expert with drops differ");
  // Every slot dropped: zero output, no expert launched.
  std::vector<int32_t> none(dropped.size(), -1);
  gpu.forward_routed(x.data(), c.tokens, c.k, none.data(), w_2.data(), g_out.data(), g_counts.data());
  CHECK(std::all_of(g_out.begin(), g_out.end(), [](float v) { return v == 0.f; }), "all dropped: output not zero");
  CHECK(std::all_of(g_counts.begin(), g_counts.end(), [](int32_t n) { return n == 0; }),
        "all dropped: counts not zero");
  std::printf(
      "  T=%4lld d=%4lld h=%4lld E=%3lld k=%d act=%d bias=%d: rel err %.2e, %d tokens compared, %.3f ms on device\n",
      (long long)c.tokens, (long long)c.d, (long long)c.h, (long long)c.e, c.k, int(c.act), int(c.bias), err, compared,
      gpu.last_device_ms());
}

// int8 / int4 weights handed over as codes and scales: dequantized on the host and uploaded as bf16, so the output
// is the bf16 reference's on the dequantized weights.
void test_quantized_upload(moe::WeightDtype dtype, uint32_t seed) {
  const Case c{37, 64, 96, 8, 2, moe::Activation::swiglu, true};
  CaseData data = make_case(c, seed);
  const int64_t g = 32;
  struct Quantized {
    std::vector<uint8_t> codes;
    std::vector<uint16_t> scales;
  };
  // Quantizes rows x k in place of the float weights (which become the dequantized values) and returns the codes.
  const auto quantize = [&](std::vector<float>& w, int64_t rows, int64_t k) {
    const int64_t code_bytes = moe::code_bytes(dtype, k);
    Quantized q{std::vector<uint8_t>(rows * code_bytes), std::vector<uint16_t>(rows * (k / g))};
    for (int64_t r = 0; r < rows; ++r) {
      moe::quantize_row(dtype, w.data() + r * k, k, g, q.codes.data() + r * code_bytes, q.scales.data() + r * (k / g));
      moe::dequantize_row(dtype, q.codes.data() + r * code_bytes, q.scales.data() + r * (k / g), k, g,
                          w.data() + r * k);
    }
    return q;
  };
  const Quantized q1 = quantize(data.w1, c.e * c.h, c.d), q3 = quantize(data.w3, c.e * c.h, c.d),
                  q2 = quantize(data.w2, c.e * c.d, c.h);
  moe::LayerConfig config = data.config;
  config.experts.weight_dtype = dtype;
  config.experts.group_size = g;
  moe::ExpertWeights w = data.weights;
  w.w1 = w.w3 = w.w2 = nullptr;
  w.q1 = {q1.codes.data(), q1.scales.data()};
  w.q3 = {q3.codes.data(), q3.scales.data()};
  w.q2 = {q2.codes.data(), q2.scales.data()};
  moe::cuda::CudaLayer gpu(config, {}, data.router.data(), w);
  std::vector<float> out(c.tokens * c.d), logits(c.tokens * c.e), weights(c.tokens * c.k);
  std::vector<int32_t> experts(c.tokens * c.k), counts(c.e);
  gpu.forward(data.x.data(), c.tokens, {out.data(), logits.data(), experts.data(), weights.data(), counts.data()});
  const double err = rel_err(out, bf16_reference(c, data, experts, weights));
  CHECK(err < 2e-3, "%s weights on the GPU: relative error %.3g against the bf16 reference on dequantized weights",
        moe::weight_dtype_name(dtype), err);
  std::printf("  %s weights (groups of 32, dequantized on upload): rel err %.2e\n", moe::weight_dtype_name(dtype), err);
}

// DeepSeek-V3 routing on the GPU against a plain C++ version of the rule.
void test_sigmoid_bias(uint32_t seed) {
  const int64_t T = 37, d = 64, h = 96, E = 16;
  const int k = 4, groups = 4, keep = 2;
  const auto router = randn(E * d, seed, 0.3f), w1 = randn(E * h * d, seed + 1, 0.1f),
             w3 = randn(E * h * d, seed + 2, 0.1f);
  const auto w2 = randn(E * d * h, seed + 3, 0.1f), bias = randn(E, seed + 4, 0.1f), x = randn(T * d, seed + 5, 1.f);
  moe::LayerConfig config{{E, d, h, moe::Activation::swiglu}, k, true, 0, {}};
  moe::cuda::GpuRouting routing;
  routing.rule = moe::cuda::GpuRouting::Rule::sigmoid_bias;
  routing.num_groups = groups;
  routing.top_k_groups = keep;
  routing.route_scale = 2.5f;
  routing.bias = bias.data();
  moe::ExpertWeights w{w1.data(), w3.data(), w2.data(), nullptr, nullptr, nullptr};
  moe::cuda::CudaLayer gpu(config, routing, router.data(), w);
  std::vector<float> out(T * d), logits(T * E), weights(T * k);
  std::vector<int32_t> experts(T * k), counts(E);
  gpu.forward(x.data(), T, {out.data(), logits.data(), experts.data(), weights.data(), counts.data()});
  int differ = 0;
  double werr = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> s(E), b(E);
    for (int e = 0; e < E; ++e) {
      s[e] = 1 / (1 + std::exp(-double(logits[t * E + e])));
      b[e] = s[e] + bias[e];
    }
    std::vector<std::pair<double, int>> gs;
    for (int g = 0; g < groups; ++g) {
      std::vector<double> v(b.begin() + g * (E / groups), b.begin() + (g + 1) * (E / groups));
      std::sort(v.rbegin(), v.rend());
      gs.push_back({-(v[0] + v[1]), g});
    }
    std::sort(gs.begin(), gs.end());
    std::vector<std::pair<double, int>> cand;
    for (int i = 0; i < keep; ++i)
      for (int e = gs[i].second * (E / groups); e < (gs[i].second + 1) * (E / groups); ++e) cand.push_back({-b[e], e});
    std::sort(cand.begin(), cand.end());
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += s[cand[j].second];
    for (int j = 0; j < k; ++j) {
      differ += experts[t * k + j] != cand[j].second;
      werr = std::max(werr, std::abs(weights[t * k + j] - 2.5 * s[cand[j].second] / sum));
    }
  }
  CHECK(differ == 0, "sigmoid+bias: %d choices differ", differ);
  CHECK(werr < 1e-5, "sigmoid+bias: weight error %.3g", werr);
  std::printf("  DeepSeek sigmoid + bias, 4 groups keep 2, k=4: %d choice differences, weight error %.2e\n", differ,
              werr);
}

// Settings the routing kernels cannot serve are refused when the layer is built, and zero tokens compute nothing.
void test_refusals_and_empty(uint32_t seed) {
  const Case c{4, 16, 24, 8, 2, moe::Activation::swiglu, false};
  const CaseData data = make_case(c, seed);
  moe::cuda::GpuRouting bad;
  bad.rule = moe::cuda::GpuRouting::Rule::sigmoid_bias;
  bad.num_groups = 3;  // does not divide 8
  bool refused = false;
  try {
    moe::cuda::CudaLayer gpu(data.config, bad, data.router.data(), data.weights);
  } catch (const std::exception&) {
    refused = true;
  }
  CHECK(refused, "numGroups = 3 with 8 experts was accepted");
  bad.num_groups = 4;
  bad.top_k_groups = 1;  // 1 group of 2 experts, k = 2: enough
  moe::cuda::CudaLayer ok(data.config, bad, data.router.data(), data.weights);
  moe::LayerConfig k3 = data.config;
  k3.top_k = 3;  // 1 group of 2 experts cannot give 3
  refused = false;
  try {
    moe::cuda::CudaLayer gpu(k3, bad, data.router.data(), data.weights);
  } catch (const std::exception&) {
    refused = true;
  }
  CHECK(refused, "topKGroups * group size < topK was accepted");
  std::vector<int32_t> counts(c.e, 7);
  ok.forward(data.x.data(), 0, {nullptr, nullptr, nullptr, nullptr, counts.data()});
  CHECK(std::all_of(counts.begin(), counts.end(), [](int32_t n) { return n == 0; }), "zero tokens: counts not zero");
  std::printf("  refusals and zero tokens: ok\n");
}

}  // namespace

int main() {
  const moe::cuda::DeviceInfo info = moe::cuda::device_info();
  std::printf("CUDA backend: compiled %d, devices %d (%s)\n", int(info.compiled), info.devices, info.reason.c_str());
  if (info.devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  const Case cases[] = {
      {1, 33, 100, 8, 2, moe::Activation::swiglu, true},   {3, 64, 48, 4, 4, moe::Activation::swiglu, false},
      {3, 40, 56, 64, 1, moe::Activation::gelu, true},     {257, 96, 160, 64, 6, moe::Activation::swiglu, true},
      {129, 65, 70, 8, 2, moe::Activation::geglu, true},   {64, 128, 256, 8, 2, moe::Activation::gelu_tanh, true},
      {64, 48, 80, 8, 3, moe::Activation::relu, false},    {64, 48, 80, 8, 3, moe::Activation::silu, true},
      {64, 48, 80, 8, 3, moe::Activation::identity, true}, {1000, 256, 512, 16, 2, moe::Activation::swiglu, false},
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    try {
      test_case(c, seed += 10);
    } catch (const std::exception& e) {
      ++failures;
      std::printf("FAIL: %s\n", e.what());
    }
  }
  try {
    test_refusals_and_empty(98);
    test_sigmoid_bias(99);
    test_quantized_upload(moe::WeightDtype::int8, 100);
    test_quantized_upload(moe::WeightDtype::int4, 101);
  } catch (const std::exception& e) {
    ++failures;
    std::printf("FAIL: %s\n", e.what());
  }
  std::printf(failures ? "%d check(s) failed\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
