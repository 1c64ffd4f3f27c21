/**
 * Block-quantized weights: int8 and int4 codes with one float16 scale per group of `groupSize` inputs (the last
 * dimension), the formulas of llama.cpp's Q8_0 and Q4_0 blocks, so that a GGUF block of 32 maps onto a group of
 * 32 without requantization:
 *   int8: w = q * d, q in [-128, 127]. quantize: d = max|w| / 127 (float32, stored as float16), q = round(w / d),
 *         ties away from zero.
 *   int4: w = (u - 8) * d, u in [0, 15]. quantize: d = m / -8 with m the w of largest magnitude (the first one),
 *         u = min(15, floor(w / d + 8.5)): m gets u = 0 and the other side keeps seven steps.
 * A group whose stored scale rounds to zero (max|w| below about 7.6e-6 for int8) gets zero weights.
 *
 * Layout of a QuantizedTensor of shape [..., rows, k] (every dimension but the last flattened into rows):
 *   codes: int8: an Int8Array of rows * k codes, row-major like the float tensor. int4: a Uint8Array of rows * k / 2
 *          bytes; per group of g inputs, byte j holds input j in its low nibble and input j + g/2 in its high one
 *          (GGUF's Q4_0 order).
 *   scales: a Uint16Array of rows * (k / g) float16 bit patterns, row-major.
 * `MoELayer` and `kernels.PackedExperts` take one wherever they take a float weight (w1, w3, w2), as it is.
 *
 * q4_k, q5_k, q6_k are llama.cpp's K-quants, stored as GGUF stores them: `codes` a Uint8Array of the rows' super-blocks
 * (k / 256 per row, 144, 176 or 210 bytes each, ggml's layout), `scales` empty (the blocks hold their own), groupSize
 * 256. quantize uses ggml's reference quantizers (quantize_row_q*_K_ref, the same blocks bit for bit) and dequantize
 * its dequantization; docs/gguf.md has the formulas.
 */
import { describe, rangeError, typeError } from './errors';
import { native } from './native';
import { Tensor } from './tensor';
import { typedArrayTag } from './typed-arrays';
import { K_QUANT_BLOCK, QUANT_DTYPES, QuantDtype, codeBytes, isKQuant, quantFacts, scalesPerRow } from './weight-dtypes';
import { MAX_DIM, asTensor, expectInteger, expectOneOf, expectOptions, float32Data } from './validate';

export { QUANT_DTYPES } from './weight-dtypes';
export type { QuantDtype } from './weight-dtypes';

/** Inputs per scale: a multiple of 8 that divides the last dimension, or 'row' (one scale per row). */
export type GroupSize = number | 'row';

const BRAND = Symbol.for('moe-kernels.QuantizedTensor');

export interface QuantizedTensorInit {
  dtype: QuantDtype;
  shape: readonly number[];
  /** Inputs per scale along the last dimension (that dimension itself for one scale per row). */
  groupSize: number;
  codes: Int8Array | Uint8Array;
  scales: Uint16Array;
}

/** Codes plus float16 scales; see the layout above. Built by quant.quantize, or from codes and scales you have. */
export class QuantizedTensor {
  readonly dtype: QuantDtype;
  readonly shape: readonly number[];
  readonly groupSize: number;
  readonly codes: Int8Array | Uint8Array;
  readonly scales: Uint16Array;
  /** @internal */
  readonly [BRAND] = true;

  /** Checks every field (types, lengths, finite scales); the arrays are kept, not copied. */
  constructor(init: QuantizedTensorInit) {
    const o = expectOptions(init, 'init') as Partial<QuantizedTensorInit>;
    const dtype = expectOneOf(o.dtype, 'init.dtype', QUANT_DTYPES);
    if (!Array.isArray(o.shape) || o.shape.length < 1)
      throw typeError('init.shape to be an array of at least one dimension', describe(o.shape));
    const shape = o.shape.map((d, i) => expectInteger(d, `init.shape[${i}]`, 1, MAX_DIM));
    const k = shape[shape.length - 1];
    const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
    const g = expectInteger(o.groupSize, 'init.groupSize', 1, k);
    checkGroup(dtype, g === k && !isKQuant(dtype) ? 'row' : g, k, 'init.groupSize');
    const { codes: codeTag } = quantFacts(dtype);
    if (typedArrayTag(o.codes) !== codeTag) throw typeError(`init.codes to be a ${codeTag} (${dtype})`, describe(o.codes));
    const codes = o.codes as Int8Array | Uint8Array;
    const codeCount = rows * codeBytes(dtype, k);
    if (codes.length !== codeCount) throw rangeError(`init.codes to have ${codeCount} elements`, `${codes.length}`);
    if (typedArrayTag(o.scales) !== 'Uint16Array') throw typeError('init.scales to be a Uint16Array (float16 bits)', describe(o.scales));
    const scales = o.scales as Uint16Array;
    const scaleCount = rows * scalesPerRow(dtype, k, g);
    if (scales.length !== scaleCount)
      throw rangeError(
        `init.scales to have ${scaleCount} elements (${isKQuant(dtype) ? 'none: K-quant blocks hold their scales' : '[rows, k / groupSize]'})`,
        `${scales.length}`,
      );
    const bad = scales.findIndex((bits) => (bits & 0x7c00) === 0x7c00);
    if (bad >= 0) throw rangeError('init.scales to be finite float16 values', `bits 0x${scales[bad].toString(16)} at [${bad}]`);
    this.dtype = dtype;
    this.shape = Object.freeze(shape);
    this.groupSize = g;
    this.codes = codes;
    this.scales = scales;
  }

