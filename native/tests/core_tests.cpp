// C++ tests of the core, no Node needed: routing, dispatch, the layer against a float64 reference on
// awkward shapes, thread-count determinism, and the kernel template at the AVX-512 geometry.
// Usage: moe_core_tests [--isa scalar|avx2|avx512|avx512_bf16|neon|neon_dotprod]   (exit 77 = that ISA is not
// available: skipped)
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../src/core/isa.h"
#include "../src/core/packing.h"
#include "../src/core/thread_pool.h"
#include "../src/cpu/half.h"
#include "moe/capabilities.h"
#include "moe/moe.h"
#include "test_support.h"

namespace moe::cpu {
const KernelTable* kernels_wide16_for_tests();
}

namespace {

using moe_test::Case;
using moe_test::CaseData;
using moe_test::failures;
using moe_test::make_case;
using moe_test::randn;

double act_ref(moe::Activation a, double x) {
  switch (a) {
    case moe::Activation::swiglu:
    case moe::Activation::swiglu_clamped:
    case moe::Activation::silu: return x / (1 + std::exp(-x));
    case moe::Activation::geglu:
    case moe::Activation::gelu: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case moe::Activation::gelu_tanh: return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case moe::Activation::relu: return x > 0 ? x : 0;
    case moe::Activation::identity: break;
  }
  return x;
}

// A gated unit from its gate and up pre-activations; swiglu_clamped with ExpertShape's default alpha and limit.
double gated_ref(moe::Activation a, double g, double u) {
  if (a != moe::Activation::swiglu_clamped) return act_ref(a, g) * u;
  const moe::ExpertShape shape;
  const double limit = shape.limit, alpha = shape.alpha;
  g = std::min(g, limit);
  u = std::max(std::min(u, limit), -limit);
  return g / (1 + std::exp(-alpha * g)) * (u + 1);
}

void test_layer(const Case& c, uint32_t seed) {
  const CaseData data = make_case(c, seed);
  const auto& x = data.x;
  const auto& router = data.router;
  const moe::LayerConfig& config = data.config;
  const moe::ExpertWeights& w = data.weights;
  const bool gated = moe::is_gated(c.act);
  const auto &w1 = data.w1, &w3 = data.w3, &w2 = data.w2, &b1 = data.b1, &b3 = data.b3, &b2 = data.b2;
  moe::CpuLayer layer(config, router.data(), w);
  std::vector<float> out(c.tokens * c.d), logits(c.tokens * c.e), weights(c.tokens * c.k);
  std::vector<int32_t> experts(c.tokens * c.k), counts(c.e);
  layer.forward(x.data(), c.tokens, {out.data(), logits.data(), experts.data(), weights.data(), counts.data()});

  // float64 reference: logits, softmax top-k (ties to the lower index), experts, combine.
  double max_diff = 0, scale = 0;
  bool same_choice = true;
  std::vector<double> slot_ref(c.tokens * c.k * c.d);  // weight * expert output, per slot
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::vector<double> l(c.e);
    for (int64_t e = 0; e < c.e; ++e) {
      double s = 0;
      for (int64_t i = 0; i < c.d; ++i) s += double(x[t * c.d + i]) * router[e * c.d + i];
      l[e] = s;
    }
    std::vector<int> chosen;
    std::vector<char> taken(c.e, 0);
    for (int j = 0; j < c.k; ++j) {
      int best = -1;
      for (int e = 0; e < c.e; ++e)
        if (!taken[e] && (best < 0 || l[e] > l[best])) best = e;
      taken[best] = 1;
      chosen.push_back(best);
    }
    double m = l[chosen[0]], sel = 0;
    for (int e : chosen) sel += std::exp(l[e] - m);
    std::vector<double> y(c.d, 0.0);
    for (int j = 0; j < c.k; ++j) {
      const int e = chosen[j];
      same_choice &= experts[t * c.k + j] == e;
      const double g = std::exp(l[e] - m) / sel;
      std::vector<double> hid(c.h);
      for (int64_t n = 0; n < c.h; ++n) {
        double a = c.bias ? b1[e * c.h + n] : 0, u = c.bias && gated ? b3[e * c.h + n] : 0;
        for (int64_t i = 0; i < c.d; ++i) {
          a += double(w1[(e * c.h + n) * c.d + i]) * x[t * c.d + i];
          if (gated) u += double(w3[(e * c.h + n) * c.d + i]) * x[t * c.d + i];
        }
        hid[n] = gated ? gated_ref(c.act, a, u) : act_ref(c.act, a);
      }
      for (int64_t i = 0; i < c.d; ++i) {
        double s = c.bias ? b2[e * c.d + i] : 0;
        for (int64_t n = 0; n < c.h; ++n) s += double(w2[(e * c.d + i) * c.h + n]) * hid[n];
        y[i] += g * s;
        slot_ref[(t * c.k + j) * c.d + i] = g * s;
      }
    }
    for (int64_t i = 0; i < c.d; ++i) {
      max_diff = std::max(max_diff, std::abs(y[i] - out[t * c.d + i]));
      scale = std::max(scale, std::abs(y[i]));
    }
  }
  CHECK(same_choice, "T=%lld d=%lld h=%lld E=%lld k=%d: expert choices differ", (long long)c.tokens, (long long)c.d,
        (long long)c.h, (long long)c.e, c.k);
  CHECK(max_diff / scale <= 1e-5, "T=%lld d=%lld h=%lld E=%lld k=%d act=%d: relative error %.3g", (long long)c.tokens,
        (long long)c.d, (long long)c.h, (long long)c.e, c.k, int(c.act), max_diff / scale);

