#include "weight_formats.h"

#include <string>

#include "../cpu/half.h"

namespace moe {

namespace {

size_t f32_panel_bytes(int64_t k, int nr) { return static_cast<size_t>(k) * nr * sizeof(float); }

void f32_pack_column(const float* src, int64_t k, int nr, int slot, void* panel) {
  float* p = static_cast<float*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) p[kk * nr + slot] = src ? src[kk] : 0.0f;
}

size_t two_byte_panel_bytes(int64_t k, int nr) { return static_cast<size_t>(k) * nr * sizeof(uint16_t); }

// A 16-bit dtype's column: each float32 weight converted by `convert` (round to nearest even).
template <uint16_t (*convert)(float)>
void pack_column_16(const float* src, int64_t k, int nr, int slot, void* panel) {
  uint16_t* p = static_cast<uint16_t*>(panel);
  for (int64_t kk = 0; kk < k; ++kk) p[kk * nr + slot] = src ? convert(src[kk]) : 0;
}

// In WeightDtype order.
const WeightFormat kFormats[kWeightDtypes] = {
    {WeightDtype::float32, "float32", &f32_panel_bytes, &f32_pack_column},
    {WeightDtype::bfloat16, "bfloat16", &two_byte_panel_bytes, &pack_column_16<cpu::float_to_bfloat16>},
    {WeightDtype::float16, "float16", &two_byte_panel_bytes, &pack_column_16<cpu::float_to_half>},
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