  /** Bytes stored: codes plus scales. */
  get bytes(): number {
    return this.codes.byteLength + this.scales.byteLength;
  }
}

/** True for a QuantizedTensor (from any realm or copy of the package). */
export function isQuantized(value: unknown): value is QuantizedTensor {
  return typeof value === 'object' && value !== null && (value as { [BRAND]?: boolean })[BRAND] === true;
}

/** The group size a dtype takes when none is given: 32 (a GGUF Q8_0 / Q4_0 block), 256 for the K-quants. */
export function defaultGroup(dtype: QuantDtype): number {
  return isKQuant(dtype) ? K_QUANT_BLOCK : 32;
}

/** Checks a group size for rows of k inputs; returns it in inputs. */
export function checkGroup(dtype: QuantDtype, groupSize: GroupSize, k: number, name: string): number {
  if (isKQuant(dtype)) {
    // super-blocks of 256: the group size is theirs (32 or 16 inputs per scale inside a block)
    if (groupSize !== K_QUANT_BLOCK)
      throw rangeError(`${name} to be ${K_QUANT_BLOCK} for ${dtype} (llama.cpp's super-blocks), or left out`, describe(groupSize));
    if (k % K_QUANT_BLOCK !== 0) throw rangeError(`a row length that is a multiple of ${K_QUANT_BLOCK} for ${dtype} (${name})`, `${k}`);
    return K_QUANT_BLOCK;
  }
  if (groupSize === 'row') {
    const perByte = quantFacts(dtype).codesPerByte;
    if (k % perByte !== 0)
      throw rangeError(`a row length divisible by ${perByte} for ${name} 'row' with ${dtype} (${perByte} codes a byte)`, `${k}`);
    return k;
  }
  if (typeof groupSize !== 'number') throw typeError(`${name} to be a number or 'row'`, describe(groupSize));
  if (!Number.isInteger(groupSize) || groupSize < 8 || groupSize % 8 !== 0 || k % groupSize !== 0)
    throw rangeError(`${name} to be a multiple of 8 that divides ${k}, or 'row'`, `${groupSize}`);
  return groupSize;
}

export interface QuantizeOptions {
  dtype: QuantDtype;
  /** Inputs per scale (default 32: a GGUF block), or 'row'. */
  groupSize?: GroupSize;
}

/** Quantizes a float32 / float16 / bfloat16 tensor along its last dimension. The tensor is not modified. */
export function quantize(tensor: Tensor, options: QuantizeOptions): QuantizedTensor {
  const o = expectOptions(options) as Partial<QuantizeOptions>;
  const dtype = expectOneOf(o.dtype, 'options.dtype', QUANT_DTYPES);
  const t = asTensor(tensor, 'tensor');
  if (!['float32', 'float16', 'bfloat16'].includes(t.dtype))
    throw typeError("tensor.dtype to be 'float32', 'float16' or 'bfloat16'", `'${t.dtype}'`);
  if (t.shape.length < 1) throw rangeError('tensor to have at least one dimension', '0');
  const k = t.shape[t.shape.length - 1];
  const rows = t.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  if (k < 1 || rows < 1) throw rangeError('tensor to have no empty dimension', `[${t.shape.join(', ')}]`);
  const g = checkGroup(dtype, o.groupSize ?? defaultGroup(dtype), k, 'options.groupSize');
  const r = native().quantize({ tensor: float32Data(t), rows, k, dtype, groupSize: g === k || isKQuant(dtype) ? 0 : g });
  const codes = quantFacts(dtype).codes === 'Int8Array' ? new Int8Array(r.codes.buffer, r.codes.byteOffset, r.codes.length) : r.codes;
  return new QuantizedTensor({ dtype, shape: t.shape, groupSize: g, codes, scales: r.scales });
}

/** The float32 weights a QuantizedTensor stands for (code times scale, exactly): what the kernels compute with. */
export function dequantize(q: QuantizedTensor): Tensor<'float32'> {
  if (!isQuantized(q)) throw typeError('q to be a QuantizedTensor', describe(q));
  const k = q.shape[q.shape.length - 1];
  const rows = q.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const data = native().dequantize({
    q: { codes: q.codes, scales: q.scales },
    rows,
    k,
    dtype: q.dtype,
    groupSize: q.groupSize === k || isKQuant(q.dtype) ? 0 : q.groupSize,
  });
  return Tensor.from(data, q.shape);
}
