/**
 * ggml's block types widened to float32, value for value what ggml's `dequantize_row_*` (ggml-quants.c, built as
 * ggml-base is: no FMA contraction) gives: every float32 product and difference rounded as C rounds it (`Math.fround`
 * of the double result, which for one +, - or * of float32 operands is the correctly rounded float32). Checked
 * bitwise against ggml built from source (test/gguf-dequantize.test.ts) and against fixed vectors that came from it.
 * Block layouts (ggml-common.h; QK_K = 256, d / dmin float16 unless said):
 *   Q4_0  d, qs[16]                 (q - 8) d; byte j: value j (low nibble), j + 16 (high)
 *   Q4_1  d, m, qs[16]              q d + m
 *   Q5_0  d, qh[4], qs[16]          (q - 16) d; the fifth bit of value j is bit j of qh (32 bits, one a value)
 *   Q5_1  d, m, qh[4], qs[16]       q d + m
 *   Q8_0  d, qs[32] (int8)          q d
 *   Q2_K  scales[16], qs[64], d, dmin          dl q - ml, dl = d (sc & 15), ml = dmin (sc >> 4)
 *   Q3_K  hmask[32], qs[64], scales[12], d     dl (q - 4 unless the high bit is set), dl = d (sc - 32), 6-bit sc
 *   Q4_K  d, dmin, scales[12], qs[128]         d1 q - m1: eight sub-blocks of 32, 6-bit scales and mins
 *   Q5_K  d, dmin, scales[12], qh[32], qs[128] as Q4_K with a fifth bit per value from qh
 *   Q6_K  ql[128], qh[64], scales[16] (int8), d   d sc q, q = 6 bits - 32, sixteen sub-blocks of 16
 *   MXFP4 e (E8M0), qs[16]          fp4 code times 2^(e - 128) (gpt-oss's experts)
 */
import { rangeError } from '../errors';
import { halfToFloat } from '../tensor';
import { GgmlType } from './types';

const f = Math.fround;
const KVALUES_FP4 = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

type BlockDecoder = (b: Uint8Array, at: number, y: Float32Array, o: number) => void;

const half = (b: Uint8Array, at: number) => halfToFloat(b[at] | (b[at + 1] << 8));

/** The 6-bit scale and min j of a Q4_K / Q5_K block's 12 scale bytes at `s` (ggml's get_scale_min_k4). */
function scaleMin(b: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [b[s + j] & 63, b[s + j + 4] & 63];
  return [(b[s + j + 4] & 0xf) | ((b[s + j - 4] >> 6) << 4), (b[s + j + 4] >> 4) | ((b[s + j] >> 6) << 4)];
}

/**
 * Q4_K and Q5_K: four pairs of sub-blocks of 32, each pair's nibbles in one 32-byte run (low: the first sub-block,
 * high: the second); Q5_K adds each value's fifth bit from qh (bit 2j for pair j's first sub-block, 2j + 1 its second).
 */
function affineK(b: Uint8Array, at: number, y: Float32Array, o: number, five: boolean): void {
  const d = half(b, at),
    min = half(b, at + 2);
  const qh = at + 16;
  for (let j = 0; j < 4; j++) {
    const q = at + (five ? 48 : 16) + 32 * j;
    const u1 = five ? 1 << (2 * j) : 0,
      u2 = five ? 2 << (2 * j) : 0;
    const [s1, m1] = scaleMin(b, at + 4, 2 * j),
      [s2, m2] = scaleMin(b, at + 4, 2 * j + 1);
    const d1 = f(d * s1),
      n1 = f(min * m1),
      d2 = f(d * s2),
      n2 = f(min * m2);
    for (let l = 0; l < 32; l++) y[o++] = f(f(d1 * ((b[q + l] & 0xf) + (b[qh + l] & u1 ? 16 : 0))) - n1);
    for (let l = 0; l < 32; l++) y[o++] = f(f(d2 * ((b[q + l] >> 4) + (b[qh + l] & u2 ? 16 : 0))) - n2);
  }
}

