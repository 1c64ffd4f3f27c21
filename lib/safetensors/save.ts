/** Writing safetensors files: for fixtures, and for saving a layer's weights. */
import { promises as fs } from 'fs';
import { describe, rangeError, typeError } from '../errors';
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
 * with optional string metadata. Written to a temporary name and renamed, so a reader never sees half a file.
 */
export async function save(
  file: string,
  tensors: Record<string, { dtype: string; shape: readonly number[]; data: ArrayBufferView }>,
  metadata?: Record<string, string>,
): Promise<void> {
  if (typeof file !== 'string') throw typeError('file to be a string', describe(file));
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
    const elements = t.shape.reduce((a, b) => a * b, 1);
    const byteLength = elements * SAFETENSORS_DTYPES[dtype].bytes;
    if (t.data.byteLength !== byteLength)
      throw rangeError(`tensors['${name}'] to hold ${byteLength} bytes (${dtype} x [${t.shape.join(', ')}])`, `${t.data.byteLength}`);
    return { name, dtype, shape: t.shape, byteLength, data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  });
  const header = encodeHeader(entries, metadata);
  const temporary = `${file}.${process.pid}.tmp`;
  const handle = await fs.open(temporary, 'w');
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
    throw err;
  }
  await fs.rename(temporary, file);
}
