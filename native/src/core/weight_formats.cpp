#include "weight_formats.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../cpu/half.h"
#include "kquants.h"
#include "thread_pool.h"

namespace moe {

namespace {

size_t f32_panel_bytes(int64_t k, int64_t, int nr) { return static_cast<size_t>(k) * nr * sizeof(float); }

void f32_pack_column(const ColumnSource& src, int64_t k, int64_t, int nr, int slot, void* panel) {
  float* p = static_cast<float*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) p[kk * nr + slot] = src.values ? src.values[kk] : 0.0f;
}

void f32_unpack_column(const void* panel, int64_t k, int64_t, int nr, int slot, float* out) {
  const float* p = static_cast<const float*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) out[kk] = p[kk * nr + slot];
}

size_t f16_panel_bytes(int64_t k, int64_t, int nr) { return static_cast<size_t>(k) * nr * sizeof(uint16_t); }

void f16_pack_column(const ColumnSource& src, int64_t k, int64_t, int nr, int slot, void* panel) {
  uint16_t* p = static_cast<uint16_t*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) p[kk * nr + slot] = src.values ? cpu::float_to_half(src.values[kk]) : 0;
}

void f16_unpack_column(const void* panel, int64_t k, int64_t, int nr, int slot, float* out) {
  const uint16_t* p = static_cast<const uint16_t*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) out[kk] = cpu::half_to_float(p[kk * nr + slot]);
}

// bfloat16 in k pairs (vdpbf16ps's operand): element (kk, slot) at pair kk / 2, word slot, half kk % 2.
size_t bf16_panel_bytes(int64_t k, int64_t, int nr) { return static_cast<size_t>((k + 1) / 2) * nr * 4; }

void bf16_pack_column(const ColumnSource& src, int64_t k, int64_t, int nr, int slot, void* panel) {
  uint16_t* p = static_cast<uint16_t*>(panel);
  for (int64_t kk = 0; kk < (k + 1) / 2 * 2; ++kk)
    p[(kk / 2 * nr + slot) * 2 + kk % 2] = src.values && kk < k ? cpu::float_to_bfloat16(src.values[kk]) : 0;
}

void bf16_unpack_column(const void* panel, int64_t k, int64_t, int nr, int slot, float* out) {
  const uint16_t* p = static_cast<const uint16_t*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) out[kk] = cpu::bfloat16_to_float(p[(kk / 2 * nr + slot) * 2 + kk % 2]);
}

int code_bits(WeightDtype dtype) { return dtype == WeightDtype::int8 ? 8 : 4; }

int64_t group_bytes(WeightDtype dtype, int64_t g, int nr) {
  return 2 * nr + padded_group(g) * nr * code_bits(dtype) / 8;
}

template <WeightDtype D>
size_t quant_panel_bytes(int64_t k, int64_t g, int nr) {
  return static_cast<size_t>(k / g * group_bytes(D, g, nr));
}

// The code of weight i of a row as QuantizedSource lays it out: int8 signed; int4 unsigned (0..15).
int row_code(WeightDtype dtype, const uint8_t* codes, int64_t i, int64_t g) {
  if (dtype == WeightDtype::int8) return static_cast<int8_t>(codes[i]);
  const int64_t group = i / g, j = i % g, half = g / 2;
  const uint8_t byte = codes[group * half + j % half];
  return j < half ? byte & 0xf : byte >> 4;
}

