/**
 * A GGUF file (llama.cpp's model format, versions 2 and 3, little-endian) opened for reading: header, metadata and
 * tensor infos parsed and checked at open, tensor bytes read on request by position, like SafetensorsFile.
 * Layout (ggml's docs/gguf.md): "GGUF", u32 version, u64 tensor count, u64 key/value count, the key/values (string
 * key, u32 value type, value), the tensor infos (string name, u32 dimensions, u64 ne[0..n), u32 ggml type, u64
 * offset), padding to `general.alignment` (default 32), then the tensors' data, each at its offset from there.
 * ne[0] is the innermost dimension: `shape` below is the row-major reverse ([ne[n-1], ..., ne[0]]), as a Tensor's.
 *
 * Why not @huggingface/gguf (evaluated: 0.4.6): it parses local files, but reads past a truncated file's end as
 * zeros and returns a tensor named '' from a header cut short; it needs Node 20 (this package: 18) and brings
 * @huggingface/tasks (5.6 MB of the 6.1 it installs) for a header parser of a few hundred lines; its errors are
 * plain Errors without the file's name. It stays a dev dependency: the tests parse the files gguf.save writes with it.
 */
import { promises as fs } from 'fs';
import { rangeError } from '../errors';
import { expectPath, fileError, isLibraryError, openRegularFile } from '../file-errors';
import { readFully, readTensorRange } from '../safetensors/file';
import { GGML_TYPES, GgmlType } from './types';

/** GGUF's metadata value types, by their numbers. */
export const GGUF_VALUE_TYPES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'] as const;
export type GgufValueType = (typeof GGUF_VALUE_TYPES)[number];
/** A value: numbers (64-bit integers as numbers while they are safe, else bigint), booleans, strings, arrays. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufMetadataEntry {
  type: GgufValueType;
  /** For arrays, the elements' type. */
  itemType?: GgufValueType;
  value: GgufValue;
}

export interface GgufTensorInfo {
  name: string;
  type: GgmlType;
  /** Row-major (outermost first): the reverse of ggml's ne. */
  shape: number[];
  /** Offset of its data in the file (absolute). */
  offset: number;
  byteLength: number;
}

/** Bounds that keep a malformed header from asking for memory or time before its bytes show it is malformed. */
const MAX_NAME_BYTES = 64; // GGML_MAX_NAME, counting its NUL: llama.cpp refuses longer tensor names
const MAX_KEY_BYTES = 65_535;
const MAX_DIMS = 4; // GGML_MAX_DIMS
const MAX_ARRAY_DEPTH = 8;
const CHUNK = 1 << 20;

/** Reads the header sequentially through a buffer, failing with the file's name where it ends too soon. */
class Cursor {
  private buf = new Uint8Array(CHUNK);
  private view = new DataView(this.buf.buffer);
  private start = 0; // file offset of buf[0]
  private end = 0; // file offset past the buffered bytes
  pos = 0;
  constructor(
    private readonly handle: fs.FileHandle,
    readonly size: number,
    readonly path: string,
  ) {}

  /** Bytes left in the file from here. */
  get left(): number {
    return this.size - this.pos;
  }

  private async need(n: number, what: string): Promise<number> {
    if (this.pos + n > this.size)
      throw rangeError(
        `${this.path} to hold ${what} at byte ${this.pos} (${n} bytes)`,
        `its end at byte ${this.size} (a truncated GGUF file?)`,
      );
    if (this.pos + n > this.end) {
      if (n > this.buf.length) {
        this.buf = new Uint8Array(n + CHUNK);
        this.view = new DataView(this.buf.buffer);
      }
      const len = Math.min(this.buf.length, this.size - this.pos);
      await readFully(this.handle, this.buf.subarray(0, len), this.pos, this.path);
      this.start = this.pos;
      this.end = this.pos + len;
    }
    const at = this.pos - this.start;
    this.pos += n;
    return at;
  }

