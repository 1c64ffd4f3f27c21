/** Argument checks shared by the public API, all in the one error format of errors.ts. */
import { describe, rangeError, typeError } from './errors';
import { DType, Tensor, isTensor } from './tensor';

/** A positive integer (or non-negative when `allowZero`). */
export function expectInteger(value: unknown, name: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw typeError(`${name} to be an integer`, describe(value));
  if (!Number.isInteger(value) || value < min || value > max)
    throw rangeError(`${name} to be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? 'inf' : max}]`, `${value}`);
  return value;
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
  value: unknown, name: string, dtypes: readonly D[], dims: readonly (number | null)[], dimNames: readonly string[] = [],
): Tensor<D> {
  if (!isTensor(value)) throw typeError(`${name} to be a Tensor`, describe(value));
  if (!(dtypes as readonly string[]).includes(value.dtype))
    throw typeError(`${name}.dtype to be ${dtypes.map((d) => `'${d}'`).join(' or ')}`, `'${value.dtype}'`);
  if (value.shape.length !== dims.length)
    throw rangeError(
      `${name} to have ${dims.length} dimensions ([${dims.map((d, i) => dimNames[i] ?? (d === null ? '*' : d)).join(', ')}])`,
      `shape [${value.shape.join(', ')}]`,
    );
  dims.forEach((d, i) => {
    if (d !== null && value.shape[i] !== d)
      throw rangeError(`${name}.shape[${i}] = ${d}${dimNames[i] ? ` (${dimNames[i]})` : ''}`, `${value.shape[i]}`);
  });
  return value as Tensor<D>;
}

/** A tensor's data as float32, converting float16 / bfloat16 exactly (for weights). */
export function float32Data(t: Tensor): Float32Array {
  return t.toFloat32().data;
}
