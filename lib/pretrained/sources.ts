/**
 * Where each weight of a layer comes from in a checkpoint, and how it is read: every read is planned first
 * (`check`: the tensors exist, with the shapes and dtypes the family expects, and how many bytes they cost), so a
 * missing tensor or shard is reported before anything large is read, and then read one expert at a time.
 */
import { rangeError } from '../errors';
import { Checkpoint } from '../safetensors/checkpoint';
import { dequantizeBlockFp8, dequantizeMxfp4, fp8ToFloat32 } from '../safetensors/dequantize';
import { SAFETENSORS_DTYPES, SafetensorsDtype, TensorInfo } from '../safetensors/format';
import { Tensor } from '../tensor';

/**
 * One matrix [rows, cols] in the nn.Linear layout [out, in]: float32 values, or 16-bit floats as stored. It may be
 * a view of the reader's scratch buffer, valid until the reader's next read: use it (Projection.put copies it) first.
 */
export type MatrixData =
  | { kind: 'float32'; data: Float32Array }
  | { kind: 'half'; format: 'bfloat16' | 'float16'; bits: Uint16Array }
  /** GGUF blocks as the file has them: Q8_0 / Q4_0 become int8 / int4 groups, Q4_K / Q5_K / Q6_K their K-quant dtype. */
  | { kind: 'blocks'; type: 'Q8_0' | 'Q4_0' | 'Q4_K' | 'Q5_K' | 'Q6_K'; data: Uint8Array };

/** Anything whose tensors are read by byte range: a safetensors file, a GGUF file. */
export interface RangeReadable {
  range(name: string, begin: number, length: number, options: { signal?: AbortSignal; into?: Uint8Array }): Promise<Uint8Array>;
}

/**
 * Reads from a checkpoint, counting the bytes (for progress) and honouring the abort signal. Slices land in one
 * grow-only scratch buffer: fresh memory costs its first touch again on every read (about 4 GB/s less than a reused
 * buffer on this machine kind, measured while loading a Mixtral layer), and the data is copied out at once anyway.
 */
export class Reader {
  bytesRead = 0;
  private scratch = new Uint8Array(0);
  constructor(
    /** The safetensors checkpoint (none for a GGUF file, whose sources read through `rangeOf`). */
    private readonly source: Checkpoint | undefined,
    readonly signal: AbortSignal | undefined,
    private readonly onRead: (bytes: number) => void,
  ) {}

  private get checkpoint(): Checkpoint {
    if (!this.source) throw new Error('internal: a safetensors source read from a GGUF file');
    return this.source;
  }

  async info(name: string): Promise<TensorInfo> {
    return this.checkpoint.info(name);
  }

  /** A whole tensor. */
  async tensor(name: string): Promise<Tensor> {
    this.signal?.throwIfAborted();
    const t = await this.checkpoint.tensor(name, { signal: this.signal });
    this.count((await this.info(name)).byteLength);
    return t;
  }

  /** Bytes [begin, begin + length) of a tensor's data (one expert's slab of a stacked tensor). */
  async slice(name: string, begin: number, length: number): Promise<Uint8Array> {
    return this.rangeOf(await this.checkpoint.file(name), name, begin, length);
  }

  /** Bytes [begin, begin + length) of tensor `name` of `file`, into the scratch buffer (valid until the next read). */
  async rangeOf(file: RangeReadable, name: string, begin: number, length: number): Promise<Uint8Array> {
    this.signal?.throwIfAborted();
    if (this.scratch.length < length) this.scratch = new Uint8Array(length);
    const out = await file.range(name, begin, length, { signal: this.signal, into: this.scratch });
    this.count(length);
    return out;
  }

  private count(bytes: number) {
    this.bytesRead += bytes;
    this.onRead(bytes);
  }
}

/** A matrix of one expert (or a router): what it needs from the checkpoint and how to read it. */
export interface MatrixSource {
  rows: number;
  cols: number;
  /** Checks the tensors (existence, dtype, shape); returns the bytes a read costs. */
  check(reader: Reader): Promise<number>;
  read(reader: Reader): Promise<MatrixData>;
}

const FLOAT_DTYPES: readonly SafetensorsDtype[] = ['F32', 'F16', 'BF16'];

/** Expects `info` to have `dims` (and one of `dtypes`); the message names the tensor and its file. */
export function expectShape(info: TensorInfo, dims: readonly number[], dtypes: readonly SafetensorsDtype[], what: string): void {
  if (!dtypes.includes(info.dtype)) throw rangeError(`tensor '${info.name}' (${what}) to be ${dtypes.join(' or ')}`, `${info.dtype}`);
  if (info.shape.length !== dims.length || info.shape.some((d, i) => d !== dims[i]))
    throw rangeError(`tensor '${info.name}' (${what}) to have shape [${dims.join(', ')}]`, `[${info.shape.join(', ')}]`);
}