  async u32(what: string): Promise<number> {
    return this.view.getUint32(await this.need(4, what), true);
  }
  /** A u64 that must be a safe integer (counts, sizes, offsets). */
  async u64(what: string): Promise<number> {
    const v = this.view.getBigUint64(await this.need(8, what), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw rangeError(`${this.path}: ${what} to be at most 2^53 - 1`, `${v}`);
    return Number(v);
  }
  async string(what: string, maxBytes: number): Promise<string> {
    const n = await this.u64(`the length of ${what}`);
    if (n > maxBytes) throw rangeError(`${this.path}: ${what} to be at most ${maxBytes} bytes`, `${n} bytes`);
    const at = await this.need(n, what);
    return Buffer.from(this.buf.buffer, at, n).toString('utf8');
  }

  async value(type: number, what: string, depth = 0): Promise<GgufMetadataEntry> {
    const name = GGUF_VALUE_TYPES[type];
    if (name === undefined) throw rangeError(`${this.path}: ${what} to have a GGUF value type (0-12)`, `${type}`);
    const v = this.view;
    switch (name) {
      case 'u8':
        return { type: name, value: v.getUint8(await this.need(1, what)) };
      case 'i8':
        return { type: name, value: v.getInt8(await this.need(1, what)) };
      case 'u16':
        return { type: name, value: v.getUint16(await this.need(2, what), true) };
      case 'i16':
        return { type: name, value: v.getInt16(await this.need(2, what), true) };
      case 'u32':
        return { type: name, value: v.getUint32(await this.need(4, what), true) };
      case 'i32':
        return { type: name, value: v.getInt32(await this.need(4, what), true) };
      case 'f32':
        return { type: name, value: v.getFloat32(await this.need(4, what), true) };
      case 'f64':
        return { type: name, value: v.getFloat64(await this.need(8, what), true) };
      case 'bool': {
        const b = v.getUint8(await this.need(1, what));
        if (b > 1) throw rangeError(`${this.path}: ${what} to be a bool (0 or 1)`, `${b}`);
        return { type: name, value: b === 1 };
      }
      case 'u64':
      case 'i64': {
        const at = await this.need(8, what);
        const big = name === 'u64' ? v.getBigUint64(at, true) : v.getBigInt64(at, true);
        const safe = big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= -BigInt(Number.MAX_SAFE_INTEGER);
        return { type: name, value: safe ? Number(big) : big };
      }
      case 'string':
        return { type: name, value: await this.string(what, this.left) };
      case 'array': {
        if (depth >= MAX_ARRAY_DEPTH) throw rangeError(`${this.path}: ${what} to nest arrays at most ${MAX_ARRAY_DEPTH} deep`, 'deeper');
        const itemType = await this.u32(`the item type of ${what}`);
        const count = await this.u64(`the length of ${what}`);
        // Every item takes at least a byte (strings 8): a count the rest of the file cannot hold is refused here,
        // before an array of that length exists.
        const least = GGUF_VALUE_TYPES[itemType] === 'string' ? 8 : 1;
        if (count * least > this.left)
          throw rangeError(`${this.path}: ${what} (${count} items) to fit in the ${this.left} bytes left`, 'a longer array');
        const items: GgufValue[] = new Array(count);
        for (let i = 0; i < count; i++) items[i] = (await this.value(itemType, `${what}[${i}]`, depth + 1)).value;
        return { type: name, itemType: GGUF_VALUE_TYPES[itemType], value: items };
      }
    }
  }
}

export class GgufFile {
  private handle: fs.FileHandle | undefined;

  private constructor(
    readonly path: string,
    handle: fs.FileHandle,
    readonly size: number,
    readonly version: number,
    /** Key/values in the file's order. */
    readonly metadata: ReadonlyMap<string, GgufMetadataEntry>,
    private readonly tensors: ReadonlyMap<string, GgufTensorInfo>,
    readonly alignment: number,
    /** Where the tensors' data begins. */
    readonly dataOffset: number,
  ) {
    this.handle = handle;
  }

