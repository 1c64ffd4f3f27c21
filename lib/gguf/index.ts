/** The `gguf` namespace of the public API: read and write llama.cpp's GGUF files, widen its block types. */
export { GgufFile, GGUF_VALUE_TYPES, isGgufFile } from './file';
export type { GgufMetadataEntry, GgufTensorInfo, GgufValue, GgufValueType } from './file';
export { save } from './save';
export type { GgufBlocks, GgufMetadataInput, GgufSaveInput, GgufTyped } from './save';
export { GGML_TYPES, ggmlType } from './types';
export type { GgmlType } from './types';
export { DEQUANTIZABLE, dequantizeBlocks } from './dequantize';

import { Tensor } from '../tensor';
import { halfToFloat } from '../tensor';
import { dequantizeBlocks } from './dequantize';
import { GgufFile } from './file';

/** Opens a .gguf file (GgufFile.open). */
export function open(path: string): Promise<GgufFile> {
  return GgufFile.open(path);
}

/** A tensor of an open file as float32 values (F32 as is, F16 / BF16 widened, block types as ggml dequantizes them). */
export async function readFloat32(file: GgufFile, name: string, options: { signal?: AbortSignal } = {}): Promise<Tensor<'float32'>> {
  const info = file.info(name);
  const bytes = await file.range(name, 0, info.byteLength, options);
  const values = info.shape.reduce((a, b) => a * b, 1);
  let data: Float32Array;
  if (info.type.name === 'F32') data = new Float32Array(bytes.buffer, bytes.byteOffset, values);
  else if (info.type.name === 'F16' || info.type.name === 'BF16') {
    const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, values);
    data = new Float32Array(values);
    if (info.type.name === 'F16') for (let i = 0; i < values; i++) data[i] = halfToFloat(bits[i]);
    else new Uint32Array(data.buffer).forEach((_, i, u) => (u[i] = bits[i] << 16));
  } else data = dequantizeBlocks(info.type, bytes, values, `tensor '${name}' of ${file.path}`);
  return Tensor.from(data, info.shape);
}
