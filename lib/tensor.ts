import { describe, rangeError, typeError } from './errors';
import { checkMemory } from './memory-limit';
import { Random } from './random';
import { typedArrayTag } from './typed-arrays';

export type DType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'int8' | 'uint8';

/** The typed array that holds each dtype; float16 and bfloat16 keep their raw bits in a Uint16Array. */
export interface DataTypes {
  float32: Float32Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  int32: Int32Array;
  int8: Int8Array;
  uint8: Uint8Array;
}
export type DataOf<D extends DType> = DataTypes[D];

/** dtype facts: the typed array tag behind it and its constructor. */
export const DTYPES: { readonly [D in DType]: { tag: string; create: (n: number) => DataOf<D> } } = {
  float32: { tag: 'Float32Array', create: (n) => new Float32Array(n) },
  float16: { tag: 'Uint16Array', create: (n) => new Uint16Array(n) },
  bfloat16: { tag: 'Uint16Array', create: (n) => new Uint16Array(n) },
  int32: { tag: 'Int32Array', create: (n) => new Int32Array(n) },
  int8: { tag: 'Int8Array', create: (n) => new Int8Array(n) },
  uint8: { tag: 'Uint8Array', create: (n) => new Uint8Array(n) },
};

const DTYPE_BY_TAG: Record<string, DType> = {
  Float32Array: 'float32',
  Int32Array: 'int32',
  Int8Array: 'int8',
  Uint8Array: 'uint8',
};

function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, value);
}

function checkShape(shape: unknown, name: string): number[] {
  if (!Array.isArray(shape)) throw typeError(`${name} to be an array of non-negative integers`, describe(shape));
  shape.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) throw rangeError(`${name}[${i}] to be a non-negative integer`, describe(d));
  });
  return shape.slice() as number[];
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The most elements a tensor may have: V8's typed arrays end at 2^32 (so does the native side). */
export const MAX_ELEMENTS = 2 ** 32;

/** product(dims), or a RangeError in the one format when it passes MAX_ELEMENTS. */
function elementCount(dims: readonly number[], name = 'shape'): number {
  const n = product(dims);
  if (n > MAX_ELEMENTS) throw rangeError(`${name} [${dims.join(', ')}] to have at most ${MAX_ELEMENTS} elements`, `${n}`);
  return n;
}

/**
 * An n-dimensional array: a dtype, a shape and a typed array, row-major. `data` is the array itself, not a
 * copy: Tensor.from wraps what you pass, and reshape shares it.
 */