template <WeightDtype D>
void quant_pack_column(const ColumnSource& src, int64_t k, int64_t g, int nr, int slot, void* panel) {
  const int64_t groups = k / g, gp = padded_group(g), gbytes = group_bytes(D, g, nr);
  const uint8_t* codes = src.codes;
  const uint16_t* scales = src.scales;
  std::vector<uint8_t> quantized_codes;
  std::vector<uint16_t> quantized_scales;
  if (!codes && src.values) {  // float32 weights: quantized here, with the same formulas as quant.quantize
    quantized_codes.resize(static_cast<size_t>(code_bytes(D, k)));
    quantized_scales.resize(static_cast<size_t>(groups));
    quantize_row(D, src.values, k, g, quantized_codes.data(), quantized_scales.data());
    codes = quantized_codes.data();
    scales = quantized_scales.data();
  }
  for (int64_t grp = 0; grp < groups; ++grp) {
    uint8_t* base = static_cast<uint8_t*>(panel) + grp * gbytes;
    reinterpret_cast<uint16_t*>(base)[slot] = codes ? scales[grp] : 0;
    uint8_t* words = base + 2 * nr;
    for (int64_t j = 0; j < gp; ++j) {
      const bool real = codes && j < g;
      if (D == WeightDtype::int8) {
        const int q = real ? row_code(D, codes, grp * g + j, g) : 0;
        words[(j / 4 * nr + slot) * 4 + j % 4] = static_cast<uint8_t>(q + 128);
      } else {
        const int u = real ? row_code(D, codes, grp * g + j, g) : 8;
        uint8_t& byte = words[(j / 8 * nr + slot) * 4 + j % 4];
        byte = j % 8 < 4 ? static_cast<uint8_t>((byte & 0xf0) | u) : static_cast<uint8_t>((byte & 0x0f) | (u << 4));
      }
    }
  }
}

template <WeightDtype D>
void quant_unpack_column(const void* panel, int64_t k, int64_t g, int nr, int slot, float* out) {
  const int64_t gbytes = group_bytes(D, g, nr);
  for (int64_t grp = 0; grp < k / g; ++grp) {
    const uint8_t* base = static_cast<const uint8_t*>(panel) + grp * gbytes;
    const float d = cpu::half_to_float(reinterpret_cast<const uint16_t*>(base)[slot]);
    const uint8_t* words = base + 2 * nr;
    for (int64_t j = 0; j < g; ++j) {
      int q;
      if (D == WeightDtype::int8) {
        q = static_cast<int>(words[(j / 4 * nr + slot) * 4 + j % 4]) - 128;
      } else {
        const uint8_t byte = words[(j / 8 * nr + slot) * 4 + j % 4];
        q = (j % 8 < 4 ? byte & 0xf : byte >> 4) - 8;
      }
      out[grp * g + j] = static_cast<float>(q) * d;
    }
  }
}

// The K-quants (core/kquants.h) in KPanel's layout (weight_formats.h): the blocks' own d, dmin and 6- or 8-bit
// factors, the codes' nibbles in int4's octets and (q5_k, q6_k) their high bits in a plane per sub-block.
template <WeightDtype D>
size_t k_panel_bytes(int64_t k, int64_t, int nr) {
  return static_cast<size_t>(k / kquant::kSuperBlock * k_panel(D, nr).block());
}

// Where input j of a sub-block keeps its code: the nibble (byte and shift in the octets' words) and the high bits
// (byte and shift in the plane's word of column `slot`).
struct KCodeAt {
  uint8_t* nibble;
  int nibble_shift;
  uint8_t* high;
  int high_shift;
};
KCodeAt k_code_at(const KPanel& kp, uint8_t* sub_block, int64_t j, int slot) {
  const int64_t quad = j / 4, b = j % 4;
  return {sub_block + (j / 8 * kp.nr + slot) * 4 + b, j % 8 < 4 ? 0 : 4, sub_block + kp.nibbles() + slot * 4 + b,
          static_cast<int>(quad * kp.high)};
}

template <WeightDtype D>
void k_pack_column(const ColumnSource& src, int64_t k, int64_t, int nr, int slot, void* panel) {
  const KPanel kp = k_panel(D, nr);
  const uint8_t* blocks = src.codes;
  std::vector<uint8_t> quantized;
  if (!blocks && src.values) {  // float32 weights: quantized here, as quant.quantize does
    quantized.resize(static_cast<size_t>(code_bytes(D, k)));
    kquant::quantize_row(D, src.values, k, quantized.data());
    blocks = quantized.data();
  }
  uint8_t raw[16] = {}, raw_min[16] = {};
  uint16_t d = 0, dmin = 0;
  int code[kquant::kSuperBlock] = {};
  const uint8_t high_mask = static_cast<uint8_t>((1 << kp.high) - 1);
  for (int64_t b = 0; b < k / kquant::kSuperBlock; ++b) {
    if (blocks) kquant::block_factors(D, blocks + b * kquant::block_bytes(D), &d, &dmin, raw, raw_min, code);
    uint8_t* h = static_cast<uint8_t*>(panel) + b * kp.block();
    reinterpret_cast<uint16_t*>(h)[slot] = d;
    if (kp.has_min) reinterpret_cast<uint16_t*>(h + kp.dmin_at())[slot] = dmin;
    for (int64_t s = 0; s < kp.subs; ++s) {
      h[kp.scale_at(s) + slot] = raw[s];
      if (kp.has_min) h[kp.min_at(s) + slot] = raw_min[s];
      for (int64_t j = 0; j < kp.g; ++j) {
        const KCodeAt at = k_code_at(kp, h + kp.codes_at(s), j, slot);
        const int stored = blocks ? code[s * kp.g + j] + static_cast<int>(kp.offset) : static_cast<int>(kp.offset);
        const uint8_t nibble_mask = static_cast<uint8_t>(0xf << at.nibble_shift);
        *at.nibble = static_cast<uint8_t>((*at.nibble & ~nibble_mask) | ((stored << at.nibble_shift) & nibble_mask));
        if (kp.high) {
          const uint8_t mask = static_cast<uint8_t>(high_mask << at.high_shift);
          *at.high = static_cast<uint8_t>((*at.high & ~mask) | (((stored >> 4) << at.high_shift) & mask));
        }
      }
    }
  }
}