  // Same answer, bit for bit, with one thread.
  std::vector<float> out1(out.size());
  moe::LayerConfig one = config;
  one.threads = 1;
  moe::CpuLayer layer1(one, router.data(), w);
  layer1.forward(x.data(), c.tokens, {out1.data(), logits.data(), experts.data(), weights.data(), counts.data()});
  CHECK(std::memcmp(out1.data(), out.data(), out.size() * sizeof(float)) == 0, "threads 1 vs all differ");

  // The same routing handed in from outside gives the same bits; dropping a slot removes exactly its term.
  std::vector<float> routed(out.size());
  std::vector<int32_t> routed_counts(c.e);
  layer.forward_routed(x.data(), c.tokens, c.k, experts.data(), weights.data(), routed.data(), routed_counts.data());
  CHECK(std::memcmp(routed.data(), out.data(), out.size() * sizeof(float)) == 0, "forward_routed differs from forward");
  CHECK(std::memcmp(routed_counts.data(), counts.data(), counts.size() * sizeof(int32_t)) == 0,
        "tokens per expert differ");
  std::vector<int32_t> dropped = experts;
  for (int64_t t = 0; t < c.tokens; t += 2) dropped[t * c.k] = -1;  // drop every other token's first slot
  layer.forward_routed(x.data(), c.tokens, c.k, dropped.data(), weights.data(), routed.data(), routed_counts.data());
  double drop_err = 0;
  for (int64_t t = 0; t < c.tokens; ++t)
    for (int64_t i = 0; i < c.d; ++i) {
      double want = 0;
      for (int j = 0; j < c.k; ++j)
        if (dropped[t * c.k + j] >= 0) want += slot_ref[(t * c.k + j) * c.d + i];
      drop_err = std::max(drop_err, std::abs(want - routed[t * c.d + i]));
    }
  CHECK(drop_err / scale <= 1e-5, "dropped slots: relative error %.3g", drop_err / scale);
  int64_t kept = 0;
  for (int32_t e : dropped) kept += e >= 0;
  int64_t counted = 0;
  for (int32_t n : routed_counts) counted += n;
  CHECK(counted == kept, "tokens per expert after dropping: %lld vs %lld", (long long)counted, (long long)kept);
}

