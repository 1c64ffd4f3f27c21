/**
 * One projection of all experts ([experts, rows, cols]) built expert by expert from what the checkpoint holds, in
 * the form the layer will pack, so the whole never exists in a wider format than needed:
 * - int8 / int4: each expert's float32 weights quantized as they arrive (codes and scales);
 * - bfloat16: 16-bit bits (checkpoint bf16 as is, anything else rounded to nearest even, as packing would);
 * - float16 / float32: the checkpoint's 16-bit bits when every expert has the same format (widened exactly when
 *   packed), else float32.
 */
import { QuantDtype, WeightDtype, codeBytes, isKQuant, isQuantDtype, quantFacts, scalesPerRow as scalesPerRowOf } from '../weight-dtypes';
import { native } from '../native';
import { GroupSize, QuantizedTensor } from '../quant';
import { Tensor, halfToFloat } from '../tensor';
import { dequantizeBlocks } from '../gguf/dequantize';
import { ggmlType } from '../gguf/types';
import { MatrixData } from './sources';

/**
 * An array of addon memory in huge pages, not initialised: every element of a projection is written (by put, for
 * each expert) before the layer reads it, and first-touching a V8 buffer cost 3.6 s per GiB here (4 KiB pages).
 */
function large<T extends Int8Array | Uint8Array | Uint16Array | Float32Array>(
  kind: { new (buffer: ArrayBuffer, offset: number, length: number): T; BYTES_PER_ELEMENT: number },
  n: number,
): T {
  return new kind(native().largeBuffer({ bytes: Math.max(1, n * kind.BYTES_PER_ELEMENT) }), 0, n);
}

/** Elements per slice of put (a few MB): each slice is well under a millisecond... to a few ms of work. */
const SLICE_ELEMENTS = 1 << 21;

/** GGUF blocks kept as they are: values and bytes per block, and the weight dtype that holds them unchanged. */
const BLOCKS = {
  Q8_0: { values: 32, bytes: 34, dtype: 'int8' },
  Q4_0: { values: 32, bytes: 18, dtype: 'int4' },
  Q4_K: { values: 256, bytes: 144, dtype: 'q4_k' },
  Q5_K: { values: 256, bytes: 176, dtype: 'q5_k' },
  Q6_K: { values: 256, bytes: 210, dtype: 'q6_k' },
} as const;

/** Elements [begin, end) of a matrix's data (whole blocks for GGUF blocks: rows are whole blocks). */
function sliceRows(m: MatrixData, begin: number, end: number): MatrixData {
  if (m.kind === 'float32') return { kind: 'float32', data: m.data.subarray(begin, end) };
  if (m.kind === 'half') return { kind: 'half', format: m.format, bits: m.bits.subarray(begin, end) };
  const b = BLOCKS[m.type];
  return { kind: 'blocks', type: m.type, data: m.data.subarray((begin / b.values) * b.bytes, (end / b.values) * b.bytes) };
}

export class Projection {
  private bits: Uint16Array | undefined;
  private format: 'bfloat16' | 'float16' | undefined;
  private values: Float32Array | undefined;
  private codes: Int8Array | Uint8Array | undefined;
  private scales: Uint16Array | undefined;
  private readonly group: number;

  constructor(
    readonly count: number,
    readonly rows: number,
    readonly cols: number,
    private readonly dtype: WeightDtype,
    groupSize: GroupSize,
  ) {
    this.group = groupSize === 'row' ? cols : groupSize;
  }