/** A view of bytes (at an aligned offset: the scratch buffer's start) as the matrix they hold. */
function fromBytes(dtype: SafetensorsDtype, bytes: Uint8Array): MatrixData {
  const { buffer, byteOffset: at, byteLength: n } = bytes;
  if (dtype === 'F32') return { kind: 'float32', data: new Float32Array(buffer, at, n / 4) };
  return { kind: 'half', format: dtype === 'BF16' ? 'bfloat16' : 'float16', bits: new Uint16Array(buffer, at, n / 2) };
}

/**
 * A 2-D weight [rows, cols] (nn.Linear's), F32 / F16 / BF16, or F8_E4M3 with its `<name>_scale_inv` block scales
 * (DeepSeek-V3's FP8 checkpoints, `blockSize` from quantization_config.weight_block_size), dequantized on load.
 */
export function linear(name: string, rows: number, cols: number, what: string, blockSize = 128): MatrixSource {
  const scaleName = `${name}_scale_inv`;
  return {
    rows,
    cols,
    async check(reader) {
      const info = await reader.info(name);
      expectShape(info, [rows, cols], [...FLOAT_DTYPES, 'F8_E4M3'], what);
      if (info.dtype !== 'F8_E4M3') return info.byteLength;
      const scale = await reader.info(scaleName).catch(() => {
        throw rangeError(`an FP8 tensor '${name}' to come with its block scales '${scaleName}'`, 'none');
      });
      expectShape(scale, [Math.ceil(rows / blockSize), Math.ceil(cols / blockSize)], FLOAT_DTYPES, `${what}'s block scales`);
      return info.byteLength + scale.byteLength;
    },
    async read(reader) {
      const info = await reader.info(name);
      if (info.dtype !== 'F8_E4M3') return fromBytes(info.dtype, await reader.slice(name, 0, info.byteLength));
      const t = await reader.tensor(name);
      return { kind: 'float32', data: dequantizeBlockFp8(t, await reader.tensor(scaleName), blockSize, name).data };
    },
  };
}

/**
 * Rows [row0, row0 + rows) of expert e of a stacked [experts, R, cols] tensor (transformers' fused expert
 * parameters, e.g. Mixtral's gate_up_proj [E, 2 I, H]): read by byte range, only that expert's rows.
 */
export function stackedRows(
  name: string,
  expert: number,
  shape: readonly number[],
  row0: number,
  rows: number,
  what: string,
): MatrixSource {
  const [, r, cols] = shape;
  return {
    rows,
    cols,
    async check(reader) {
      const info = await reader.info(name);
      expectShape(info, shape, FLOAT_DTYPES, what);
      return rows * cols * SAFETENSORS_DTYPES[info.dtype].bytes;
    },
    async read(reader) {
      const info = await reader.info(name);
      const size = SAFETENSORS_DTYPES[info.dtype].bytes;
      const bytes = await reader.slice(name, (expert * r + row0) * cols * size, rows * cols * size);
      return fromBytes(info.dtype, bytes);
    },
  };
}

/**
 * Expert e of a stacked tensor in the [experts, in, out] layout (gpt-oss's gate_up_proj [E, H, 2 I] and down_proj
 * [E, I, H], used as x @ W), transposed to [out, in]; of the out columns, those c0, c0 + step, c0 + 2 step, ...
 * (gpt-oss interleaves gate and up: gate at even columns, up at odd ones). `memo` shares one read of a slab between
 * the gate and the up matrix.
 */