template <WeightDtype D>
void k_unpack_column(const void* panel, int64_t k, int64_t, int nr, int slot, float* out) {
  const KPanel kp = k_panel(D, nr);
  const int high_mask = (1 << kp.high) - 1;
  for (int64_t b = 0; b < k / kquant::kSuperBlock; ++b) {
    uint8_t* h = const_cast<uint8_t*>(static_cast<const uint8_t*>(panel)) + b * kp.block();
    const float d = cpu::half_to_float(reinterpret_cast<const uint16_t*>(h)[slot]);
    const float dmin =
        kp.has_min ? cpu::half_to_float(reinterpret_cast<const uint16_t*>(h + kp.dmin_at())[slot]) : 0.0f;
    for (int64_t s = 0; s < kp.subs; ++s) {
      const uint8_t sc = h[kp.scale_at(s) + slot];
      const float scale = d * static_cast<float>(kp.has_min ? sc : static_cast<int8_t>(sc));
      const float min = kp.has_min ? dmin * static_cast<float>(h[kp.min_at(s) + slot]) : 0.0f;
      for (int64_t j = 0; j < kp.g; ++j) {
        const KCodeAt at = k_code_at(kp, h + kp.codes_at(s), j, slot);
        int stored = (*at.nibble >> at.nibble_shift) & 0xf;
        if (kp.high) stored |= ((*at.high >> at.high_shift) & high_mask) << 4;
        const float product = scale * static_cast<float>(stored - static_cast<int>(kp.offset));
        out[(b * kp.subs + s) * kp.g + j] = product - min;
      }
    }
  }
}

// One entry per WeightDtype, keyed (keyed_table refuses a dtype left out or given twice, at compile time).
constexpr std::array<WeightFormat, kWeightDtypes> kFormats = keyed_table<WeightFormat>({
    {WeightDtype::float32, "float32", 32, &f32_panel_bytes, &f32_pack_column, &f32_unpack_column},
    {WeightDtype::bfloat16, "bfloat16", 16, &bf16_panel_bytes, &bf16_pack_column, &bf16_unpack_column},
    {WeightDtype::float16, "float16", 16, &f16_panel_bytes, &f16_pack_column, &f16_unpack_column},
    {WeightDtype::int8, "int8", 8, &quant_panel_bytes<WeightDtype::int8>, &quant_pack_column<WeightDtype::int8>,
     &quant_unpack_column<WeightDtype::int8>},
    {WeightDtype::int4, "int4", 4, &quant_panel_bytes<WeightDtype::int4>, &quant_pack_column<WeightDtype::int4>,
     &quant_unpack_column<WeightDtype::int4>},
    {WeightDtype::q4_k, "q4_k", 4, &k_panel_bytes<WeightDtype::q4_k>, &k_pack_column<WeightDtype::q4_k>,
     &k_unpack_column<WeightDtype::q4_k>},
    {WeightDtype::q5_k, "q5_k", 5, &k_panel_bytes<WeightDtype::q5_k>, &k_pack_column<WeightDtype::q5_k>,
     &k_unpack_column<WeightDtype::q5_k>},
    {WeightDtype::q6_k, "q6_k", 6, &k_panel_bytes<WeightDtype::q6_k>, &k_pack_column<WeightDtype::q6_k>,
     &k_unpack_column<WeightDtype::q6_k>},
});

}  // namespace