// Every slot dropped: no expert has a row, so no GEMM runs, and the output is all zeros.
void test_all_dropped() {
  const Case c{3, 24, 40, 4, 2, moe::Activation::swiglu, true};
  const CaseData data = make_case(c, 21);
  moe::CpuLayer layer(data.config, data.router.data(), data.weights);
  const std::vector<int32_t> experts(c.tokens * c.k, -1);
  const std::vector<float> weights(c.tokens * c.k, 0.5f);
  std::vector<float> out(c.tokens * c.d, 1.0f);
  std::vector<int32_t> counts(c.e, 7);
  layer.forward_routed(data.x.data(), c.tokens, c.k, experts.data(), weights.data(), out.data(), counts.data());
  CHECK(std::all_of(out.begin(), out.end(), [](float v) { return v == 0.0f; }), "all dropped: output not zero");
  CHECK(std::all_of(counts.begin(), counts.end(), [](int32_t n) { return n == 0; }), "all dropped: counts not zero");
}

// Each backend's table decides what make_layer refuses, with the one message.
void test_capabilities() {
  const moe::Capabilities& cpu = moe::capabilities(moe::Backend::cpu);
  const moe::Capabilities& cuda = moe::capabilities(moe::Backend::cuda);
  CHECK(cpu.has(moe::Feature::backward) && !cpu.has(moe::Feature::route_sigmoid_bias), "cpu table");
  CHECK(cuda.has(moe::Feature::route_sigmoid_bias) && !cuda.has(moe::Feature::backward), "cuda table");
  const std::string message = moe::refusal(cuda, moe::Feature::backward);
  CHECK(message ==
            "moe-kernels: expected a backend that offers backward but got backend 'cuda' (it offers: routeSoftmaxTopK, "
            "routeSigmoidBias)",
        "refusal: %s", message.c_str());
  const Case c{3, 24, 40, 4, 2, moe::Activation::swiglu, true};
  const CaseData data = make_case(c, 31);
  moe::LayerSpec spec;
  spec.config = data.config;
  spec.router = data.router.data();
  spec.experts = data.weights;
  spec.routing.rule = moe::BuiltInRouting::Rule::sigmoid_bias;  // not among the CPU's own rules
  std::string got;
  try {
    moe::make_layer(spec);
  } catch (const moe::Unsupported& e) {
    got = e.what();
  }
  CHECK(got == moe::refusal(cpu, moe::Feature::route_sigmoid_bias), "make_layer's refusal: '%s'", got.c_str());
  spec.routing.rule = moe::BuiltInRouting::Rule::softmax_top_k;
  CHECK(moe::make_layer(spec) != nullptr, "make_layer with the CPU's own rule");
}

void test_dispatch() {
  const int32_t experts[] = {2, 0, 2, -1, 1, 2, 0, -1};
  int32_t counts[4], offsets[5], order[8];
  moe::dispatch(experts, 8, 4, counts, offsets, order);
  const int32_t want_counts[] = {2, 1, 3, 0}, want_offsets[] = {0, 2, 3, 6, 6},
                want_order[] = {1, 6, 4, 0, 2, 5, -1, -1};
  CHECK(std::memcmp(counts, want_counts, sizeof counts) == 0, "counts");
  CHECK(std::memcmp(offsets, want_offsets, sizeof offsets) == 0, "offsets");
  CHECK(std::memcmp(order, want_order, sizeof order) == 0, "order");
}

void test_top_k() {
  const float logits[] = {0, 0, 0, 0, 1, 3, 2, 3};
  int32_t experts[4];
  float weights[4];
  moe::top_k_softmax(logits, 2, 4, 2, true, experts, weights);
  CHECK(experts[0] == 0 && experts[1] == 1 && weights[0] == 0.5f && weights[1] == 0.5f, "ties go to the lower index");
  CHECK(experts[2] == 1 && experts[3] == 3, "top-2 of [1,3,2,3] is experts 1 then 3");
  moe::top_k_softmax(logits, 1, 4, 1, false, experts, weights);
  CHECK(std::abs(weights[0] - 0.25f) < 1e-7f, "unnormalised weight is the softmax probability");
}

