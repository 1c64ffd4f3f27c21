/** Writing safetensors files: for fixtures, and for saving a layer's weights. */
import { randomBytes } from 'crypto';
import { promises as fs } from 'fs';
import { describe, rangeError, typeError } from '../errors';
import { expectPath, fileError } from '../file-errors';
import { DType, isTensor } from '../tensor';
import { typedArrayTag } from '../typed-arrays';
import { SAFETENSORS_DTYPES, SafetensorsDtype, encodeHeader } from './format';

const BY_TENSOR_DTYPE: Record<DType, SafetensorsDtype> = {
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  int32: 'I32',
  int8: 'I8',
  uint8: 'U8',
};

/** A tensor to write with an explicit safetensors dtype (its bytes as they are), e.g. FP8 codes as a Uint8Array. */
export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: readonly number[];
  data: ArrayBufferView;
}

/**
 * Writes `tensors` (name -> Tensor, or RawTensor for a dtype Tensor has no type for) to `file`, in the given order,
 * with optional string metadata. Written to a temporary name of its own and renamed over `file` (atomic on one file
 * system), so a reader never sees half a file, and of two saves to one file at once, the file ends as one of them
 * whole (issue 34: both once wrote `file.<pid>.tmp`, and the file was left unparseable).
 */
export async function save(
  file: string,
  tensors: Record<string, { dtype: string; shape: readonly number[]; data: ArrayBufferView }>,
  metadata?: Record<string, string>,
): Promise<void> {
  expectPath(file, 'file');
  if (typeof tensors !== 'object' || tensors === null) throw typeError('tensors to be an object of Tensors', describe(tensors));
  if (metadata !== undefined) {
    if (typeof metadata !== 'object' || metadata === null) throw typeError('metadata to be an object of strings', describe(metadata));
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') throw typeError(`metadata.${k} to be a string`, describe(v));
  }
  const entries = Object.entries(tensors).map(([name, t]) => {
    if (name === '__metadata__') throw rangeError('a tensor name other than __metadata__', "'__metadata__'");
    if (typeof t !== 'object' || t === null || typedArrayTag(t.data) === undefined)
      throw typeError(`tensors['${name}'] to be a Tensor or { dtype, shape, data }`, describe(t));
    const dtype = (isTensor(t) ? BY_TENSOR_DTYPE[t.dtype] : t.dtype) as SafetensorsDtype;
    if (!Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPES, dtype))
      throw rangeError(
        `tensors['${name}'].dtype to be a safetensors dtype (${Object.keys(SAFETENSORS_DTYPES).join(', ')})`,
        describe(t.dtype),
      );
    if (!Array.isArray(t.shape) || t.shape.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0))
      throw rangeError(`tensors['${name}'].shape to be an array of non-negative integers`, describe(t.shape));
    const elements = t.shape.reduce((a, b) => a * b, 1);
    const byteLength = elements * SAFETENSORS_DTYPES[dtype].bytes;
    if (t.data.byteLength !== byteLength)
      throw rangeError(`tensors['${name}'] to hold ${byteLength} bytes (${dtype} x [${t.shape.join(', ')}])`, `${t.data.byteLength}`);
    return { name, dtype, shape: t.shape, byteLength, data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  });
  const header = encodeHeader(entries, metadata);
  const temporary = `${file}.${process.pid}.${randomBytes(8).toString('hex')}.tmp`;
  const handle = await fs.open(temporary, 'wx').catch((err) => {
    throw fileError(err, file, 'a path whose directory exists and can be written');
  });
  try {
    await handle.write(header, 0, header.length, 0);
    let at = header.length;
    for (const e of entries) {
      for (let done = 0; done < e.byteLength;) {
        const { bytesWritten } = await handle.write(e.data, done, Math.min(e.byteLength - done, 1 << 30), at + done);
        done += bytesWritten;
      }
      at += e.byteLength;
    }
    await handle.close();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.rm(temporary, { force: true });
    throw fileError(err, file, 'a file that can be written');
  }
  await fs.rename(temporary, file).catch(async (err) => {
    await fs.rm(temporary, { force: true });
    throw fileError(err, file, 'a path a file can be renamed to');
  });
}