  /** Opens `path` and checks its header (a RangeError naming the file, and the tensor, for anything malformed). */
  static async open(path: string): Promise<GgufFile> {
    expectPath(path, 'path');
    const handle = await openRegularFile(path, 'a GGUF file');
    try {
      const { size } = await handle.stat();
      const c = new Cursor(handle, size, path);
      if (size < 4) throw rangeError(`${path} to be a GGUF file`, `${size} bytes`);
      const magic = await c.u32('the magic');
      if (magic !== 0x46554747)
        throw rangeError(
          `${path} to begin with the GGUF magic ("GGUF")`,
          JSON.stringify(Buffer.from(new Uint32Array([magic]).buffer).toString('latin1')),
        );
      const version = await c.u32('the version');
      if (version === 0x02000000 || version === 0x03000000)
        throw rangeError(`${path} to be a little-endian GGUF file`, 'a big-endian one (moe-kernels reads little-endian)');
      if (version !== 2 && version !== 3) throw rangeError(`${path} to be GGUF version 2 or 3`, `version ${version}`);
      const tensorCount = await c.u64('the tensor count');
      const kvCount = await c.u64('the key/value count');
      // A key/value takes at least 13 bytes (key length, type, one byte), a tensor info 24: counts the file
      // cannot hold are refused before anything is allocated for them.
      const least = kvCount * 13 + tensorCount * 24;
      if (least > c.left)
        throw rangeError(
          `${path} to hold its ${kvCount} key/values and ${tensorCount} tensor infos (at least ${least} bytes)`,
          `${c.left} bytes after the counts`,
        );
      const metadata = new Map<string, GgufMetadataEntry>();
      for (let i = 0; i < kvCount; i++) {
        const key = await c.string(`key ${i}`, MAX_KEY_BYTES);
        if (metadata.has(key)) throw rangeError(`${path}: key '${key}' to appear once`, 'twice');
        metadata.set(key, await c.value(await c.u32(`the type of '${key}'`), `metadata '${key}'`));
      }
      const alignment = readAlignment(metadata, path);
      const infos: { name: string; type: GgmlType; shape: number[]; offset: number; byteLength: number }[] = [];
      const seen = new Set<string>();
      for (let i = 0; i < tensorCount; i++) {
        const name = await c.string(`the name of tensor ${i}`, MAX_NAME_BYTES - 1);
        if (seen.has(name)) throw rangeError(`${path}: tensor '${name}' to appear once`, 'twice');
        seen.add(name);
        const n = await c.u32(`the dimension count of tensor '${name}'`);
        if (n < 1 || n > MAX_DIMS) throw rangeError(`${path}: tensor '${name}' to have 1 to ${MAX_DIMS} dimensions`, `${n}`);
        const ne: number[] = [];
        for (let d = 0; d < n; d++) ne.push(await c.u64(`dimension ${d} of tensor '${name}'`));
        const typeId = await c.u32(`the type of tensor '${name}'`);
        const type = GGML_TYPES.get(typeId);
        if (!type) throw rangeError(`${path}: tensor '${name}' to have a ggml type`, `type ${typeId}`);
        const offset = await c.u64(`the offset of tensor '${name}'`);
        const values = ne.reduce((a, b) => a * b, 1);
        if (!Number.isSafeInteger(values)) throw rangeError(`${path}: tensor '${name}' to have at most 2^53 values`, `[${ne.join(', ')}]`);
        if (ne[0] % type.blockSize !== 0)
          throw rangeError(`${path}: tensor '${name}' rows (ne[0]) to be whole ${type.name} blocks of ${type.blockSize}`, `${ne[0]}`);
        if (offset % alignment !== 0) throw rangeError(`${path}: tensor '${name}' offset to be a multiple of ${alignment}`, `${offset}`);
        infos.push({ name, type, shape: ne.slice().reverse(), offset, byteLength: (values / type.blockSize) * type.typeSize });
      }
      const dataOffset = Math.ceil(c.pos / alignment) * alignment;
      const tensors = new Map<string, GgufTensorInfo>();
      for (const t of infos) {
        const begin = dataOffset + t.offset;
        if (begin + t.byteLength > size)
          throw rangeError(
            `${path}: tensor '${t.name}' (${t.type.name} [${t.shape.join(', ')}], ${t.byteLength} bytes at ${begin}) to lie within the file`,
            `its end at byte ${size}`,
          );
        tensors.set(t.name, { ...t, offset: begin });
      }
      // Tensors must not share bytes (a writer bug, or a crafted file that aliases one expert's data as another's).
      const sorted = [...tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
      for (let i = 1; i < sorted.length; i++)
        if (sorted[i].offset < sorted[i - 1].offset + sorted[i - 1].byteLength)
          throw rangeError(`${path}: tensors '${sorted[i - 1].name}' and '${sorted[i].name}' not to overlap`, 'overlapping bytes');
      return new GgufFile(path, handle, size, version, metadata, tensors, alignment, dataOffset);
    } catch (err) {
      await handle.close();
      if (isLibraryError(err)) throw err;
      throw fileError(err, path, 'a readable GGUF file');
    }
  }

  /** The tensor names, in the header's order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): GgufTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw rangeError(`${this.path} to hold a tensor '${name}'`, 'no such tensor');
    return t;
  }

  /** A metadata value, or undefined. */
  get(key: string): GgufValue | undefined {
    return this.metadata.get(key)?.value;
  }

  /** Bytes [begin, begin + length) of a tensor's data. */
  async range(name: string, begin: number, length: number, options: { signal?: AbortSignal; into?: Uint8Array } = {}): Promise<Uint8Array> {
    const info = this.info(name);
    return readTensorRange(
      { path: this.path, kind: 'GGUF', handle: () => this.handle, name, offset: info.offset, byteLength: info.byteLength },
      begin,
      length,
      options,
    );
  }

  get closed(): boolean {
    return this.handle === undefined;
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }
}

/** `general.alignment`: a u32 power of two (gguf.cpp's rule), 32 when absent. */
function readAlignment(metadata: ReadonlyMap<string, GgufMetadataEntry>, path: string): number {
  const a = metadata.get('general.alignment');
  if (!a) return 32;
  if (a.type !== 'u32' || typeof a.value !== 'number' || a.value < 1 || (a.value & (a.value - 1)) !== 0 || a.value > 1 << 30)
    throw rangeError(`${path}: general.alignment to be a u32 power of two`, `${a.type} ${String(a.value)}`);
  return a.value;
}

/** True when the file at `path` begins with the GGUF magic (false for anything else, or nothing there). */
export async function isGgufFile(path: string): Promise<boolean> {
  const h = await fs.open(path, 'r').catch(() => undefined);
  if (!h) return false;
  try {
    const b = new Uint8Array(4);
    const { bytesRead } = await h.read(b, 0, 4, 0);
    return bytesRead === 4 && Buffer.from(b).toString('latin1') === 'GGUF';
  } catch {
    return false;
  } finally {
    await h.close();
  }
}
