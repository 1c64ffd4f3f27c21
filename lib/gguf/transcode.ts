/**
 * Block types rewritten, without loss, as a type the library computes in: the same weights bit for bit as ggml's
 * `dequantize_row_*` gives them, in fewer bytes than float32.
 *
 *   Q3_K -> Q6_K  Both are d (sc q) over sixteen sub-blocks of 16 with a float16 d: Q3_K's 6-bit scales less 32
 *                 (-32..31) are int8 scales, its codes (-4..3) six-bit codes; ggml rounds d * sc first and then
 *                 times q in both, so each weight is the same float32. 210 bytes a block against 110: the price of
 *                 running Q3_K files (common for the largest MoE models) with the q6_k kernels, still 4.7x smaller
 *                 than float32.
 *   Q5_0 -> Q8_0  (q - 16) d with q 0..31 is an int8 code times the same d.
 */

import { q3kFactors } from './dequantize';

/** Q3_K blocks (110 bytes: hmask[32], qs[64], scales[12], d) as Q6_K blocks (ql[128], qh[64], scales[16], d). */
export function q3kToQ6k(src: Uint8Array): Uint8Array {
  const blocks = src.length / 110;
  const out = new Uint8Array(blocks * 210);
  const q = new Int8Array(256),
    scales = new Int8Array(16);
  for (let b = 0; b < blocks; b++) {
    const at = b * 110,
      to = b * 210;
    q3kFactors(src, at, scales, q);
    for (let j = 0; j < 16; j++) out[to + 192 + j] = scales[j] & 0xff;
    out[to + 208] = src[at + 108];
    out[to + 209] = src[at + 109];
    // Q6_K's layout (ggml's dequantize_row_q6_K): per half n and l < 32, values l, l + 32, l + 64, l + 96 share
    // ql[64 n + l] / ql[64 n + l + 32] (low / high nibbles) and the bit pairs of qh[32 n + l].
    for (let n = 0; n < 2; n++)
      for (let l = 0; l < 32; l++) {
        const v = (k: number) => q[128 * n + l + 32 * k] + 32;
        out[to + 64 * n + l] = (v(0) & 0xf) | ((v(2) & 0xf) << 4);
        out[to + 64 * n + l + 32] = (v(1) & 0xf) | ((v(3) & 0xf) << 4);
        out[to + 128 + 32 * n + l] = (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
      }
  }
  return out;
}

/** Q5_0 blocks (22 bytes: d, qh[4], qs[16]) as Q8_0 blocks (d, 32 int8 codes). */
export function q50ToQ80(src: Uint8Array): Uint8Array {
  const blocks = src.length / 22;
  const out = new Uint8Array(blocks * 34);
  for (let b = 0; b < blocks; b++) {
    const at = b * 22,
      to = b * 34;
    out[to] = src[at];
    out[to + 1] = src[at + 1];
    const qh = src[at + 2] | (src[at + 3] << 8) | (src[at + 4] << 16) | (src[at + 5] << 24);
    // value j < 16: low nibble of qs[j] and bit j of qh; value j + 16: high nibble of qs[j] and bit j + 16
    for (let j = 0; j < 16; j++) {
      out[to + 2 + j] = (((src[at + 6 + j] & 0xf) | (((qh >>> j) & 1) << 4)) - 16) & 0xff;
      out[to + 18 + j] = (((src[at + 6 + j] >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16) & 0xff;
    }
  }
  return out;
}