/**
 * A Q3_K block's sixteen scales (6 bits less 32: -32..31) and 256 codes (-4..3) in value order, as ggml's
 * dequantize_row_q3_K walks them: halves of 128, four 2-bit planes of 32, two sub-blocks of 16; a code is its two
 * bits less 4 unless its bit in hmask is set. (Also transcode.ts's, which rewrites them as Q6_K.)
 */
export function q3kFactors(b: Uint8Array, at: number, scales: Int8Array, codes: Int8Array): void {
  const s = at + 96; // 12 bytes of 6-bit scales: low 4 bits in bytes 0-7, high 2 bits in bytes 8-11
  for (let j = 0; j < 16; j++) {
    const low = j < 8 ? b[s + j] & 0xf : b[s + j - 8] >> 4;
    const high = (b[s + 8 + (j % 4)] >> (2 * Math.floor(j / 4))) & 3;
    scales[j] = (low | (high << 4)) - 32;
  }
  let m = 1,
    i = 0;
  for (let n = 0; n < 2; n++)
    for (let shift = 0; shift < 8; shift += 2, m <<= 1)
      for (let l = 0; l < 32; l++, i++) codes[i] = ((b[at + 32 + 32 * n + l] >> shift) & 3) - (b[at + l] & m ? 0 : 4);
}
const Q3K_SCALES = new Int8Array(16);
const Q3K_CODES = new Int8Array(256);

