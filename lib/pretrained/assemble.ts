/**
 * One projection of all experts ([experts, rows, cols]) built expert by expert from what the checkpoint holds, in
 * the form the layer will pack, so the whole never exists in a wider format than needed:
 * - int8 / int4: each expert's float32 weights quantized as they arrive (codes and scales);
 * - bfloat16: 16-bit bits (checkpoint bf16 as is, anything else rounded to nearest even, as packing would);
 * - float16 / float32: the checkpoint's 16-bit bits when every expert has the same format (widened exactly when
 *   packed), else float32.
 */
import { WeightDtype } from '../expert-weights';
import { native } from '../native';
import { GroupSize, QuantizedTensor } from '../quant';
import { Tensor, halfToFloat } from '../tensor';
import { MatrixData } from './sources';

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

  put(expert: number, m: MatrixData): void {
    const n = this.rows * this.cols;
    const at = expert * n;
    if (this.dtype === 'int8' || this.dtype === 'int4') {
      const q = native().quantize(asFloat32(m), this.rows, this.cols, this.dtype, this.group === this.cols ? 0 : this.group);
      const codeCount = this.dtype === 'int8' ? n : n / 2;
      const scaleCount = (this.rows * this.cols) / this.group;
      this.codes ??= this.dtype === 'int8' ? new Int8Array(this.count * codeCount) : new Uint8Array(this.count * codeCount);
      this.scales ??= new Uint16Array(this.count * scaleCount);
      this.codes.set(q.codes as Uint8Array & Int8Array, expert * codeCount);
      this.scales.set(q.scales, expert * scaleCount);
      return;
    }
    if (this.dtype === 'bfloat16') {
      this.bits ??= new Uint16Array(this.count * n);
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
      this.bits ??= new Uint16Array(this.count * n);
      this.format = m.format;
      this.bits.set(m.bits, at);
      return;
    }
    if (!this.values) {
      this.values = new Float32Array(this.count * n);
      if (this.bits) this.values.set(asFloat32({ kind: 'half', format: this.format!, bits: this.bits }));
      this.bits = undefined;
    }
    this.values.set(asFloat32(m), at);
  }

  /** The finished projection, a Tensor or a QuantizedTensor of shape [count, rows, cols]. */
  result(): Tensor | QuantizedTensor {
    const shape = [this.count, this.rows, this.cols];
    if (this.codes && this.scales)
      return new QuantizedTensor({
        dtype: this.dtype as 'int8' | 'int4',
        shape,
        groupSize: this.group,
        codes: this.codes,
        scales: this.scales,
      });
    if (this.values) return Tensor.from(this.values, shape);
    return Tensor.from(this.bits!, shape, this.format!);
  }
}

/** float32 values of a matrix (16-bit formats widened exactly). */
export function asFloat32(m: MatrixData): Float32Array {
  if (m.kind === 'float32') return m.data;
  const out = new Float32Array(m.bits.length);
  if (m.format === 'float16') for (let i = 0; i < out.length; i++) out[i] = halfToFloat(m.bits[i]);
  else {
    const u = new Uint32Array(out.buffer);
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
