/**
 * The safetensors format (huggingface/safetensors, docs "Format"): an 8-byte little-endian header length N, N bytes
 * of JSON, then the data. The JSON maps each tensor name to { dtype, shape, data_offsets: [begin, end] } (byte offsets
 * into the data, which follows the header), plus an optional "__metadata__" of string values. This file parses and
 * checks a header the way the reference implementation does: offsets contiguous from 0, covering the data exactly,
 * sizes matching dtype x shape, a header of at most 100 MB.
 */
import { DType } from '../tensor';
import { rangeError } from '../errors';
import { isLibraryError } from '../file-errors';
import { checkJsonStructure } from './json-structure';

/** The safetensors dtype names, with their size and the Tensor dtype that holds them (undefined: not readable). */
export const SAFETENSORS_DTYPES = {
  F64: { bytes: 8, tensor: undefined },
  F32: { bytes: 4, tensor: 'float32' },
  F16: { bytes: 2, tensor: 'float16' },
  BF16: { bytes: 2, tensor: 'bfloat16' },
  I64: { bytes: 8, tensor: undefined },
  U64: { bytes: 8, tensor: undefined },
  I32: { bytes: 4, tensor: 'int32' },
  U32: { bytes: 4, tensor: undefined },
  I16: { bytes: 2, tensor: undefined },
  U16: { bytes: 2, tensor: undefined },
  I8: { bytes: 1, tensor: 'int8' },
  U8: { bytes: 1, tensor: 'uint8' },
  BOOL: { bytes: 1, tensor: 'uint8' },
  // FP8 codes come back as their raw bytes (a 'uint8' Tensor); safetensors.fp8ToFloat32 decodes them.
  F8_E4M3: { bytes: 1, tensor: 'uint8' },
  F8_E5M2: { bytes: 1, tensor: 'uint8' },
} as const satisfies Record<string, { bytes: number; tensor: DType | undefined }>;
export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

/** The reference implementation's limit on the JSON header. */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor's entry: its dtype, shape, and where its bytes lie in the file (absolute offsets). */
export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  /** Absolute byte offset of the first byte in the file. */
  offset: number;
  byteLength: number;
}

export interface Header {
  tensors: Map<string, TensorInfo>;
  metadata: Readonly<Record<string, string>>;
  /** Bytes before the data: 8 + the header length. */
  dataStart: number;
}

/** The header length from the first 8 bytes, checked against the file's size. */
export function headerLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || prefix.length < 8)
    throw rangeError(`${file} to start with an 8-byte header length (a safetensors file)`, `a file of ${fileSize} bytes`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const n = Number(view.getBigUint64(0, true));
  if (n > MAX_HEADER_BYTES) throw rangeError(`${file}'s header length to be at most ${MAX_HEADER_BYTES} bytes`, `${n}`);
  if (8 + n > fileSize)
    throw rangeError(
      `${file}'s header (${n} bytes) to lie within the file (${fileSize} bytes)`,
      'a header length past the end (a truncated file?)',
    );
  if (n < 2) throw rangeError(`${file}'s header to be a JSON object`, `a header of ${n} bytes`);
  return n;
}

