/** Typed-array detection by tag, never instanceof: arrays made by the addon or in another realm (Jest)
 * fail instanceof checks. */
export type TypedArray = Float32Array | Float64Array | Uint16Array | Int32Array | Int8Array | Uint8Array;

const TAGS = new Set([
  '[object Float32Array]',
  '[object Float64Array]',
  '[object Uint16Array]',
  '[object Int32Array]',
  '[object Int8Array]',
  '[object Uint8Array]',
]);

export function typedArrayTag(value: unknown): string | undefined {
  const tag = Object.prototype.toString.call(value);
  return TAGS.has(tag) ? tag.slice(8, -1) : undefined;
}

export function isFloat32Array(value: unknown): value is Float32Array {
  return Object.prototype.toString.call(value) === '[object Float32Array]';
}

export function isInt32Array(value: unknown): value is Int32Array {
  return Object.prototype.toString.call(value) === '[object Int32Array]';
}