// The kernel template at the AVX-512 geometry (16 lanes, 12 rows) and the active ISA's kernels, on odd shapes:
// float16 conversions: every float16 survives the round trip, and float32 values round to nearest, ties to even,
// at the boundaries that matter (the largest float16, the subnormals, a tie between two float16 values).
void test_half_conversions() {
  int bad = 0;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const bool nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
    if (!nan && moe::cpu::float_to_half(moe::cpu::half_to_float(static_cast<uint16_t>(h))) != h) ++bad;
  }
  CHECK(bad == 0, "float16 round trips: %d of 63488 differ", bad);
  const std::pair<float, uint16_t> cases[] = {
      {1.0f, 0x3c00},           {-2.0f, 0xc000},          {65504.0f, 0x7bff},      {65519.0f, 0x7bff},
      {65520.0f, 0x7c00},       {5.9604645e-8f, 0x0001},  {2.9802322e-8f, 0x0000}, {4.4703484e-8f, 0x0001},
      {1.00048828125f, 0x3c00}, {1.00146484375f, 0x3c02}, {6.1035156e-5f, 0x0400}, {6.0975552e-5f, 0x03ff},
      {0.0f, 0x0000},           {-0.0f, 0x8000}};
  for (const auto& [value, want] : cases) {
    const uint16_t got = moe::cpu::float_to_half(value);
    CHECK(got == want, "float_to_half(%.9g) = 0x%04x, want 0x%04x", double(value), unsigned(got), unsigned(want));
  }
}

// The weights a dtype stands for, [n, k] in groups of g (quantized dtypes).
std::vector<float> stored_weights(moe::WeightDtype dtype, const std::vector<float>& w, int64_t n, int64_t k,
                                  int64_t g) {
  std::vector<float> out(w.size());
  if (moe::is_quantized(dtype)) {
    std::vector<uint8_t> codes(moe::code_bytes(dtype, k));
    std::vector<uint16_t> scales(std::max<int64_t>(1, k / g));
    for (int64_t r = 0; r < n; ++r) {
      moe::quantize_row(dtype, w.data() + r * k, k, g, codes.data(), scales.data());
      moe::dequantize_row(dtype, codes.data(), scales.data(), k, g, out.data() + r * k);
    }
    return out;
  }
  for (size_t i = 0; i < w.size(); ++i)
    out[i] = dtype == moe::WeightDtype::bfloat16  ? moe::cpu::bfloat16_to_float(moe::cpu::float_to_bfloat16(w[i]))
             : dtype == moe::WeightDtype::float16 ? moe::cpu::half_to_float(moe::cpu::float_to_half(w[i]))
                                                  : w[i];
  return out;
}

// A row of activations as a dot-product GEMM of the avx512_bf16 ISA sees it (kernel_dot_avx512.h): rounded to
// bfloat16, or quantized per group of g to int8 codes times max|a| / 127.
std::vector<double> dot_activations(moe::WeightDtype dtype, const float* a, int64_t k, int64_t g) {
  std::vector<double> out(k);
  for (int64_t i = 0; i < k; ++i) out[i] = moe::cpu::bfloat16_to_float(moe::cpu::float_to_bfloat16(a[i]));
  if (!moe::is_quantized(dtype)) return out;
  for (int64_t g0 = 0; g0 < k; g0 += g) {
    float amax = 0;
    for (int64_t i = g0; i < g0 + g; ++i) amax = std::max(amax, std::abs(a[i]));
    const float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
    for (int64_t i = g0; i < g0 + g; ++i) out[i] = std::nearbyint(a[i] * id) * double(d);
  }
  return out;
}

