/**
 * gguf.save: a GGUF file (version 3, little-endian) from metadata and tensors, in the layout llama.cpp writes
 * (gguf.cpp): tensors in the given order, each at a multiple of `general.alignment` (32), padded with zeros. For
 * fixtures and tests, and so that a layer converted or trained here goes back to llama.cpp's tools.
 * Tensors: a float32 / float16 / bfloat16 Tensor (F32 / F16 / BF16), a QuantizedTensor with groups of 32 (int8 as
 * Q8_0, int4 as Q4_0: the same blocks, scale first) or of a K-quant (q4_k as Q4_K, ...: its blocks), or raw blocks `{ type: 'Q4_K', shape, data }` of any ggml type.
 * Shapes are row-major (outermost first), as everywhere in the library; the file stores ggml's reverse (ne).
 */
import { promises as fs } from 'fs';
import { describe, rangeError, typeError } from '../errors';
import { expectPath, fileError } from '../file-errors';
import { QuantizedTensor, isQuantized } from '../quant';
import { Tensor, isTensor } from '../tensor';
import { GGUF_VALUE_TYPES, GgufValue, GgufValueType } from './file';
import { ggmlType } from './types';

/** Raw blocks of a ggml type. */
export interface GgufBlocks {
  type: string;
  shape: readonly number[];
  data: Uint8Array;
}

/** A value with the GGUF type to store it as ('f32' for a float llama.cpp reads as float, 'u32' for counts, ...). */
export interface GgufTyped {
  type: Exclude<GgufValueType, 'array'> | `array:${Exclude<GgufValueType, 'array'>}`;
  value: GgufValue;
}

/**
 * Metadata values: a string, a boolean, a number (an integer in [0, 2^32) as u32, another integer as i32 / i64, any
 * other number as f32), a bigint (u64 / i64), an array of one of those, or a GgufTyped for a type of your choosing.
 */
export type GgufMetadataInput = string | boolean | number | bigint | readonly (string | boolean | number | bigint)[] | GgufTyped;

export interface GgufSaveInput {
  metadata?: Record<string, GgufMetadataInput>;
  tensors: Record<string, Tensor | QuantizedTensor | GgufBlocks>;
}

const ALIGNMENT = 32;

function inferType(v: unknown, what: string): Exclude<GgufValueType, 'array'> {
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'bigint') return v < 0n ? 'i64' : 'u64';
  if (typeof v === 'number' && Number.isFinite(v)) {
    if (!Number.isInteger(v)) return 'f32';
    if (v >= 0 && v < 2 ** 32) return 'u32';
    if (v >= -(2 ** 31) && v < 0) return 'i32';
    return 'i64';
  }
  throw typeError(`${what} to be a string, boolean, finite number, bigint or array of them`, describe(v));
}

