/** Argument checks shared by the public API, all in the one error format of errors.ts. */
import { describe, rangeError, typeError } from './errors';
import { DType, Tensor, isTensor } from './tensor';

/** The most experts a layer or kernel takes: 2^24, past the million of the largest published MoE (PEER). */
export const MAX_EXPERTS = 2 ** 24;
/** The largest single dimension (dModel, dHidden, tokens): the native side's int32 row indices. */
export const MAX_DIM = 2 ** 31 - 1;

/** A positive integer (or non-negative when `allowZero`). */
export function expectInteger(value: unknown, name: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw typeError(`${name} to be an integer`, describe(value));
  if (!Number.isInteger(value) || value < min || value > max)
    throw rangeError(`${name} to be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? 'inf' : max}]`, `${value}`);
  return value;
}

/** A finite number (a coefficient, a scale): NaN and Infinity are refused, as is a number given as a string. */
export function expectFinite(value: unknown, name: string): number {
  if (typeof value !== 'number') throw typeError(`${name} to be a finite number`, describe(value));
  if (!Number.isFinite(value)) throw rangeError(`${name} to be a finite number`, `${value}`);
  return value;
}

/** A finite number >= 0 (a loss coefficient: a negative one would reward imbalance). */
export function expectNonNegative(value: unknown, name: string): number {
  const v = expectFinite(value, name);
  if (v < 0) throw rangeError(`${name} to be a finite number >= 0`, `${v}`);
  return v;
}

export function expectBoolean(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw typeError(`${name} to be a boolean`, describe(value));
  return value;
}

/** One of a fixed set of strings. */
export function expectOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): T {
  if (typeof value !== 'string') throw typeError(`${name} to be one of ${allowed.map((a) => `'${a}'`).join(', ')}`, describe(value));
  if (!(allowed as readonly string[]).includes(value))
    throw rangeError(`${name} to be one of ${allowed.map((a) => `'${a}'`).join(', ')}`, `'${value}'`);
  return value as T;
}

/**
 * A Tensor of one of `dtypes` whose shape matches `dims`: a number is a required size, null any size.
 * `dimNames` explain the sizes in the message: "expected x.shape[1] = 1024 (dModel) but got 512".
 */
export function expectTensor<D extends DType>(
  value: unknown,
  name: string,
  dtypes: readonly D[],
  dims: readonly (number | null)[],
  dimNames: readonly string[] = [],
): Tensor<D> {
  const tensor = asTensor(value, name);
  if (!(dtypes as readonly string[]).includes(tensor.dtype))
    throw typeError(`${name}.dtype to be ${dtypes.map((d) => `'${d}'`).join(' or ')}`, `'${tensor.dtype}'`);
  if (tensor.shape.length !== dims.length)
    throw rangeError(
      `${name} to have ${dims.length} dimensions ([${dims.map((d, i) => dimNames[i] ?? (d === null ? '*' : d)).join(', ')}])`,
      `shape [${tensor.shape.join(', ')}]`,
    );
  dims.forEach((d, i) => {
    if (d !== null && tensor.shape[i] !== d)
      throw rangeError(`${name}.shape[${i}] = ${d}${dimNames[i] ? ` (${dimNames[i]})` : ''}`, `${tensor.shape[i]}`);
  });
  return tensor as Tensor<D>;
}

/** A Tensor as is, or a plain { dtype, shape, data } object checked and wrapped as one (zero-copy). */
export function asTensor(value: unknown, name: string): Tensor {
  if (isTensor(value)) return value;
  if (typeof value !== 'object' || value === null || !('data' in value) || !('shape' in value))
    throw typeError(`${name} to be a Tensor`, describe(value));
  const { data, shape, dtype } = value as { data: unknown; shape: unknown; dtype?: unknown };
  try {
    return Tensor.from(data as Float32Array, shape as number[], dtype as DType | undefined);
  } catch (err) {
    const e = err as Error;
    const detail = e.message.replace(/^moe-kernels: expected /, '');
    const [expected, got] = detail.split(' but got ');
    const kind = e.name === 'RangeError' ? rangeError : typeError;
    throw kind(`${name} to be a Tensor: ${expected}`, got ?? 'something else');
  }
}

/** An options argument: undefined (no options) or a plain object; a number, string or null is a TypeError. */
export function expectOptions<T extends object>(value: T | undefined, name = 'options'): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw typeError(`${name} to be an object`, describe(value));
  return value;
}

/** A tensor's data as float32, converting float16 / bfloat16 exactly (for weights). */
export function float32Data(t: Tensor): Float32Array {
  return t.toFloat32().data;
}