// 437 rows span several chunks of gemm_tile and end in a partial micro block; 1 to 13 rows give every size of
// partial block (each packed at its own row stride) and one full block plus one row. Every weight dtype, with
// k = 300 (a tail of 12 past the vectors; int8 / int4 with one scale per row of 300, padded to 304) and 264 in
// groups of 8 or 32 where they divide it; the K-quants with k = 512 (two super-blocks; they take no group size).
void test_gemm_tiles() {
  const moe::cpu::KernelTable* tables[] = {moe::cpu::kernels_wide16_for_tests(), &moe::kernels()};
  const moe::WeightDtype dtypes[] = {moe::WeightDtype::float32, moe::WeightDtype::bfloat16, moe::WeightDtype::float16,
                                     moe::WeightDtype::int8,    moe::WeightDtype::int4,     moe::WeightDtype::q4_k,
                                     moe::WeightDtype::q5_k,    moe::WeightDtype::q6_k};
  for (const moe::cpu::KernelTable* table : tables)
    for (int64_t rows : {437, 1, 2, 3, 5, 8, 11, 12, 13})
      for (bool gated : {false, true})
        for (moe::WeightDtype dtype : dtypes)
          for (auto [k, g] : {std::pair<int64_t, int64_t>{300, 0}, {264, 8}, {288, 32}, {512, 0}}) {
            if (!moe::is_quantized(dtype) && g != 0) continue;
            if (moe::is_k_quant(dtype) != (k == 512)) continue;
            const moe::cpu::KernelTable& t = *table;
            const char* where = table == tables[0] ? "wide template" : moe::isa_name(t.isa);
            const int64_t n = 45, group = g ? g : k;
            const auto a = randn(rows * k, 11, 1.0f), w = randn(n * k, 12, 0.1f), wu = randn(n * k, 13, 0.1f),
                       b = randn(n, 14, 0.1f);
            const moe::MatrixSource up{gated ? wu.data() : nullptr, {}, gated ? b.data() : nullptr};
            moe::PackedMatrix packed(t.geometry, 1, n, k, dtype, g, {w.data(), {}, b.data()}, up);
            // The same weights as float32, the values the dtype stores.
            const auto ws = stored_weights(dtype, w, n, k, group), wus = stored_weights(dtype, wu, n, k, group);
            moe::PackedMatrix f32(t.geometry, 1, n, k, moe::WeightDtype::float32, 0, {ws.data(), {}, b.data()},
                                  {gated ? wus.data() : nullptr, {}, gated ? b.data() : nullptr});
            std::vector<float> packed_a(t.geometry.packed_a_floats(rows, k)), out(rows * n), want_bits(rows * n);
            // Packed tile by tile, back to back, then multiplied in one call over all the rows, as the layer does.
            for (auto [matrix, dst] : {std::pair{&packed, &out}, std::pair{&f32, &want_bits}}) {
              moe::cpu::GemmProblem p = matrix->problem(0, moe::Activation::gelu);
              p.a = {a.data(), k, nullptr, 1};
              p.c = {dst->data(), n, nullptr, 1};
              for (int64_t r = 0; r < rows; r += moe::cpu::kTileRows)
                t.pack_a(p, r, std::min(rows, r + moe::cpu::kTileRows) - r,
                         packed_a.data() + r * t.geometry.packed_depth(k));
              t.weight_kernels(p.weight_dtype).gemm_tile(p, packed_a.data(), 0, rows, 0, matrix->panel_count());
            }
            // Which dtypes this table computes with integer (or bfloat16) dot products, the activations rounded: the
            // K-quants on every x86 ISA and neon_dotprod (kernel_dot_avx512.h, kernel_kquant_avx2.h,
            // kernel_kquant_neon.h), int8 / int4 on avx512_bf16, avx2 and neon_dotprod (kernel_quant_avx2.h,
            // kernel_quant_neon.h), int4 on avx512, and bfloat16 on avx512_bf16.
            const moe::Isa isa = t.isa;
            const bool dot =
                table != tables[0] &&
                ((moe::is_k_quant(dtype) && isa != moe::Isa::scalar && isa != moe::Isa::neon) ||
                 (dtype == moe::WeightDtype::int4 && (isa == moe::Isa::avx512_bf16 || isa == moe::Isa::avx512 ||
                                                      isa == moe::Isa::avx2 || isa == moe::Isa::neon_dotprod)) ||
                 (dtype == moe::WeightDtype::int8 &&
                  (isa == moe::Isa::avx512_bf16 || isa == moe::Isa::avx2 || isa == moe::Isa::neon_dotprod)) ||
                 (dtype == moe::WeightDtype::bfloat16 && isa == moe::Isa::avx512_bf16));
            // (A K-quant's weight is scale * code - min: a compiler may fuse the two, one rounding instead of two,
            // so its products are checked against float64 below, not bitwise.)
            if (!dot && !moe::is_k_quant(dtype)) {
              // Widened (and dequantized) exactly in registers, the same float32 sums in the same order: the result
              // is bitwise the float32 GEMM's on the stored weights.
              CHECK(std::memcmp(want_bits.data(), out.data(), out.size() * sizeof(float)) == 0,
                    "%s gemm tile (%s, %lld rows, k %lld, g %lld, gated=%d) bitwise equal to float32 on its weights",
                    moe::weight_dtype_name(dtype), where, (long long)rows, (long long)k, (long long)g, int(gated));
            }
            // Against float64 on the stored weights, and on the activations as a dot-product path rounds them.
            double max_err = 0;
            for (int64_t i = 0; i < rows; ++i) {
              // (the dot-product path quantizes activations per group of weights; a K-quant per super-block, as Q8_K)
              const int64_t agroup = moe::is_k_quant(dtype) ? 256 : group;
              const auto ai = dot ? dot_activations(dtype, a.data() + i * k, k, agroup)
                                  : std::vector<double>(a.begin() + i * k, a.begin() + (i + 1) * k);
              for (int64_t j = 0; j < n; ++j) {
                double gs = b[j], us = b[j];
                for (int64_t q = 0; q < k; ++q) {
                  gs += ai[q] * ws[j * k + q];
                  us += ai[q] * wus[j * k + q];
                }
                const double want =
                    gated ? act_ref(moe::Activation::gelu, gs) * us : act_ref(moe::Activation::gelu, gs);
                max_err = std::max(max_err, std::abs(want - out[i * n + j]));
              }
            }
            CHECK(max_err < 1e-4, "%s gemm tile (%s, %lld rows, k %lld, g %lld, gated=%d): max error %.3g",
                  moe::weight_dtype_name(dtype), where, (long long)rows, (long long)k, (long long)g, int(gated),
                  max_err);
            if (dtype != moe::WeightDtype::float32) {
              const double ratio = dtype == moe::WeightDtype::int4 ? 0.2 : dtype == moe::WeightDtype::int8 ? 0.35 : 0.6;
              CHECK(packed.bytes() < f32.bytes() * ratio, "%s panels take %zu bytes, float32 %zu",
                    moe::weight_dtype_name(dtype), packed.bytes(), f32.bytes());
            }
          }
}