class Writer {
  readonly parts: Uint8Array[] = [];
  length = 0;
  bytes(b: Uint8Array) {
    this.parts.push(b);
    this.length += b.length;
  }
  private num(n: number, fill: (v: DataView) => void) {
    const b = new Uint8Array(n);
    fill(new DataView(b.buffer));
    this.bytes(b);
  }
  u32(v: number) {
    this.num(4, (d) => d.setUint32(0, v, true));
  }
  u64(v: number | bigint) {
    this.num(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }
  string(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.bytes(b);
  }
  scalar(type: Exclude<GgufValueType, 'array'>, v: GgufValue, what: string) {
    const int = (lo: number, hi: number) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi)
        throw rangeError(`${what} to be an integer in [${lo}, ${hi}] (${type})`, describe(v));
      return v;
    };
    switch (type) {
      case 'u8':
        return this.num(1, (d) => d.setUint8(0, int(0, 255)));
      case 'i8':
        return this.num(1, (d) => d.setInt8(0, int(-128, 127)));
      case 'u16':
        return this.num(2, (d) => d.setUint16(0, int(0, 65535), true));
      case 'i16':
        return this.num(2, (d) => d.setInt16(0, int(-32768, 32767), true));
      case 'u32':
        return this.num(4, (d) => d.setUint32(0, int(0, 2 ** 32 - 1), true));
      case 'i32':
        return this.num(4, (d) => d.setInt32(0, int(-(2 ** 31), 2 ** 31 - 1), true));
      case 'u64':
      case 'i64': {
        if (typeof v !== 'bigint' && (typeof v !== 'number' || !Number.isSafeInteger(v)))
          throw typeError(`${what} to be an integer or bigint (${type})`, describe(v));
        const big = BigInt(v);
        return this.num(8, (d) => (type === 'u64' ? d.setBigUint64(0, big, true) : d.setBigInt64(0, big, true)));
      }
      case 'f32':
      case 'f64':
        if (typeof v !== 'number') throw typeError(`${what} to be a number (${type})`, describe(v));
        return this.num(type === 'f32' ? 4 : 8, (d) => (type === 'f32' ? d.setFloat32(0, v, true) : d.setFloat64(0, v, true)));
      case 'bool':
        if (typeof v !== 'boolean') throw typeError(`${what} to be a boolean`, describe(v));
        return this.num(1, (d) => d.setUint8(0, v ? 1 : 0));
      case 'string':
        if (typeof v !== 'string') throw typeError(`${what} to be a string`, describe(v));
        return this.string(v);
    }
  }
  value(input: GgufMetadataInput, what: string) {
    const typed = typeof input === 'object' && input !== null && !Array.isArray(input) ? (input as GgufTyped) : undefined;
    let type: string = typed ? typed.type : Array.isArray(input) ? 'array' : inferType(input, what);
    const value = typed ? typed.value : (input as GgufValue);
    let item: Exclude<GgufValueType, 'array'> | undefined;
    if (type.startsWith('array:')) {
      item = type.slice(6) as typeof item;
      type = 'array';
    }
    if (!(GGUF_VALUE_TYPES as readonly string[]).includes(type) || (item && !(GGUF_VALUE_TYPES as readonly string[]).includes(item)))
      throw rangeError(`${what}'s type to be one of ${GGUF_VALUE_TYPES.join(', ')} (or array:<type>)`, `'${type}'`);
    this.u32(GGUF_VALUE_TYPES.indexOf(type as GgufValueType));
    if (type !== 'array') return this.scalar(type as Exclude<GgufValueType, 'array'>, value, what);
    if (!Array.isArray(value)) throw typeError(`${what} to be an array`, describe(value));
    // An untyped array takes its items' type: f32 if any is fractional, else the widest integer type they need.
    item ??= value.length === 0 ? 'u32' : value.map((v, i) => inferType(v, `${what}[${i}]`)).reduce((a, b) => widest(a, b));
    this.u32(GGUF_VALUE_TYPES.indexOf(item));
    this.u64(value.length);
    value.forEach((v, i) => this.scalar(item!, v, `${what}[${i}]`));
  }
  pad(to: number) {
    const n = (to - (this.length % to)) % to;
    if (n) this.bytes(new Uint8Array(n));
  }
}

function widest(a: Exclude<GgufValueType, 'array'>, b: Exclude<GgufValueType, 'array'>): Exclude<GgufValueType, 'array'> {
  if (a === b) return a;
  if (a === 'f32' || b === 'f32') return 'f32';
  const order = ['u32', 'i32', 'u64', 'i64'];
  if (order.includes(a) && order.includes(b))
    return (a === 'u32' && b === 'i32') || (a === 'i32' && b === 'u32') ? 'i64' : order.indexOf(a) > order.indexOf(b) ? a : b;
  throw typeError(`array items of one type`, `${a} and ${b}`);
}

