/**
 * A safetensors file opened for reading: the header is parsed and checked at open, and each tensor is read on
 * request with positional reads of its own bytes only, so a checkpoint of many GB costs what is asked of it.
 * The bytes land in an ArrayBuffer of their own (outside the JS heap), never in a copy of the file.
 */
import { promises as fs } from 'fs';
import { rangeError, typeError } from '../errors';
import { expectPath, fileError, openRegularFile } from '../file-errors';
import { checkMemory } from '../memory-limit';
import { DType, DataOf, Tensor } from '../tensor';
import { Header, SAFETENSORS_DTYPES, SafetensorsDtype, TensorInfo, headerLength, parseHeader } from './format';

/** Bytes per read call: below the 2 GiB a single read may move, and a point to check the abort signal. */
const READ_CHUNK = 64 << 20;

export interface ReadOptions {
  /** Aborts a long read between chunks with the signal's reason. */
  signal?: AbortSignal;
}

export interface RangeOptions extends ReadOptions {
  /** Read into this array (at least `length` bytes; the first `length` are returned) instead of a new buffer. */
  into?: Uint8Array;
}

export class SafetensorsFile {
  private handle: fs.FileHandle | undefined;

  private constructor(
    /** The path it was opened with. */
    readonly path: string,
    private readonly header: Header,
    handle: fs.FileHandle,
    /** The file's size in bytes. */
    readonly size: number,
  ) {
    this.handle = handle;
  }

  /** Opens `path` and checks its header (a RangeError naming the file for anything malformed). */
  static async open(path: string): Promise<SafetensorsFile> {
    expectPath(path, 'path');
    const handle = await openRegularFile(path, 'a safetensors file');
    try {
      const { size } = await handle.stat();
      const prefix = new Uint8Array(Math.min(8, size));
      await readFully(handle, prefix, 0, path);
      const n = headerLength(prefix, size, path);
      const json = new Uint8Array(n);
      await readFully(handle, json, 8, path);
      return new SafetensorsFile(path, parseHeader(json, size - 8 - n, path), handle, size);
    } catch (err) {
      await handle.close();
      throw fileError(err, path, 'a readable safetensors file');
    }
  }

  /** The "__metadata__" strings. */
  get metadata(): Readonly<Record<string, string>> {
    return this.header.metadata;
  }

  /** The tensor names, in the header's order. */
  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  has(name: string): boolean {
    return this.header.tensors.has(name);
  }

  /** A tensor's dtype, shape and byte range, or a RangeError naming the file when it has none of that name. */
  info(name: string): TensorInfo {
    const info = this.header.tensors.get(name);
    if (!info) throw rangeError(`${this.path} to hold a tensor '${name}'`, 'no such tensor');
    return info;
  }

  /**
   * Reads one tensor: F32, F16, BF16, I32, I8 and U8 as Tensors of that type ('float32', 'float16', 'bfloat16', ...),
   * BOOL and the FP8 formats as their raw bytes ('uint8'; safetensors.fp8ToFloat32 decodes FP8).
   */
  async tensor(name: string, options: ReadOptions = {}): Promise<Tensor> {
    const info = this.info(name);
    const dtype: DType | undefined = SAFETENSORS_DTYPES[info.dtype].tensor;
    if (!dtype)
      throw rangeError(
        `${this.path}: tensor '${name}' to have a dtype moe-kernels reads (F32, F16, BF16, I32, I8, U8, BOOL, F8_E4M3, F8_E5M2)`,
        `'${info.dtype}'`,
      );
    const bytes = await this.bytes(name, options);
    const data = viewAs(dtype, bytes);
    return Tensor.from(data as DataOf<typeof dtype>, info.shape, dtype);
  }

  /** A tensor's raw little-endian bytes, in a buffer of their own. */
  async bytes(name: string, options: ReadOptions = {}): Promise<Uint8Array> {
    return this.range(name, 0, this.info(name).byteLength, options);
  }

