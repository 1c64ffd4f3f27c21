// The K-quant blocks of core/kquants.h. Compiled with -ffp-contract=off (CMakeLists.txt): ggml's reference code is
// built without fused multiply-adds, and both its quantizer's searches and its dequantization round every product
// and sum on its own; an FMA here would pick other codes, or other weights, in rare cases.
#include "kquants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../cpu/half.h"

namespace moe::kquant {

namespace {

constexpr int kSubBlocks4 = 8;      // Q4_K / Q5_K: 8 sub-blocks of 32
constexpr int kSubBlocks6 = 16;     // Q6_K: 16 sub-blocks of 16
constexpr float kAllZero = 1e-15f;  // ggml's GROUP_MAX_EPS: a sub-block this small quantizes to zeros

float f16(const uint8_t* p) { return cpu::half_to_float(static_cast<uint16_t>(p[0] | (p[1] << 8))); }
void put_f16(uint8_t* p, float v) {
  const uint16_t h = cpu::float_to_half(v);
  p[0] = static_cast<uint8_t>(h & 0xff), p[1] = static_cast<uint8_t>(h >> 8);
}

// Round to nearest integer, ties to even, the way ggml does it (adding 1.5 * 2^23 and reading the low bits): for
// |v| <= 2^22, the same as std::nearbyint in the default rounding mode.
int nearest(float v) {
  float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007fffff) - 0x00400000;
}

// Sub-block j's 6-bit scale and min from Q4_K / Q5_K's 12 packed bytes: j < 4 in the low six bits of bytes j and
// j + 4; j >= 4 in the nibbles of byte j + 4, their top two bits in the high bits of bytes j - 4 and j.
void scale_min(const uint8_t* s, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63, *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// The asymmetric search of Q4_K / Q5_K for one sub-block (ggml's make_qkx2_quants): codes in [0, top] and a scale
// and min (returned as a non-negative offset) that minimise the weighted squared error, trying the plain min-max
// fit and then nsteps + 1 stretched grids. Each sum accumulates in ggml's order.
float fit_affine(int n, int top, const float* x, const float* weight, uint8_t* codes, float* offset, float rmin,
                 float rdelta, int nsteps) {
  float lo = x[0], hi = x[0], sum_w = weight[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += weight[i];
    sum_x += weight[i] * x[i];
  }
  if (lo > 0) lo = 0;
  if (hi == lo) {
    std::fill_n(codes, n, uint8_t{0});
    *offset = -lo;
    return 0.0f;
  }
  float inv = top / (hi - lo), scale = 1 / inv, best = 0;
  for (int i = 0; i < n; ++i) {
    codes[i] = static_cast<uint8_t>(std::clamp(nearest(inv * (x[i] - lo)), 0, top));
    const float diff = scale * codes[i] + lo - x[i];
    best += weight[i] * (diff * diff);
  }
  uint8_t trial[32];
  for (int step = 0; step <= nsteps; ++step) {
    inv = (rmin + rdelta * step + top) / (hi - lo);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(inv * (x[i] - lo)), 0, top);
      trial[i] = static_cast<uint8_t>(l);
      sum_l += weight[i] * l;
      sum_l2 += weight[i] * l * l;
      sum_xl += weight[i] * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;
    float s = (sum_w * sum_xl - sum_x * sum_l) / det, m = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (m > 0) m = 0, s = sum_xl / sum_l2;
    float error = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = s * trial[i] + m - x[i];
      error += weight[i] * (diff * diff);
    }
    if (error < best) {
      std::copy_n(trial, n, codes);
      best = error, scale = s, lo = m;
    }
  }
  *offset = -lo;
  return scale;
}

// The symmetric search of Q6_K for one sub-block (ggml's make_qx_quants with weights x^2): codes in [-top, top - 1]
// around the value of largest magnitude, then 18 scales within 1% of it, keeping the best weighted fit.
float fit_symmetric(int n, int top, const float* x, int8_t* codes) {
  float amax = 0, peak = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), peak = x[i];
  if (amax < kAllZero) {
    std::fill_n(codes, n, int8_t{0});
    return 0.0f;
  }
  const auto quantize = [&](float inv, int i) { return std::clamp(nearest(inv * x[i]), -top, top - 1); };
  float inv = -top / peak, sum_lx = 0, sum_l2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = quantize(inv, i);
    codes[i] = static_cast<int8_t>(l + top);
    const float w = x[i] * x[i];
    sum_lx += w * x[i] * l;
    sum_l2 += w * l * l;
  }
  float scale = sum_l2 ? sum_lx / sum_l2 : 0.0f, best = scale * sum_lx;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    inv = -(top + 0.1f * step) / peak;
    sum_lx = sum_l2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = quantize(inv, i);
      const float w = x[i] * x[i];
      sum_lx += w * x[i] * l;
      sum_l2 += w * l * l;
    }
    if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
      for (int i = 0; i < n; ++i) codes[i] = static_cast<int8_t>(quantize(inv, i) + top);
      scale = sum_lx / sum_l2, best = scale * sum_lx;
    }
  }
  return scale;
}