/** A tensor as ggml type name, row-major shape and bytes. */
function encode(name: string, t: Tensor | QuantizedTensor | GgufBlocks): { type: string; shape: readonly number[]; data: Uint8Array } {
  if (isTensor(t)) {
    const type = ({ float32: 'F32', float16: 'F16', bfloat16: 'BF16' } as Record<string, string>)[t.dtype];
    if (!type) throw typeError(`tensor '${name}' to be float32, float16 or bfloat16 (or a QuantizedTensor, or raw blocks)`, `'${t.dtype}'`);
    const d = t.data as Float32Array | Uint16Array;
    return { type, shape: t.shape, data: new Uint8Array(d.buffer, d.byteOffset, d.byteLength) };
  }
  if (isQuantized(t)) {
    // K-quants: the codes are the blocks
    if (t.dtype === 'q4_k' || t.dtype === 'q5_k' || t.dtype === 'q6_k')
      return { type: t.dtype.toUpperCase(), shape: t.shape, data: new Uint8Array(t.codes.buffer, t.codes.byteOffset, t.codes.byteLength) };
    if (t.groupSize !== 32) throw rangeError(`QuantizedTensor '${name}' to have groups of 32 (a GGUF Q8_0 / Q4_0 block)`, `${t.groupSize}`);
    const int8 = t.dtype === 'int8';
    const codeBytes = int8 ? 32 : 16;
    const blocks = t.scales.length;
    const out = new Uint8Array(blocks * (2 + codeBytes));
    const codes = new Uint8Array(t.codes.buffer, t.codes.byteOffset, t.codes.byteLength);
    for (let i = 0; i < blocks; i++) {
      const at = i * (2 + codeBytes);
      out[at] = t.scales[i] & 0xff;
      out[at + 1] = t.scales[i] >> 8;
      out.set(codes.subarray(i * codeBytes, (i + 1) * codeBytes), at + 2);
    }
    return { type: int8 ? 'Q8_0' : 'Q4_0', shape: t.shape, data: out };
  }
  if (typeof t !== 'object' || t === null)
    throw typeError(`tensor '${name}' to be a Tensor, QuantizedTensor or { type, shape, data }`, describe(t));
  const b = t as GgufBlocks;
  const type = ggmlType(b.type);
  if (!type) throw rangeError(`tensor '${name}' type to be a ggml type name ('Q4_K', 'F16', ...)`, describe(b.type));
  if (!Array.isArray(b.shape) || b.shape.length < 1 || b.shape.length > 4 || b.shape.some((d) => !Number.isSafeInteger(d) || d < 0))
    throw rangeError(`tensor '${name}' shape to be 1 to 4 non-negative integers`, describe(b.shape));
  const inner = b.shape[b.shape.length - 1];
  if (inner % type.blockSize !== 0)
    throw rangeError(`tensor '${name}' rows to be whole ${type.name} blocks of ${type.blockSize}`, `${inner}`);
  const bytes = (b.shape.reduce((a, c) => a * c, 1) / type.blockSize) * type.typeSize;
  if (Object.prototype.toString.call(b.data) !== '[object Uint8Array]')
    throw typeError(`tensor '${name}' data to be a Uint8Array`, describe(b.data));
  if (b.data.length !== bytes)
    throw rangeError(`tensor '${name}' data to be ${bytes} bytes (${type.name} ${JSON.stringify(b.shape)})`, `${b.data.length} bytes`);
  return { type: type.name, shape: b.shape, data: b.data };
}

/** Writes `input` to `path` as a GGUF file (replacing it; written to a temporary file first, then renamed). */
export async function save(path: string, input: GgufSaveInput): Promise<void> {
  expectPath(path, 'path');
  if (typeof input !== 'object' || input === null) throw typeError('input to be { metadata?, tensors }', describe(input));
  const tensors = input.tensors;
  if (typeof tensors !== 'object' || tensors === null)
    throw typeError('input.tensors to be an object of tensors by name', describe(tensors));
  const metadata = { ...(input.metadata ?? {}) };
  if ('general.alignment' in metadata) throw rangeError('input.metadata without general.alignment (gguf.save aligns to 32)', 'one');
  const encoded = Object.entries(tensors).map(([name, t]) => {
    if (Buffer.byteLength(name) > 63) throw rangeError(`tensor names of at most 63 bytes (llama.cpp's limit)`, `'${name}'`);
    return { name, ...encode(name, t) };
  });
  const w = new Writer();
  w.bytes(Buffer.from('GGUF', 'latin1'));
  w.u32(3);
  w.u64(encoded.length);
  w.u64(Object.keys(metadata).length);
  for (const [key, value] of Object.entries(metadata)) {
    w.string(key);
    w.value(value, `metadata '${key}'`);
  }
  let offset = 0;
  for (const t of encoded) {
    w.string(t.name);
    w.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) w.u64(t.shape[d]);
    w.u32(ggmlType(t.type)!.id);
    w.u64(offset);
    offset += Math.ceil(t.data.length / ALIGNMENT) * ALIGNMENT;
  }
  w.pad(ALIGNMENT);
  for (const t of encoded) {
    w.bytes(t.data);
    w.pad(ALIGNMENT);
  }
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const h = await fs.open(tmp, 'w');
    try {
      for (const part of w.parts) await h.write(part);
    } finally {
      await h.close();
    }
    await fs.rename(tmp, path);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw fileError(err, path, 'a writable path');
  }
}