const WeightFormat& weight_format(WeightDtype dtype) { return kFormats[static_cast<int>(dtype)]; }

const char* weight_dtype_name(WeightDtype dtype) { return weight_format(dtype).name; }

bool parse_weight_dtype(const std::string& name, WeightDtype* out) {
  for (const WeightFormat& f : kFormats)
    if (name == f.name) {
      *out = f.key;
      return true;
    }
  return false;
}

// (The K-quants: a super-block's float16 d is at most its largest sub-block scale / 63, which itself is about
// the sub-block's range / 15: weights up to 65504 keep every factor finite with a wide margin.)
float max_quantizable(WeightDtype dtype) {
  return kFloat16Max * (dtype == WeightDtype::int8 ? 127.0f : dtype == WeightDtype::int4 ? 8.0f : 1.0f);
}

void quantize_row(WeightDtype dtype, const float* w, int64_t k, int64_t g, uint8_t* codes, uint16_t* scales) {
  if (is_k_quant(dtype)) return kquant::quantize_row(dtype, w, k, codes);
  for (int64_t grp = 0; grp < k / g; ++grp) {
    const float* x = w + grp * g;
    // Q8_0: d = max|w| / 127. Q4_0: d = m / -8, m the weight of largest magnitude (the first such), so that it
    // gets the code 0 (-8 d) and the other side keeps 7 steps.
    float amax = 0.0f, m = 0.0f;
    for (int64_t j = 0; j < g; ++j)
      if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), m = x[j];
    const float d = dtype == WeightDtype::int8 ? amax / 127.0f : m / -8.0f;
    scales[grp] = cpu::float_to_half(d);
    // The stored scale may round to zero (d subnormal for float16): the group's weights are then all zero.
    const float id = cpu::half_to_float(scales[grp]) != 0.0f ? 1.0f / d : 0.0f;
    if (dtype == WeightDtype::int8) {
      for (int64_t j = 0; j < g; ++j)  // roundf: ties away from zero, as llama.cpp's quantize_row_q8_0
        codes[grp * g + j] =
            static_cast<uint8_t>(static_cast<int8_t>(std::clamp(std::roundf(x[j] * id), -127.0f, 127.0f)));
    } else {
      const int64_t half = g / 2;
      for (int64_t j = 0; j < half; ++j) {
        // (int) truncates: floor for the non-negative w / d + 8.5, which is llama.cpp's rounding.
        const int lo = std::clamp(static_cast<int>(x[j] * id + 8.5f), 0, 15);
        const int hi = std::clamp(static_cast<int>(x[j + half] * id + 8.5f), 0, 15);
        codes[grp * half + j] = static_cast<uint8_t>(lo | (hi << 4));
      }
    }
  }
}

void quantize_rows(WeightDtype dtype, const float* w, int64_t rows, int64_t k, int64_t g, uint8_t* codes,
                   uint16_t* scales) {
  const int64_t row_bytes = code_bytes(dtype, k), row_scales = scales_per_row(dtype, k, g);
  // Items of ~64K weights: the K-quants' reference search runs ~15 (q4_k) to ~35 (q6_k) M weights/s a thread, the
  // others are a pass over memory; rows are independent, so the result is the same on any number of threads.
  const int64_t per = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, k));
  ThreadPool::instance().run((rows + per - 1) / per, [&](int64_t item) {
    for (int64_t r = item * per; r < std::min(rows, (item + 1) * per); ++r)
      quantize_row(dtype, w + r * k, k, g, codes + r * row_bytes, scales + r * row_scales);
  });
}

void dequantize_row(WeightDtype dtype, const uint8_t* codes, const uint16_t* scales, int64_t k, int64_t g, float* out) {
  if (is_k_quant(dtype)) return kquant::dequantize_row(dtype, codes, k, out);
  for (int64_t i = 0; i < k; ++i) {
    const int q = row_code(dtype, codes, i, g);
    out[i] = static_cast<float>(dtype == WeightDtype::int8 ? q : q - 8) * cpu::half_to_float(scales[i / g]);
  }
}

}  // namespace moe