/** Parses and checks the JSON header; `dataBytes` is what follows it in the file. */
export function parseHeader(json: Uint8Array, dataBytes: number, file: string): Header {
  let parsed: unknown;
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
  try {
    const text = decoder.decode(json);
    checkJsonStructure(text, `${file}'s header`, { duplicates: true });
    parsed = JSON.parse(text);
  } catch (err) {
    if (isLibraryError(err)) throw err;
    throw rangeError(`${file}'s header to be UTF-8 JSON`, `a parse error (${(err as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw rangeError(`${file}'s header to be a JSON object`, Array.isArray(parsed) ? 'an array' : typeof parsed);
  // (no prototype: a key '__proto__' is a key like any other)
  const metadata: Record<string, string> = Object.create(null) as Record<string, string>;
  const tensors = new Map<string, TensorInfo>();
  const dataStart = 8 + json.length;
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
        throw rangeError(`${file}'s __metadata__ to be an object of strings`, describeJson(entry));
      for (const [key, value] of Object.entries(entry)) {
        if (typeof value !== 'string') throw rangeError(`${file}'s __metadata__.${key} to be a string`, describeJson(value));
        metadata[key] = value;
      }
      continue;
    }
    tensors.set(name, tensorEntry(name, entry, file, dataStart));
  }
  // The reference implementation's rule: sorted by offset, each tensor starts where the one before ended, and the
  // last ends where the file does. No overlap, no hole, no trailing bytes.
  const sorted = [...tensors.values()].sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  let at = dataStart;
  for (const t of sorted) {
    if (t.offset !== at)
      throw rangeError(
        `${file}: tensor '${t.name}' to start at data offset ${at - dataStart} (tensors back to back, no overlap or gap)`,
        `data_offsets [${t.offset - dataStart}, ${t.offset - dataStart + t.byteLength}]`,
      );
    at += t.byteLength;
  }
  if (at !== dataStart + dataBytes)
    throw rangeError(`${file}'s tensors to cover its ${dataBytes} bytes of data`, `tensors ending at byte ${at - dataStart}`);
  return { tensors, metadata: Object.freeze(metadata), dataStart };
}

function tensorEntry(name: string, entry: unknown, file: string, dataStart: number): TensorInfo {
  const where = `${file}: tensor '${name}'`;
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
    throw rangeError(`${where} to be an object { dtype, shape, data_offsets }`, describeJson(entry));
  const { dtype, shape, data_offsets: offsets, ...rest } = entry as Record<string, unknown>;
  const extra = Object.keys(rest);
  if (extra.length > 0) throw rangeError(`${where} to have only dtype, shape and data_offsets`, `'${extra[0]}'`);
  if (typeof dtype !== 'string' || !Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPES, dtype))
    throw rangeError(`${where}.dtype to be one of ${Object.keys(SAFETENSORS_DTYPES).join(', ')}`, describeJson(dtype));
  if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0))
    throw rangeError(`${where}.shape to be an array of non-negative integers`, describeJson(shape));
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    offsets.some((o) => typeof o !== 'number' || !Number.isSafeInteger(o) || o < 0) ||
    offsets[0] > offsets[1]
  )
    throw rangeError(`${where}.data_offsets to be [begin, end] with 0 <= begin <= end`, describeJson(offsets));
  const bytes = SAFETENSORS_DTYPES[dtype as SafetensorsDtype].bytes;
  let elements = 1;
  for (const d of shape as number[]) {
    elements *= d;
    if (!Number.isSafeInteger(elements * bytes)) throw rangeError(`${where}.shape to have a size that fits`, JSON.stringify(shape));
  }
  const byteLength = offsets[1] - offsets[0];
  if (byteLength !== elements * bytes)
    throw rangeError(
      `${where} to span ${elements * bytes} bytes (${dtype} x [${(shape as number[]).join(', ')}])`,
      `data_offsets [${offsets[0]}, ${offsets[1]}] (${byteLength} bytes)`,
    );
  return {
    name,
    dtype: dtype as SafetensorsDtype,
    shape: Object.freeze((shape as number[]).slice()),
    offset: dataStart + offsets[0],
    byteLength,
  };
}

function describeJson(value: unknown): string {
  const s = JSON.stringify(value);
  return s === undefined ? String(value) : s.length > 60 ? s.slice(0, 60) + '...' : s;
}

/** The header of a file holding `entries` (name -> dtype, shape, bytes), padded with spaces to 8 bytes like the reference writer. */
export function encodeHeader(
  entries: readonly { name: string; dtype: SafetensorsDtype; shape: readonly number[]; byteLength: number }[],
  metadata?: Record<string, string>,
): Uint8Array {
  // (no prototype: a tensor named '__proto__' is written as one, not taken as the object's prototype)
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let at = 0;
  for (const e of entries) {
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [at, at + e.byteLength] };
    at += e.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}
