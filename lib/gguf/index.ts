/** The `gguf` namespace of the public API: read and write llama.cpp's GGUF files, widen its block types. */
export { GgufFile, GGUF_VALUE_TYPES, isGgufFile } from './file';
export type { GgufMetadataEntry, GgufTensorInfo, GgufValue, GgufValueType } from './file';
export { save } from './save';
export type { GgufBlocks, GgufMetadataInput, GgufSaveInput, GgufTyped } from './save';
export { GGML_TYPES, ggmlType } from './types';
export type { GgmlType } from './types';
export { DEQUANTIZABLE, dequantizeBlocks, toFloat32 } from './dequantize';

import { Tensor } from '../tensor';
import { toFloat32 } from './dequantize';
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
  return Tensor.from(toFloat32(info.type, bytes, values, `tensor '${name}' of ${file.path}`), info.shape);
}