// Q4_K and Q5_K (bits 4 or 5): fit each sub-block, quantize the fits' scales and mins to 6 bits of the block's
// largest, then requantize the weights against the factors as stored.
void quantize_affine(int bits, const float* x, uint8_t* b) {
  const int top = (1 << bits) - 1;
  float scales[kSubBlocks4], offsets[kSubBlocks4], weight[32], max_scale = 0, max_offset = 0;
  uint8_t codes[kSuperBlock];
  for (int j = 0; j < kSubBlocks4; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float mean = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weight[l] = mean + std::fabs(xs[l]);
    scales[j] = fit_affine(32, top, xs, weight, codes + 32 * j, &offsets[j], bits == 4 ? -1.0f : -0.5f, 0.1f,
                           bits == 4 ? 20 : 15);
    max_scale = std::max(max_scale, scales[j]);
    max_offset = std::max(max_offset, offsets[j]);
  }
  uint8_t* packed = b + 4;
  std::memset(packed, 0, 12);
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f,
              inv_offset = max_offset > 0 ? 63.0f / max_offset : 0.0f;
  for (int j = 0; j < kSubBlocks4; ++j) {
    const int ls = std::min(63, static_cast<int>(static_cast<uint8_t>(nearest(inv_scale * scales[j]))));
    const int lm = std::min(63, static_cast<int>(static_cast<uint8_t>(nearest(inv_offset * offsets[j]))));
    if (j < 4) {
      packed[j] = static_cast<uint8_t>(ls), packed[j + 4] = static_cast<uint8_t>(lm);
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0xf) | ((lm & 0xf) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  put_f16(b, max_scale / 63.0f);
  put_f16(b + 2, max_offset / 63.0f);
  for (int j = 0; j < kSubBlocks4; ++j) {
    int sc, m;
    scale_min(packed, j, &sc, &m);
    const float d = f16(b) * sc;
    if (!d) continue;
    const float dm = f16(b + 2) * m;
    for (int l = 0; l < 32; ++l)
      codes[32 * j + l] = static_cast<uint8_t>(std::clamp(nearest((x[32 * j + l] + dm) / d), 0, top));
  }
  // Nibbles: byte l of each 32-byte run holds codes l (low) and l + 32 (high) of a 64-weight pair of sub-blocks;
  // Q5_K's fifth bits go to bit 2p (first sub-block of pair p) and 2p + 1 of byte l of qh.
  uint8_t* qs = b + (bits == 4 ? 16 : 48);
  uint8_t* qh = b + 16;
  if (bits == 5) std::memset(qh, 0, 32);
  for (int p = 0; p < 4; ++p)
    for (int l = 0; l < 32; ++l) {
      int lo = codes[64 * p + l], hi = codes[64 * p + 32 + l];
      if (bits == 5) {
        if (lo > 15) lo -= 16, qh[l] |= static_cast<uint8_t>(1 << (2 * p));
        if (hi > 15) hi -= 16, qh[l] |= static_cast<uint8_t>(2 << (2 * p));
      }
      qs[32 * p + l] = static_cast<uint8_t>(lo | (hi << 4));
    }
}

void quantize_q6(const float* x, uint8_t* b) {
  float scales[kSubBlocks6], max_scale = 0, max_abs = 0;
  int8_t codes[kSuperBlock];
  for (int j = 0; j < kSubBlocks6; ++j) {
    scales[j] = fit_symmetric(16, 32, x + 16 * j, codes + 16 * j);
    if (std::fabs(scales[j]) > max_abs) max_abs = std::fabs(scales[j]), max_scale = scales[j];
  }
  std::memset(b, 0, 210);
  if (max_abs < kAllZero) return;  // all zero, d = 0
  const float inv = -128.0f / max_scale;
  put_f16(b + 208, 1 / inv);
  int8_t* sc = reinterpret_cast<int8_t*>(b + 192);
  for (int j = 0; j < kSubBlocks6; ++j) sc[j] = static_cast<int8_t>(std::min(127, nearest(inv * scales[j])));
  for (int j = 0; j < kSubBlocks6; ++j) {
    const float d = f16(b + 208) * sc[j];
    if (!d) continue;
    for (int l = 0; l < 16; ++l)
      codes[16 * j + l] = static_cast<int8_t>(std::clamp(nearest(x[16 * j + l] / d), -32, 31) + 32);
  }
  // Per half of 128: ql byte l holds codes l (low) and l + 64 (high), byte l + 32 codes l + 32 and l + 96; qh byte
  // l their top two bits, at 0, 2, 4, 6.
  for (int h = 0; h < 2; ++h) {
    uint8_t* ql = b + 64 * h;
    uint8_t* qh = b + 128 + 32 * h;
    const int8_t* c = codes + 128 * h;
    for (int l = 0; l < 32; ++l) {
      ql[l] = static_cast<uint8_t>((c[l] & 0xf) | ((c[l + 64] & 0xf) << 4));
      ql[l + 32] = static_cast<uint8_t>((c[l + 32] & 0xf) | ((c[l + 96] & 0xf) << 4));
      qh[l] = static_cast<uint8_t>((c[l] >> 4) | ((c[l + 32] >> 4) << 2) | ((c[l + 64] >> 4) << 4) |
                                   ((c[l + 96] >> 4) << 6));
    }
  }
}

}  // namespace

int64_t block_bytes(WeightDtype dtype) {
  return dtype == WeightDtype::q4_k ? 144 : dtype == WeightDtype::q5_k ? 176 : 210;
}

int64_t sub_block(WeightDtype dtype) { return dtype == WeightDtype::q6_k ? 16 : 32; }

void block_factors(WeightDtype dtype, const uint8_t* b, uint16_t* d, uint16_t* dmin, uint8_t* scale, uint8_t* min,
                   int* code) {
  const auto bits = [](const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); };
  if (dtype == WeightDtype::q6_k) {
    *d = bits(b + 208), *dmin = 0;
    for (int j = 0; j < kSubBlocks6; ++j) scale[j] = b[192 + j], min[j] = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b + 64 * h;
      const uint8_t* qh = b + 128 + 32 * h;
      int* c = code + 128 * h;
      for (int l = 0; l < 32; ++l) {
        c[l] = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
        c[l + 32] = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
        c[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        c[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      }
    }
    return;
  }
  const bool five = dtype == WeightDtype::q5_k;
  *d = bits(b), *dmin = bits(b + 2);
  for (int j = 0; j < kSubBlocks4; ++j) {
    int sc, m;
    scale_min(b + 4, j, &sc, &m);
    scale[j] = static_cast<uint8_t>(sc), min[j] = static_cast<uint8_t>(m);
  }
  const uint8_t* qs = b + (five ? 48 : 16);
  const uint8_t* qh = b + 16;
  for (int p = 0; p < 4; ++p)
    for (int l = 0; l < 32; ++l) {
      const uint8_t q = qs[32 * p + l];
      code[64 * p + l] = (q & 0xf) + (five && (qh[l] >> (2 * p)) & 1 ? 16 : 0);
      code[64 * p + 32 + l] = (q >> 4) + (five && (qh[l] >> (2 * p + 1)) & 1 ? 16 : 0);
    }
}

void decode_block(WeightDtype dtype, const uint8_t* b, float* scale, float* min, int* code) {
  uint16_t d, dmin;
  uint8_t sc[kSubBlocks6], m[kSubBlocks6];
  block_factors(dtype, b, &d, &dmin, sc, m, code);
  const bool q6 = dtype == WeightDtype::q6_k;
  const float df = cpu::half_to_float(d), dminf = cpu::half_to_float(dmin);
  for (int j = 0; j < (q6 ? kSubBlocks6 : kSubBlocks4); ++j) {
    // Q6_K's scales are int8; the others' 6-bit factors unsigned
    scale[j] = df * (q6 ? static_cast<float>(static_cast<int8_t>(sc[j])) : static_cast<float>(sc[j]));
    min[j] = q6 ? 0.0f : dminf * static_cast<float>(m[j]);
  }
}

void quantize_row(WeightDtype dtype, const float* x, int64_t k, uint8_t* blocks) {
  for (int64_t i = 0; i < k / kSuperBlock; ++i) {
    uint8_t* b = blocks + i * block_bytes(dtype);
    if (dtype == WeightDtype::q6_k)
      quantize_q6(x + i * kSuperBlock, b);
    else
      quantize_affine(dtype == WeightDtype::q4_k ? 4 : 5, x + i * kSuperBlock, b);
  }
}

void dequantize_row(WeightDtype dtype, const uint8_t* blocks, int64_t k, float* out) {
  const int64_t sub = sub_block(dtype);
  float scale[kSubBlocks6], min[kSubBlocks6];
  int code[kSuperBlock];
  for (int64_t i = 0; i < k / kSuperBlock; ++i) {
    decode_block(dtype, blocks + i * block_bytes(dtype), scale, min, code);
    for (int64_t j = 0; j < kSuperBlock; ++j) {
      const float product = scale[j / sub] * static_cast<float>(code[j]);
      out[i * kSuperBlock + j] = product - min[j / sub];
    }
  }
}

}  // namespace moe::kquant
