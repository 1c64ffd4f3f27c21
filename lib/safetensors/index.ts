/** The `safetensors` namespace of the public API: read, write and decode Hugging Face checkpoints. */
export { SafetensorsFile } from './file';
export type { ReadOptions } from './file';
export { Checkpoint, INDEX_FILE, SINGLE_FILE } from './checkpoint';
export { save } from './save';
export type { RawTensor } from './save';
export { SAFETENSORS_DTYPES, MAX_HEADER_BYTES } from './format';
export type { SafetensorsDtype, TensorInfo } from './format';
export { fp8ToFloat32, dequantizeBlockFp8, dequantizeMxfp4 } from './dequantize';

import { SafetensorsFile } from './file';
/** Opens one .safetensors file (SafetensorsFile.open). */
export function open(path: string): Promise<SafetensorsFile> {
  return SafetensorsFile.open(path);
}
