/**
 * Typed-array detection with Node's util.types, never instanceof (arrays made by the addon or in another realm,
 * as under Jest, fail instanceof) and never by Symbol.toStringTag (any object can claim a tag). An array that
 * carries its own length, byteLength or byteOffset property (which would lie to JavaScript code reading it
 * while the native side reads the real one) is not accepted as one.
 */
import { types } from 'util';

export type TypedArray = Float32Array | Float64Array | Uint16Array | Int32Array | Int8Array | Uint8Array;

const KINDS: readonly (readonly [string, (value: unknown) => boolean])[] = [
  ['Float32Array', types.isFloat32Array],
  ['Float64Array', types.isFloat64Array],
  ['Uint16Array', types.isUint16Array],
  ['Int32Array', types.isInt32Array],
  ['Int8Array', types.isInt8Array],
  ['Uint8Array', types.isUint8Array],
];

function honest(value: object): boolean {
  const own = Object.prototype.hasOwnProperty;
  return !own.call(value, 'length') && !own.call(value, 'byteLength') && !own.call(value, 'byteOffset');
}

/** The typed array's kind ('Float32Array', ...), or undefined for anything else. */
export function typedArrayTag(value: unknown): string | undefined {
  if (!types.isTypedArray(value) || !honest(value as object)) return undefined;
  for (const [tag, is] of KINDS) if (is(value)) return tag;
  return undefined;
}

export function isFloat32Array(value: unknown): value is Float32Array {
  return typedArrayTag(value) === 'Float32Array';
}

export function isInt32Array(value: unknown): value is Int32Array {
  return typedArrayTag(value) === 'Int32Array';
}