export function stackedTransposed(
  name: string,
  expert: number,
  shape: readonly number[],
  c0: number,
  step: number,
  what: string,
  memo: Map<string, Promise<MatrixData>>,
): MatrixSource {
  const [, k, n] = shape;
  const rows = Math.floor((n - c0 + step - 1) / step);
  const slab = (reader: Reader) => {
    const key = `${name}#${expert}`;
    let p = memo.get(key);
    if (!p) {
      p = (async () => {
        const info = await reader.info(name);
        const size = SAFETENSORS_DTYPES[info.dtype].bytes;
        return fromBytes(info.dtype, await reader.slice(name, expert * k * n * size, k * n * size));
      })();
      memo.set(key, p);
    }
    return p;
  };
  return {
    rows,
    cols: k,
    async check(reader) {
      const info = await reader.info(name);
      expectShape(info, shape, FLOAT_DTYPES, what);
      return c0 === 0 ? k * n * SAFETENSORS_DTYPES[info.dtype].bytes : 0; // the slab is read once for both halves
    },
    async read(reader) {
      const src = (await slab(reader)) as Exclude<MatrixData, { kind: 'blocks' }>; // (fromBytes': floats)
      const values = src.kind === 'float32' ? src.data : src.bits;
      const out = src.kind === 'float32' ? new Float32Array(rows * k) : new Uint16Array(rows * k);
      for (let j = 0; j < rows; j++) {
        const col = c0 + j * step;
        for (let i = 0; i < k; i++) out[j * k + i] = values[i * n + col];
      }
      return src.kind === 'float32'
        ? { kind: 'float32', data: out as Float32Array }
        : { kind: 'half', format: src.format, bits: out as Uint16Array };
    },
  };
}

/**
 * Expert e of MXFP4 weights (gpt-oss's `<name>_blocks` [E, out, in / 32, 16] and `<name>_scales` [E, out, in / 32]),
 * dequantized to float32 [out, in]; rows r0, r0 + step, ... of the out dimension (gate / up interleaved).
 */
export function mxfp4Rows(
  name: string,
  expert: number,
  out: number,
  cols: number,
  r0: number,
  step: number,
  what: string,
  memo: Map<string, Promise<MatrixData>>,
): MatrixSource {
  const rows = Math.floor((out - r0 + step - 1) / step);
  const nb = cols / 32;
  const blocks = `${name}_blocks`;
  const scales = `${name}_scales`;
  return {
    rows,
    cols,
    async check(reader) {
      const b = await reader.info(blocks);
      const s = await reader.info(scales);
      if (b.shape.length !== 4) throw rangeError(`tensor '${blocks}' (${what}, MXFP4) to have 4 dimensions`, `[${b.shape.join(', ')}]`);
      expectShape(b, [b.shape[0], out, nb, 16], ['U8'], `${what}, MXFP4 blocks`);
      expectShape(s, [b.shape[0], out, nb], ['U8'], `${what}, MXFP4 scales`);
      return r0 === 0 ? out * nb * 17 : 0;
    },
    async read(reader) {
      const key = `${name}#${expert}`;
      let p = memo.get(key);
      if (!p) {
        p = (async () => {
          const codes = (await reader.slice(blocks, expert * out * nb * 16, out * nb * 16)).slice(); // (the scratch is reused next)
          const exps = await reader.slice(scales, expert * out * nb, out * nb);
          const w = dequantizeMxfp4(Tensor.from(codes, [out, nb, 16]), Tensor.from(exps, [out, nb]), name);
          return { kind: 'float32', data: w.data } as MatrixData;
        })();
        memo.set(key, p);
      }
      const all = ((await p) as { data: Float32Array }).data;
      if (step === 1 && r0 === 0) return { kind: 'float32', data: all };
      const data = new Float32Array(rows * cols);
      for (let j = 0; j < rows; j++) data.set(all.subarray((r0 + j * step) * cols, (r0 + j * step + 1) * cols), j * cols);
      return { kind: 'float32', data };
    },
  };
}

/** A whole small tensor (router, biases) as float32, with its expected shape. */
export function whole(name: string, dims: readonly number[], what: string) {
  return {
    name,
    async check(reader: Reader) {
      const info = await reader.info(name);
      expectShape(info, dims, FLOAT_DTYPES, what);
      return info.byteLength;
    },
    async read(reader: Reader): Promise<Float32Array> {
      return (await reader.tensor(name)).toFloat32().data;
    },
  };
}
export type WholeSource = ReturnType<typeof whole>;

/** A slice [begin, begin + count) of the last dimension of a stacked bias [E, n] for expert e, every `step`th. */
export function stackedBias(name: string, shape: readonly number[], c0: number, step: number, what: string) {
  const [e, n] = shape;
  const per = Math.floor((n - c0 + step - 1) / step);
  return {
    name,
    async check(reader: Reader) {
      const info = await reader.info(name);
      expectShape(info, shape, FLOAT_DTYPES, what);
      return info.byteLength; // read once per slice taken (small)
    },
    async read(reader: Reader): Promise<Float32Array> {
      const all = (await reader.tensor(name)).toFloat32().data;
      const out = new Float32Array(e * per);
      for (let x = 0; x < e; x++) for (let j = 0; j < per; j++) out[x * per + j] = all[x * n + c0 + j * step];
      return out;
    },
  };
}

export { fp8ToFloat32 };
