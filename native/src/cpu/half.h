// The 16-bit weight formats in portable C++: float16 <-> float32 (IEEE 754 binary16) and float32 -> bfloat16, each
// rounding to nearest even. For packing 16-bit weights, for the scalar kernels (where no conversion instruction
// can be assumed) and for the tests.
#pragma once
#include <cstdint>
#include <cstring>

namespace moe::cpu {

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // infinity or NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);  // normal: rebias 15 -> 127
  } else if (mantissa == 0) {
    bits = sign;  // zero
  } else {        // subnormal: normalise
    exponent = 113;
    while ((mantissa & 0x400u) == 0) mantissa <<= 1, --exponent;
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest, ties to even; magnitudes past the largest float16 become infinities (callers refuse them
// first: see kFloat16Max).
inline uint16_t float_to_half(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0);  // inf, NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;                                     // rounds past 65504: infinity
  if (abs < 0x38800000u) {               // below the smallest normal float16: subnormal or zero
    if (abs < 0x33000000u) return sign;  // under half the smallest subnormal: zero
    const uint32_t exponent = abs >> 23, mantissa = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14 .. 24
    const uint32_t rounded = mantissa >> shift, rest = mantissa & ((1u << shift) - 1), half = 1u << (shift - 1);
    return sign | static_cast<uint16_t>(rounded + (rest > half || (rest == half && (rounded & 1u))));
  }
  const uint32_t rebased = abs - (112u << 23);  // rebias 127 -> 15
  const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return sign | static_cast<uint16_t>(rounded >> 13);
}

// bfloat16 -> float32, exactly (a bfloat16 is the top half of a float32's bits).
inline float bfloat16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// float32 -> bfloat16 (the top half of a float32's bits), round to nearest, ties to even, as PyTorch's and oneDNN's
// conversions do. Callers pass finite values (weights are checked when they cross the seam), so no NaN needs
// keeping quiet.
inline uint16_t float_to_bfloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace moe::cpu