  /** Bytes [begin, begin + length) of a tensor's data (one expert's rows of a stacked tensor, say). */
  async range(name: string, begin: number, length: number, options: RangeOptions = {}): Promise<Uint8Array> {
    const info = this.info(name);
    return readTensorRange(
      { path: this.path, kind: 'safetensors', handle: () => this.handle, name, offset: info.offset, byteLength: info.byteLength },
      begin,
      length,
      options,
    );
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.handle === undefined;
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }
}

/** Where a tensor's bytes lie in an open file (SafetensorsFile's, GgufFile's), for readTensorRange. */
export interface TensorBytes {
  path: string;
  /** 'safetensors' or 'GGUF': the file kind in messages. */
  kind: string;
  /** The file's handle now (undefined once closed). */
  handle: () => fs.FileHandle | undefined;
  name: string;
  offset: number;
  byteLength: number;
}

/**
 * Bytes [begin, begin + length) of a tensor, read by position in chunks, checking the abort signal between them,
 * into `options.into` or a buffer of their own. A close() of the file while a read is under way ends it with that,
 * not with Node's EBADF.
 */
export async function readTensorRange(t: TensorBytes, begin: number, length: number, options: RangeOptions = {}): Promise<Uint8Array> {
  const { path, name } = t;
  if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(length) || begin < 0 || length < 0 || begin + length > t.byteLength)
    throw rangeError(`a byte range within tensor '${name}' (${t.byteLength} bytes) of ${path}`, `[${begin}, ${begin + length})`);
  const handle = t.handle();
  if (!handle) throw typeError(`an open file (${path})`, `a closed ${t.kind === 'GGUF' ? 'GgufFile' : 'SafetensorsFile'}`);
  if (options.into && options.into.length < length) throw rangeError(`options.into to hold ${length} bytes`, `${options.into.length}`);
  const out = options.into ? options.into.subarray(0, length) : newBytes(length, `tensor '${name}' of ${path}`);
  for (let at = 0; at < length; at += READ_CHUNK) {
    options.signal?.throwIfAborted();
    try {
      if (t.handle() !== handle) throw new Error('closed');
      await readFully(handle, out.subarray(at, Math.min(length, at + READ_CHUNK)), t.offset + begin + at, path);
    } catch (err) {
      if (t.handle() !== handle) throw typeError(`${path} to stay open while tensor '${name}' was read`, 'close() during the read');
      throw fileError(err, path, `a readable ${t.kind} file`);
    }
  }
  return out;
}

/** Fills `into` from `position`; a file that ends first (changed since it was opened) is a RangeError. */
export async function readFully(handle: fs.FileHandle, into: Uint8Array, position: number, file = 'the file'): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await handle.read(into, done, into.length - done, position + done);
    if (bytesRead === 0)
      throw rangeError(`${file} to hold ${into.length} bytes at offset ${position}`, 'its end (truncated since it was opened?)');
    done += bytesRead;
  }
}

/** The most bytes one read returns: a Uint8Array's length limit on Node 20 (2^32). */
const MAX_READ_BYTES = 2 ** 32;

/** A fresh buffer of `length` bytes, or a RangeError saying why there cannot be one (V8's raw errors say "undefined"). */
function newBytes(length: number, what: string): Uint8Array {
  if (length > MAX_READ_BYTES)
    throw rangeError(
      `${what} to be at most ${MAX_READ_BYTES} bytes to read as one array (read it in parts with range(name, begin, length))`,
      `${length} bytes`,
    );
  checkMemory(length, what);
  try {
    return new Uint8Array(new ArrayBuffer(length));
  } catch (err) {
    throw rangeError(
      `${what} (${length} bytes) to fit in memory this process can allocate`,
      `an allocation failure (${(err as Error).message})`,
    );
  }
}

function viewAs(dtype: DType, bytes: Uint8Array): DataOf<DType> {
  const b = bytes.buffer;
  switch (dtype) {
    case 'float32':
      return new Float32Array(b);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(b);
    case 'int32':
      return new Int32Array(b);
    case 'int8':
      return new Int8Array(b);
    case 'uint8':
      return bytes;
  }
}

export type { SafetensorsDtype, TensorInfo };