// The output of one forward of the case's input.
std::vector<float> forward_output(moe::Layer& layer, const Case& c, const CaseData& d) {
  std::vector<float> out(c.tokens * c.d), logits(c.tokens * c.e), weights(c.tokens * c.k);
  std::vector<int32_t> experts(c.tokens * c.k), counts(c.e);
  layer.forward(d.x.data(), c.tokens, {out.data(), logits.data(), experts.data(), weights.data(), counts.data()});
  return out;
}

// Prewakes with no job after them, and across a pool resize: the answers stay the same and nothing hangs.
void test_prewake() {
  const Case c{64, 33, 100, 8, 2, moe::Activation::swiglu, true};
  CaseData d = make_case(c, 77);
  moe::CpuLayer layer(d.config, d.router.data(), d.weights);
  const auto run = [&] { return forward_output(layer, c, d); };
  const std::vector<float> want = run();
  moe::prewake_threads();  // no work follows: the workers spin, then sleep again
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  moe::prewake_threads();
  CHECK(run() == want, "a forward after prewakes differs");
  const int threads = moe::thread_count();
  moe::prewake_threads();
  moe::set_thread_count(3);  // joins workers that may be spinning for a prewake
  moe::prewake_threads();
  CHECK(run() == want, "a forward after a resize during a prewake differs");
  moe::set_thread_count(threads);
}

// Resizing the pool between forwards, many times and to every size: each forward returns, with the same
// answer (a worker started by a resize once took the last finished job for a new one and miscounted the next).
void test_resize_between_forwards() {
  const Case c{64, 33, 100, 8, 2, moe::Activation::swiglu, true};
  CaseData d = make_case(c, 79);
  moe::CpuLayer layer(d.config, d.router.data(), d.weights);
  const auto run = [&] { return forward_output(layer, c, d); };
  const std::vector<float> want = run();
  const int threads = moe::thread_count();
  bool same = true;
  for (int i = 0; i < 300; ++i) {
    moe::set_thread_count(1 + (i * 7) % 5);
    same = same && run() == want;
  }
  moe::set_thread_count(threads);
  CHECK(same, "a forward after a resize differs");
}

