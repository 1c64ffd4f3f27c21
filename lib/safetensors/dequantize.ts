/**
 * Checkpoint formats decoded on load, into float32 (every value they encode is exact in float32):
 * - FP8 E4M3 ("e4m3fn": 1 sign, 4 exponent bits with bias 7, 3 mantissa bits, no infinities, S.1111.111 = NaN) and
 *   E5M2 (IEEE-like, bias 15), the OCP 8-bit formats;
 * - DeepSeek-V3's block-scaled FP8 weights: w[i, j] = fp8[i, j] * weight_scale_inv[i / 128, j / 128] (the scale's
 *   name says inverse, but it multiplies: DeepSeek-V3 inference/kernel.py weight_dequant);
 * - MXFP4 (OCP Microscaling, as gpt-oss ships its experts): blocks of 32 FP4 E2M1 values, two per byte, low nibble
 *   first, with one E8M0 scale byte per block, w = fp4 * 2^(scale - 127) (transformers integrations/mxfp4.py).
 */
import { rangeError } from '../errors';
import { Tensor } from '../tensor';
import { asTensor, expectInteger } from '../validate';

function e4m3(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exp = (bits >> 3) & 0xf;
  const man = bits & 0x7;
  if (exp === 0xf && man === 0x7) return NaN;
  return sign * (exp === 0 ? (man / 8) * 2 ** -6 : (1 + man / 8) * 2 ** (exp - 7));
}

function e5m2(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exp = (bits >> 2) & 0x1f;
  const man = bits & 0x3;
  if (exp === 0x1f) return man === 0 ? sign * Infinity : NaN;
  return sign * (exp === 0 ? (man / 4) * 2 ** -14 : (1 + man / 4) * 2 ** (exp - 15));
}

const TABLES = {
  F8_E4M3: Float32Array.from({ length: 256 }, (_, b) => e4m3(b)),
  F8_E5M2: Float32Array.from({ length: 256 }, (_, b) => e5m2(b)),
};

/** FP8 codes (a 'uint8' Tensor as the reader returns them) as float32 values of the same shape. */
export function fp8ToFloat32(codes: Tensor, format: 'F8_E4M3' | 'F8_E5M2' = 'F8_E4M3'): Tensor<'float32'> {
  codes = asTensor(codes, 'codes'); // (a plain { dtype, shape, data } too)
  if (codes.dtype !== 'uint8') throw rangeError("FP8 codes as a 'uint8' Tensor", `'${codes.dtype}'`);
  const table = Object.prototype.hasOwnProperty.call(TABLES, format) ? TABLES[format] : undefined;
  if (!table) throw rangeError("format 'F8_E4M3' or 'F8_E5M2'", String(format));
  const src = codes.data as Uint8Array;
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return Tensor.from(out, codes.shape);
}

/**
 * Block-scaled FP8 weights [rows, cols] with scales [ceil(rows / block), ceil(cols / block)] (DeepSeek-V3's
 * weight_scale_inv, block 128) as float32. `where` names the tensor in errors.
 */
export function dequantizeBlockFp8(codes: Tensor, scaleInv: Tensor, block = 128, where = 'weight'): Tensor<'float32'> {
  codes = asTensor(codes, 'codes');
  scaleInv = asTensor(scaleInv, 'scaleInv');
  expectInteger(block, 'block', 1, 2 ** 20);
  if (codes.shape.length !== 2) throw rangeError(`${where} to be a matrix [rows, cols]`, `shape [${codes.shape.join(', ')}]`);
  const [rows, cols] = codes.shape;
  const sr = Math.ceil(rows / block);
  const sc = Math.ceil(cols / block);
  if (scaleInv.shape.length !== 2 || scaleInv.shape[0] !== sr || scaleInv.shape[1] !== sc)
    throw rangeError(
      `${where}_scale_inv to have shape [${sr}, ${sc}] (one scale per ${block} x ${block} block of [${rows}, ${cols}])`,
      `[${scaleInv.shape.join(', ')}]`,
    );
  const scales = scaleInv.toFloat32().data;
  const values = fp8ToFloat32(codes).data;
  for (let i = 0; i < rows; i++) {
    const srow = Math.floor(i / block) * sc;
    for (let j = 0; j < cols; j++) values[i * cols + j] *= scales[srow + Math.floor(j / block)];
  }
  return Tensor.from(values, [rows, cols]);
}

const FP4 = Float32Array.from([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6]);

/**
 * MXFP4 weights as float32: blocks [..., rows, nb, 16] uint8 and scales [..., rows, nb] uint8 give [..., rows,
 * nb * 32]. (gpt-oss's `*_blocks` / `*_scales` are [experts, out, in / 32, 16] and [experts, out, in / 32]: the
 * result is in the [out, in] layout of nn.Linear.)
 */
export function dequantizeMxfp4(blocks: Tensor, scales: Tensor, where = 'weight'): Tensor<'float32'> {
  blocks = asTensor(blocks, 'blocks');
  scales = asTensor(scales, 'scales');
  const b = blocks.shape;
  const s = scales.shape;
  if (blocks.dtype !== 'uint8' || scales.dtype !== 'uint8')
    throw rangeError(`${where}_blocks and ${where}_scales to be U8`, `'${blocks.dtype}' and '${scales.dtype}'`);
  if (b.length < 2 || b[b.length - 1] !== 16 || s.length !== b.length - 1 || s.some((d, i) => d !== b[i]))
    throw rangeError(
      `${where}_blocks [..., n, 16] and ${where}_scales [..., n] (MXFP4: 32 values per block)`,
      `[${b.join(', ')}] and [${s.join(', ')}]`,
    );
  const codes = blocks.data as Uint8Array;
  const exps = scales.data as Uint8Array;
  const out = new Float32Array(codes.length * 2);
  for (let blk = 0; blk < exps.length; blk++) {
    const scale = 2 ** (exps[blk] - 127);
    for (let j = 0; j < 16; j++) {
      const byte = codes[blk * 16 + j];
      out[blk * 32 + 2 * j] = FP4[byte & 0xf] * scale;
      out[blk * 32 + 2 * j + 1] = FP4[byte >> 4] * scale;
    }
  }
  return Tensor.from(out, [...s.slice(0, -1), s[s.length - 1] * 32]);
}
