/**
 * The one error format of moe-kernels:
 *   `moe-kernels: expected x.shape[1] = 1024 (dModel) but got 512`
 * A wrong kind of value is a TypeError; a value of the right kind outside its allowed range (shape, size,
 * k > numExperts, non-finite data, ...) is a RangeError. The native side throws the same format.
 */
export const ERROR_PREFIX = 'moe-kernels: ';

function message(expected: string, got: string): string {
  return `${ERROR_PREFIX}expected ${expected} but got ${got}`;
}

export function typeError(expected: string, got: string): TypeError {
  return new TypeError(message(expected, got));
}

export function rangeError(expected: string, got: string): RangeError {
  return new RangeError(message(expected, got));
}

/** Names the kind of a value for an error message: 'a Float64Array', 'null', 'a number (3)', 'a Tensor'. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return `a number (${value})`;
  if (typeof value === 'string') return `a string ('${value.length > 40 ? value.slice(0, 40) + '...' : value}')`;
  if (typeof value === 'boolean') return `a boolean (${value})`;
  if (typeof value === 'bigint') return `a bigint (${value})`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return `an Array of length ${value.length}`;
  const tag = Object.prototype.toString.call(value).slice(8, -1);
  if (tag !== 'Object') return `${/^[AEIOU]/.test(tag) ? 'an' : 'a'} ${tag}`;
  const ctor = (value as { constructor?: { name?: string } }).constructor?.name;
  return ctor && ctor !== 'Object' ? `a ${ctor}` : 'an object';
}