export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: DataOf<D>;

  private constructor(data: DataOf<D>, shape: number[], dtype: D) {
    this.data = data;
    this.shape = Object.freeze(shape);
    this.dtype = dtype;
  }

  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }

  /**
   * Wraps a typed array (zero-copy) or copies a plain number array (to float32 unless dtype says otherwise).
   * dtype defaults to the array's own (Float32Array -> 'float32', ...); a Uint16Array needs 'float16' or
   * 'bfloat16' spelled out.
   */
  static from<D extends DType = 'float32'>(data: DataOf<D> | ArrayLike<number>, shape: readonly number[], dtype?: D): Tensor<D> {
    const dims = checkShape(shape, 'shape');
    if (dtype !== undefined && !isDType(dtype)) throw rangeError(`dtype to be one of ${Object.keys(DTYPES).join(', ')}`, describe(dtype));
    const tag = typedArrayTag(data);
    let array: DataOf<D>;
    let kind: D;
    if (tag === undefined) {
      if (!Array.isArray(data)) throw typeError('data to be a typed array or an array of numbers', describe(data));
      kind = (dtype ?? 'float32') as D;
      array = DTYPES[kind].create(data.length) as DataOf<D>;
      const target = array as { [index: number]: number };
      for (let i = 0; i < data.length; i++) target[i] = Number(data[i]);
    } else {
      if (tag === 'Uint16Array' && dtype === undefined) throw typeError("dtype 'float16' or 'bfloat16' for a Uint16Array", 'no dtype');
      kind = (dtype ?? DTYPE_BY_TAG[tag]) as D;
      if (kind === undefined || DTYPES[kind].tag !== tag)
        throw typeError(`data for dtype '${dtype ?? '?'}' to be a ${dtype ? DTYPES[dtype].tag : 'supported typed array'}`, `a ${tag}`);
      array = data as DataOf<D>;
    }
    if (elementCount(dims) !== array.length)
      throw rangeError(`data to have ${product(dims)} elements (shape [${dims.join(', ')}])`, `${array.length}`);
    return new Tensor(array, dims, kind);
  }

  /** @internal Wraps an array the library made itself, skipping the checks of `from` (hot paths only). */
  static trusted<D extends DType>(data: DataOf<D>, shape: number[], dtype: D): Tensor<D> {
    return new Tensor(data, shape, dtype);
  }

  /** A tensor of zeros. */
  static zeros<D extends DType = 'float32'>(shape: readonly number[], dtype?: D): Tensor<D> {
    const dims = checkShape(shape, 'shape');
    const kind = (dtype ?? 'float32') as D;
    if (!isDType(kind)) throw rangeError(`dtype to be one of ${Object.keys(DTYPES).join(', ')}`, describe(dtype));
    checkMemory(elementCount(dims) * DTYPES[kind].create(0).BYTES_PER_ELEMENT, `a tensor of shape [${dims.join(', ')}]`);
    return new Tensor(DTYPES[kind].create(elementCount(dims)) as DataOf<D>, dims, kind);
  }

  /** Seeded normal values (float32): mean + std * N(0, 1), the same for the same seed everywhere. */
  static randn(shape: readonly number[], options: { seed?: number; std?: number; mean?: number } = {}): Tensor<'float32'> {
    if (typeof options !== 'object' || options === null || Array.isArray(options))
      throw typeError('options to be an object ({ seed, std, mean })', describe(options));
    const { seed = 0, std = 1, mean = 0 } = options;
    if (typeof std !== 'number') throw typeError('options.std to be a number', describe(std));
    if (typeof mean !== 'number') throw typeError('options.mean to be a number', describe(mean));
    if (!Number.isFinite(std) || std < 0) throw rangeError('options.std to be a finite number >= 0', describe(std));
    if (!Number.isFinite(mean)) throw rangeError('options.mean to be a finite number', describe(mean));
    expectSeed(seed, 'options.seed');
    const t = Tensor.zeros(shape, 'float32');
    new Random(seed).fillNormal(t.data, mean, std);
    return t;
  }

  /** The same data under a new shape (one dimension may be -1, inferred). */
  reshape(shape: readonly number[]): Tensor<D> {
    if (!Array.isArray(shape)) throw typeError('shape to be an array', describe(shape));
    const free = shape.filter((d) => d === -1).length;
    if (free > 1) throw rangeError('at most one -1 in shape', `[${shape.join(', ')}]`);
    const known = product(shape.filter((d) => d !== -1));
    if (free === 1 && (known === 0 || this.size % known !== 0))
      throw rangeError(`a shape with ${this.size} elements (from [${this.shape.join(', ')}])`, `[${shape.join(', ')}]`);
    const dims = shape.map((d) => (d === -1 ? (known === 0 ? 0 : this.size / known) : d));
    checkShape(dims, 'shape');
    if (product(dims) !== this.size)
      throw rangeError(`a shape with ${this.size} elements (from [${this.shape.join(', ')}])`, `[${shape.join(', ')}]`);
    return new Tensor(this.data, dims, this.dtype);
  }

  /** A float32 tensor with the same values: float16 and bfloat16 convert exactly. float32 returns itself. */
  toFloat32(): Tensor<'float32'> {
    if (this.dtype === 'float32') return this as unknown as Tensor<'float32'>;
    const out = new Float32Array(this.size);
    const src = this.data;
    if (this.dtype === 'bfloat16') {
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
    } else if (this.dtype === 'float16') {
      for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i]);
    } else {
      for (let i = 0; i < src.length; i++) out[i] = src[i];
    }
    return new Tensor(out, this.shape.slice(), 'float32');
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}])`;
  }
}

/** IEEE 754 binary16 bits to the number they encode (exact; subnormals, infinities and NaN included). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** True for a moe-kernels Tensor (checked structurally, so it works across realms and copies of the package). */
/**
 * A Tensor made by this library. A plain { dtype, shape, data } object is not one (it has none of the methods),
 * but every function that takes a tensor accepts it, checked and wrapped (validate.ts expectTensor).
 */
export function isTensor(value: unknown): value is Tensor {
  return value instanceof Tensor;
}

/** A seed: an integer in [0, 2^32 - 1] (the generator's state is 32 bits; -1 or 1.5 would alias another seed). */
export function expectSeed(value: unknown, name: string): number {
  if (typeof value !== 'number') throw typeError(`${name} to be an integer in [0, 4294967295]`, describe(value));
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff)
    throw rangeError(`${name} to be an integer in [0, 4294967295]`, describe(value));
  return value;
}