// Split::contiguous: every item runs exactly once, for any count against any pool size or thread limit, with
// items of very uneven cost (one thread's run then takes longer and the others steal from it).
void test_contiguous_runs() {
  moe::ThreadPool& pool = moe::ThreadPool::instance();
  const int threads = moe::thread_count();
  bool once = true;
  for (int size : {1, 2, 3, 5}) {
    moe::set_thread_count(size);
    for (int limit : {0, 1, 2}) {
      const moe::ThreadLimit scope(limit);
      for (int64_t count : {1, 2, 3, 7, 64, 1001}) {
        std::vector<std::atomic<int>> ran(static_cast<size_t>(count));
        for (auto& r : ran) r.store(0);
        pool.run(
            count,
            [&](int64_t i) {
              // item 0, the first of the calling thread's run, is slow: the others finish theirs early and steal from
              // it
              if (i == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
              ran[static_cast<size_t>(i)].fetch_add(1);
            },
            moe::ThreadPool::Split::contiguous);
        for (auto& r : ran) once = once && r.load() == 1;
      }
    }
  }
  moe::set_thread_count(threads);
  CHECK(once, "a contiguous job ran some item other than once");
}

// A two-stage job: every item runs once, and a second-stage item that waits for first-stage items of its group
// (as a forward's down projection waits for its expert's up projection) always gets them, with either split, any
// pool size or thread limit, slow first-stage items and stages of very different lengths.
void test_two_stage_jobs() {
  moe::ThreadPool& pool = moe::ThreadPool::instance();
  const int threads = moe::thread_count();
  bool once = true;
  std::atomic<bool> ordered{true};  // (written by the pool's threads)
  for (int size : {1, 2, 3, 5}) {
    moe::set_thread_count(size);
    for (int limit : {0, 2}) {
      const moe::ThreadLimit scope(limit);
      for (auto split : {moe::ThreadPool::Split::dynamic, moe::ThreadPool::Split::contiguous})
        for (const auto& shape : {std::array<int64_t, 3>{1, 1, 1},
                                  {2, 3, 2},
                                  {7, 5, 3},
                                  {64, 64, 8},
                                  {3, 100, 3},
                                  {100, 3, 2},
                                  {22, 8, 2}}) {
          const int64_t first = shape[0], second = shape[1], groups = shape[2];  // (C++17: lambdas capture no bindings)
          std::vector<std::atomic<int>> ran(static_cast<size_t>(first + second));
          std::vector<std::atomic<int64_t>> left(static_cast<size_t>(groups));
          for (auto& r : ran) r.store(0);
          for (auto& l : left) l.store(0);
          for (int64_t i = 0; i < first; ++i) left[static_cast<size_t>(i * groups / first)].fetch_add(1);
          pool.run(
              first + second,
              [&](int64_t i) {
                if (i < first) {
                  // the calling thread's first item and the stage's last are slow: the others wait or steal
                  if (i == 0 || i == first - 1) std::this_thread::sleep_for(std::chrono::microseconds(200));
                  ran[static_cast<size_t>(i)].fetch_add(1);
                  left[static_cast<size_t>(i * groups / first)].fetch_sub(1, std::memory_order_release);
                  return;
                }
                const int64_t g = (i - first) * groups / second;
                moe::ThreadPool::wait_until([&] { return left[static_cast<size_t>(g)].load() == 0; });
                for (int64_t j = 0; j < first; ++j)
                  if (j * groups / first == g && ran[static_cast<size_t>(j)].load() != 1) ordered.store(false);
                ran[static_cast<size_t>(i)].fetch_add(1);
              },
              split, first);
          for (auto& r : ran) once = once && r.load() == 1;
        }
    }
  }
  moe::set_thread_count(threads);
  CHECK(once, "a two-stage job ran some item other than once");
  CHECK(ordered.load(), "a second-stage item ran before the first-stage items it waited for");
}

// Jobs run in the order posted, off the posting thread, and a forward there matches one on this thread.
void test_job_thread() {
  const Case c{37, 33, 100, 8, 2, moe::Activation::swiglu, true};
  CaseData d = make_case(c, 78);
  moe::CpuLayer layer(d.config, d.router.data(), d.weights);
  const auto run = [&] { return forward_output(layer, c, d); };
  const std::vector<float> want = run();
  std::vector<int> order;
  std::vector<std::vector<float>> got(3);
  std::promise<std::thread::id> last;
  for (int i = 0; i < 3; ++i)
    moe::post_job(moe::JobQueue::cpu, [&, i] {
      got[i] = run();
      order.push_back(i);
      if (i == 2) last.set_value(std::this_thread::get_id());
    });
  CHECK(last.get_future().get() != std::this_thread::get_id(), "a job ran on the posting thread");
  CHECK((order == std::vector<int>{0, 1, 2}), "jobs ran out of order");
  for (const auto& g : got) CHECK(g == want, "a forward on the job thread differs");
  // CPU and GPU work have a thread each: a GPU-queue job that waits for a CPU-queue job posted after it finishes.
  std::promise<void> cpu_ran, gpu_done;
  std::shared_future<void> cpu_ran_future = cpu_ran.get_future().share();
  moe::post_job(moe::JobQueue::gpu, [cpu_ran_future, &gpu_done] {
    cpu_ran_future.wait();
    gpu_done.set_value();
  });
  moe::post_job(moe::JobQueue::cpu, [&cpu_ran] { cpu_ran.set_value(); });
  CHECK(gpu_done.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready,
        "the GPU queue waited behind the CPU queue");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--isa") == 0) {
    bool supported = false;
    for (moe::Isa isa : moe::supported_isas()) supported |= std::strcmp(moe::isa_name(isa), argv[2]) == 0;
    if (!supported) {
      std::printf("SKIP: isa %s is not supported on this CPU/build\n", argv[2]);
      return 77;
    }
#if defined(_WIN32)
    _putenv_s("MOE_FORCE_ISA", argv[2]);  // read once, at the first kernel call, which comes after this
#else
    setenv("MOE_FORCE_ISA", argv[2], 1);  // read once, at the first kernel call, which comes after this
#endif
  }
  std::printf("isa %s, %d threads\n", moe::isa_name(moe::active_isa()), moe::thread_count());
  test_capabilities();
  test_dispatch();
  test_all_dropped();
  test_top_k();
  test_half_conversions();
  test_gemm_tiles();
  test_prewake();
  test_resize_between_forwards();
  test_job_thread();
  test_contiguous_runs();
  test_two_stage_jobs();
  test_routing_rules();
  test_expert_cache();
  uint32_t seed = 1;
  const Case cases[] = {
      {1, 33, 100, 1, 1, moe::Activation::swiglu, false},
      {3, 33, 100, 4, 2, moe::Activation::swiglu, true},
      {64, 17, 40, 8, 8, moe::Activation::geglu, true},
      {513, 33, 100, 8, 2, moe::Activation::swiglu, true},
      {1, 100, 33, 64, 6, moe::Activation::gelu, true},
      {37, 33, 100, 4, 2, moe::Activation::gelu_tanh, true},
      {37, 20, 30, 4, 3, moe::Activation::relu, false},
      {37, 20, 30, 4, 1, moe::Activation::silu, true},
      {37, 20, 30, 4, 2, moe::Activation::swiglu_clamped, true},
      {5, 20, 30, 64, 1, moe::Activation::identity, true},
      {700, 300, 40, 2, 2, moe::Activation::swiglu, true},  // 700 rows per expert: several row chunks, 2 k-blocks
      // A group's A over 4 MiB goes chunk by chunk (run_groups): the first GEMM's A holds 4.4 MB in the first case,
      // the second GEMM's 6 MB in the second.
      {1100, 1000, 40, 1, 1, moe::Activation::swiglu, true},
      {1500, 40, 1000, 2, 2, moe::Activation::gelu, false},
  };
  for (const Case& c : cases) test_layer(c, seed += 10);
  std::printf(failures ? "%d check(s) failed\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
