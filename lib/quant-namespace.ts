/** The `quant` namespace of the public API (lib/quant.ts has the formats). */
export { quantize, dequantize, isQuantized, QuantizedTensor, QUANT_DTYPES } from './quant';
export type { QuantDtype, GroupSize, QuantizeOptions, QuantizedTensorInit } from './quant';
