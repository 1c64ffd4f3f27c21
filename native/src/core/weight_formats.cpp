#include "weight_formats.h"

#include <cstring>
#include <string>

#include "../cpu/half.h"

namespace moe {

namespace {

size_t f32_panel_bytes(int64_t k, int nr) { return static_cast<size_t>(k) * nr * sizeof(float); }

void f32_pack_column(const float* src, int64_t k, int nr, int slot, void* panel) {
  float* p = static_cast<float*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) p[kk * nr + slot] = src ? src[kk] : 0.0f;
}

size_t bf16_panel_bytes(int64_t k, int nr) { return static_cast<size_t>(k) * nr * sizeof(uint16_t); }

// float32 -> bfloat16, round to nearest, ties to even (as PyTorch's and oneDNN's conversions); the weights are
// finite (checked when they cross the seam), so no NaN needs keeping quiet.
uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

void bf16_pack_column(const float* src, int64_t k, int nr, int slot, void* panel) {
  uint16_t* p = static_cast<uint16_t*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) p[kk * nr + slot] = src ? to_bf16(src[kk]) : 0;
}

void f16_pack_column(const float* src, int64_t k, int nr, int slot, void* panel) {
  uint16_t* p = static_cast<uint16_t*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) p[kk * nr + slot] = src ? cpu::float_to_half(src[kk]) : 0;
}

// In WeightDtype order.
const WeightFormat kFormats[kWeightDtypes] = {
    {WeightDtype::float32, "float32", &f32_panel_bytes, &f32_pack_column},
    {WeightDtype::bfloat16, "bfloat16", &bf16_panel_bytes, &bf16_pack_column},
    {WeightDtype::float16, "float16", &bf16_panel_bytes, &f16_pack_column},  // the same two bytes per weight
};

}  // namespace

const WeightFormat& weight_format(WeightDtype dtype) { return kFormats[static_cast<int>(dtype)]; }

const char* weight_dtype_name(WeightDtype dtype) { return weight_format(dtype).name; }

bool parse_weight_dtype(const std::string& name, WeightDtype* out) {
  for (const WeightFormat& f : kFormats)
    if (name == f.name) {
      *out = f.dtype;
      return true;
    }
  return false;
}

}  // namespace moe
