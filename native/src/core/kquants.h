// llama.cpp's K-quant blocks (ggml-common.h), the weight dtypes q4_k, q5_k and q6_k: 256 weights per super-block,
// split into sub-blocks that each have a 6-bit (Q4_K, Q5_K: scale and min) or 8-bit (Q6_K: scale) factor of the
// super-block's float16 d (and dmin):
//   Q4_K (144 bytes): d, dmin, 12 bytes of packed 6-bit scales and mins, 128 bytes of nibbles. w = d1 u - m1, u 0..15
//   Q5_K (176 bytes): d, dmin, the same scales, 32 bytes of fifth bits, 128 of nibbles.         w = d1 u - m1, u 0..31
//   Q6_K (210 bytes): 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales, d.         w = (d sc) q, q
//   -32..31
// with d1 = d * sc and m1 = dmin * m rounded to float32 once, as ggml computes them: decode_block gives exactly
// those factors and codes, so a layer computes with the weights ggml's dequantize_row_* gives.
#pragma once
#include <cstdint>

#include "moe/moe.h"

namespace moe::kquant {

constexpr int64_t kSuperBlock = 256;  // QK_K

inline bool is_k(WeightDtype dtype) {
  return dtype == WeightDtype::q4_k || dtype == WeightDtype::q5_k || dtype == WeightDtype::q6_k;
}
// Bytes of one super-block.
int64_t block_bytes(WeightDtype dtype);
// Weights per sub-block (one scale and min each): 32, or 16 for Q6_K.
int64_t sub_block(WeightDtype dtype);

// One super-block as factors and codes: w[i] = scale[i / sub] * code[i] - min[i / sub], each product and difference
// rounded to float32 on its own (min is 0 for Q6_K, whose codes are signed).
void decode_block(WeightDtype dtype, const uint8_t* block, float* scale, float* min, int* code);

// One super-block's stored factors: d and dmin (float16 bits; dmin 0 for Q6_K), the sub-blocks' 6-bit scales and
// mins (Q6_K: its int8 scales as bytes), and the codes as decode_block gives them. decode_block's factors are
// d * scale and dmin * min of these.
void block_factors(WeightDtype dtype, const uint8_t* block, uint16_t* d, uint16_t* dmin, uint8_t* scale, uint8_t* min,
                   int* code);

// ggml's reference quantizers (quantize_row_q{4,5,6}_K_ref): the same blocks, bit for bit, so a file written here
// and one written by llama.cpp's tools are interchangeable. k is a multiple of 256.
void quantize_row(WeightDtype dtype, const float* x, int64_t k, uint8_t* blocks);
// ggml's dequantize_row_*: the weights the blocks stand for.
void dequantize_row(WeightDtype dtype, const uint8_t* blocks, int64_t k, float* out);

}  // namespace moe::kquant