const DECODERS: Record<string, BlockDecoder> = {
  Q4_0(b, at, y, o) {
    const d = half(b, at);
    for (let j = 0; j < 16; j++) {
      const q = b[at + 2 + j];
      y[o + j] = f(((q & 0xf) - 8) * d);
      y[o + j + 16] = f(((q >> 4) - 8) * d);
    }
  },
  Q4_1(b, at, y, o) {
    const d = half(b, at),
      m = half(b, at + 2);
    for (let j = 0; j < 16; j++) {
      const q = b[at + 4 + j];
      y[o + j] = f(f((q & 0xf) * d) + m);
      y[o + j + 16] = f(f((q >> 4) * d) + m);
    }
  },
  Q5_0(b, at, y, o) {
    const d = half(b, at);
    const qh = (b[at + 2] | (b[at + 3] << 8) | (b[at + 4] << 16) | (b[at + 5] << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const q = b[at + 6 + j];
      y[o + j] = f((((q & 0xf) | (((qh >>> j) << 4) & 0x10)) - 16) * d);
      y[o + j + 16] = f((((q >> 4) | ((qh >>> (j + 12)) & 0x10)) - 16) * d);
    }
  },
  Q5_1(b, at, y, o) {
    const d = half(b, at),
      m = half(b, at + 2);
    const qh = (b[at + 4] | (b[at + 5] << 8) | (b[at + 6] << 16) | (b[at + 7] << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const q = b[at + 8 + j];
      y[o + j] = f(f(((q & 0xf) | (((qh >>> j) << 4) & 0x10)) * d) + m);
      y[o + j + 16] = f(f(((q >> 4) | ((qh >>> (j + 12)) & 0x10)) * d) + m);
    }
  },
  Q8_0(b, at, y, o) {
    const d = half(b, at);
    for (let j = 0; j < 32; j++) y[o + j] = f(((b[at + 2 + j] << 24) >> 24) * d);
  },
  Q2_K(b, at, y, o) {
    const d = half(b, at + 80),
      min = half(b, at + 82);
    let is = 0;
    for (let n = 0; n < 2; n++) {
      const q = at + 16 + 32 * n;
      for (let shift = 0; shift < 8; shift += 2)
        for (let h = 0; h < 2; h++) {
          const sc = b[at + is++];
          const dl = f(d * (sc & 0xf)),
            ml = f(min * (sc >> 4));
          for (let l = 0; l < 16; l++) y[o++] = f(f(dl * ((b[q + 16 * h + l] >> shift) & 3)) - ml);
        }
    }
  },
  Q3_K(b, at, y, o) {
    const d = half(b, at + 108);
    q3kFactors(b, at, Q3K_SCALES, Q3K_CODES);
    for (let j = 0; j < 16; j++) {
      const dl = f(d * Q3K_SCALES[j]);
      for (let l = 0; l < 16; l++) y[o + 16 * j + l] = f(dl * Q3K_CODES[16 * j + l]);
    }
  },
  Q4_K: (b, at, y, o) => affineK(b, at, y, o, false),
  Q5_K: (b, at, y, o) => affineK(b, at, y, o, true),
  Q6_K(b, at, y, o) {
    const d = half(b, at + 208);
    for (let n = 0; n < 2; n++) {
      const ql = at + 64 * n,
        qh = at + 128 + 32 * n,
        sc = at + 192 + 8 * n,
        out = o + 128 * n;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = b[qh + l];
        const q1 = ((b[ql + l] & 0xf) | ((h & 3) << 4)) - 32;
        const q2 = ((b[ql + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((b[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((b[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
        const s = (k: number) => f(d * ((b[sc + is + k] << 24) >> 24));
        y[out + l] = f(s(0) * q1);
        y[out + l + 32] = f(s(2) * q2);
        y[out + l + 64] = f(s(4) * q3);
        y[out + l + 96] = f(s(6) * q4);
      }
    }
  },
  MXFP4(b, at, y, o) {
    const e = b[at];
    const d = 2 ** (e - 128); // ggml's E8M0 scale halved (its fp4 table is doubled); subnormal for e < 2
    for (let j = 0; j < 16; j++) {
      const q = b[at + 1 + j];
      y[o + j] = f(KVALUES_FP4[q & 0xf] * d);
      y[o + j + 16] = f(KVALUES_FP4[q >> 4] * d);
    }
  },
};

/** The block types this module widens (F32 / F16 / BF16 are read as they are). */
export const DEQUANTIZABLE: readonly string[] = Object.keys(DECODERS);

/**
 * `values` float32 values (whole blocks) from the blocks in `bytes` of a quantized type, into `into` (or a new
 * array). `what` names the tensor in the error of a type this module cannot widen.
 */
export function dequantizeBlocks(type: GgmlType, bytes: Uint8Array, values: number, what: string, into?: Float32Array): Float32Array {
  const decode = DECODERS[type.name];
  if (!decode) throw rangeError(`${what} to be of a type moe-kernels can widen (${DEQUANTIZABLE.join(', ')})`, type.name);
  const blocks = values / type.blockSize;
  if (!Number.isInteger(blocks) || bytes.length < blocks * type.typeSize)
    throw rangeError(`${blocks * type.typeSize} bytes of ${type.name} blocks for ${values} values of ${what}`, `${bytes.length}`);
  const y = into ?? new Float32Array(values);
  for (let i = 0; i < blocks; i++) decode(bytes, i * type.typeSize, y, i * type.blockSize);
  return y;
}

/**
 * A tensor's first `values` values as a new float32 array: F32 copied, F16 / BF16 widened exactly, block types as
 * ggml dequantizes them. `bytes` may be a view at any offset (the reader's reused scratch).
 */
export function toFloat32(type: GgmlType, bytes: Uint8Array, values: number, what: string): Float32Array {
  if (type.name === 'F32') return new Float32Array(bytes.slice(0, values * 4).buffer);
  if (type.name === 'F16' || type.name === 'BF16') {
    const bits = new Uint16Array(bytes.slice(0, values * 2).buffer);
    const out = new Float32Array(values);
    if (type.name === 'F16') for (let i = 0; i < values; i++) out[i] = halfToFloat(bits[i]);
    else new Uint32Array(out.buffer).forEach((_, i, u) => (u[i] = bits[i] << 16));
    return out;
  }
  return dequantizeBlocks(type, bytes, values, what);
}