  /**
   * Adds expert `expert`'s matrix. Works through it a slice of rows at a time and yields to the event loop between
   * slices: converting, quantizing or merely first-touching a Mixtral expert's 117 MB takes long enough to stall a
   * server (measured: up to 2 s per expert for int4 before slicing).
   */
  async put(expert: number, m: MatrixData): Promise<void> {
    const { rows, cols } = this;
    const step = Math.max(1, Math.floor(SLICE_ELEMENTS / cols));
    for (let r0 = 0; r0 < rows; r0 += step) {
      const r1 = Math.min(rows, r0 + step);
      this.putRows(expert, r0, r1, sliceRows(m, r0 * cols, r1 * cols));
      if (r1 < rows) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Rows [r0, r1) of an expert's matrix. */
  private putRows(expert: number, r0: number, r1: number, m: MatrixData): void {
    const n = (r1 - r0) * this.cols;
    const total = this.rows * this.cols;
    const at = expert * total + r0 * this.cols;
    if (isQuantDtype(this.dtype)) {
      const facts = quantFacts(this.dtype);
      const perRow = codeBytes(this.dtype, this.cols);
      const scalesPerRow = scalesPerRowOf(this.dtype, this.cols, this.group);
      const codeCount = this.count * this.rows * perRow;
      this.codes ??= facts.codes === 'Int8Array' ? large(Int8Array, codeCount) : large(Uint8Array, codeCount);
      this.scales ??= large(Uint16Array, Math.max(1, this.count * this.rows * scalesPerRow)).subarray(
        0,
        this.count * this.rows * scalesPerRow,
      );
      const codes = new Uint8Array(this.codes.buffer, this.codes.byteOffset, this.codes.byteLength);
      // GGUF K-quant blocks onto the K-quant dtype of their type: the blocks themselves.
      if (m.kind === 'blocks' && isKQuant(this.dtype) && BLOCKS[m.type].dtype === this.dtype) {
        codes.set(m.data, (expert * this.rows + r0) * perRow);
        return;
      }
      // GGUF Q8_0 / Q4_0 blocks onto int8 / int4 groups of 32: the same codes and scales, copied apart.
      if (m.kind === 'blocks' && this.group === 32 && BLOCKS[m.type].dtype === this.dtype) {
        const per = BLOCKS[m.type].bytes - 2;
        const first = (expert * this.rows + r0) * scalesPerRow;
        for (let i = 0; i < n / 32; i++) {
          const at = i * (per + 2);
          this.scales[first + i] = m.data[at] | (m.data[at + 1] << 8);
          codes.set(m.data.subarray(at + 2, at + 2 + per), (first + i) * per);
        }
        return;
      }
      // Rows are quantized independently: a slice of rows gives the same codes as the whole matrix.
      const q = native().quantize({
        tensor: asFloat32(m),
        rows: r1 - r0,
        k: this.cols,
        dtype: this.dtype,
        groupSize: this.group === this.cols || isKQuant(this.dtype) ? 0 : this.group,
      });
      this.codes.set(q.codes as Uint8Array & Int8Array, (expert * this.rows + r0) * perRow);
      this.scales.set(q.scales, (expert * this.rows + r0) * scalesPerRow);
      return;
    }
    if (this.dtype === 'bfloat16') {
      this.bits ??= large(Uint16Array, this.count * total);
      this.format = 'bfloat16';
      if (m.kind === 'half' && m.format === 'bfloat16') this.bits.set(m.bits, at);
      else {
        const f = asFloat32(m);
        for (let i = 0; i < n; i++) this.bits[at + i] = toBfloat16(f[i]);
      }
      return;
    }
    // float32 / float16: keep 16-bit bits while every expert comes in the same 16-bit format.
    if (m.kind === 'half' && !this.values && (this.format === undefined || this.format === m.format)) {
      this.bits ??= large(Uint16Array, this.count * total);
      this.format = m.format;
      this.bits.set(m.bits, at);
      return;
    }
    if (!this.values) {
      this.values = large(Float32Array, this.count * total);
      if (this.bits) this.values.set(asFloat32({ kind: 'half', format: this.format!, bits: this.bits }, false));
      this.bits = undefined;
    }
    this.values.set(asFloat32(m), at);
  }

  /** The finished projection, a Tensor or a QuantizedTensor of shape [count, rows, cols]. */
  result(): Tensor | QuantizedTensor {
    const shape = [this.count, this.rows, this.cols];
    if (this.codes && this.scales)
      return new QuantizedTensor({
        dtype: this.dtype as QuantDtype,
        shape,
        groupSize: this.group,
        codes: this.codes,
        scales: this.scales,
      });
    if (this.values) return Tensor.from(this.values, shape);
    return Tensor.from(this.bits!, shape, this.format!);
  }
}

let widened = new Float32Array(0); // grow-only: see Reader's scratch buffer

/** float32 values of a matrix (16-bit formats and GGUF blocks widened exactly); `reuse`: into a scratch array valid until the next call. */
export function asFloat32(m: MatrixData, reuse = true): Float32Array {
  if (m.kind === 'float32') return m.data;
  const n = m.kind === 'half' ? m.bits.length : (m.data.length / BLOCKS[m.type].bytes) * BLOCKS[m.type].values;
  if (reuse && widened.length < n) widened = new Float32Array(n);
  const out = reuse ? widened.subarray(0, n) : new Float32Array(n);
  if (m.kind === 'blocks') return dequantizeBlocks(ggmlType(m.type)!, m.data, n, `${m.type} blocks`, out);
  if (m.format === 'float16') for (let i = 0; i < out.length; i++) out[i] = halfToFloat(m.bits[i]);
  else {
    const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < out.length; i++) u[i] = m.bits[i] << 16;
  }
  return out;
}

const word = new Float32Array(1);
const wordBits = new Uint32Array(word.buffer);
/** float32 -> bfloat16 bits, round to nearest even (finite inputs). */
export function toBfloat16(x: number): number {
  word[0] = x;
  const u = wordBits[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
