/**
 * The weight dtypes, one entry each: what the TypeScript side knows of a dtype (its bits per stored weight, and for
 * the block-quantized ones the typed array of their codes and codes per byte). The core's table (native/src/core/weight_formats.cpp) has one entry per
 * name here with the same bits; test/core-tables.test.ts compares them. docs/precision.md says what each rounds.
 */
export const WEIGHT_DTYPE_TABLE = {
  float32: { bits: 32 },
  bfloat16: { bits: 16 },
  float16: { bits: 16 },
  int8: { bits: 8, quant: { codes: 'Int8Array', codesPerByte: 1 } },
  int4: { bits: 4, quant: { codes: 'Uint8Array', codesPerByte: 2 } },
  // llama.cpp's K-quants (GGUF Q4_K, Q5_K, Q6_K): codes are its super-blocks of 256 weights, `block` bytes each,
  // with their scales inside (bits: the codes' own, as the core's table counts them).
  q4_k: { bits: 4, quant: { codes: 'Uint8Array', codesPerByte: 2, block: 144 } },
  q5_k: { bits: 5, quant: { codes: 'Uint8Array', codesPerByte: 1, block: 176 } },
  q6_k: { bits: 6, quant: { codes: 'Uint8Array', codesPerByte: 1, block: 210 } },
} as const;

/** Weights per K-quant super-block. */
export const K_QUANT_BLOCK = 256;

/**
 * How packed expert weights are stored: 'float32' (the default); 'bfloat16' or 'float16' (rounded to nearest even
 * when packed, half the bytes; float16 refuses weights past 65504); 'int8' or 'int4' (block-quantized in groups
 * of groupSize inputs with a float16 scale each, lib/quant.ts); 'q4_k', 'q5_k', 'q6_k' (llama.cpp's K-quants, as GGUF
 * files hold them). The router stays float32.
 */
export type WeightDtype = keyof typeof WEIGHT_DTYPE_TABLE;
export const WEIGHT_DTYPES = Object.freeze(Object.keys(WEIGHT_DTYPE_TABLE)) as readonly WeightDtype[];

/** The block-quantized dtypes (codes plus a float16 scale per group). */
export type QuantDtype = { [D in WeightDtype]: (typeof WEIGHT_DTYPE_TABLE)[D] extends { quant: object } ? D : never }[WeightDtype];
export const QUANT_DTYPES = Object.freeze(WEIGHT_DTYPES.filter((d) => 'quant' in WEIGHT_DTYPE_TABLE[d])) as readonly QuantDtype[];

/** Whether `name` is an entry of the table (not a name of Object.prototype's). */
function known(name: string): name is WeightDtype {
  return Object.prototype.hasOwnProperty.call(WEIGHT_DTYPE_TABLE, name);
}

/** Whether `dtype` is block-quantized (false for a name that is not a dtype: callers check names elsewhere). */
export function isQuantDtype(dtype: WeightDtype): dtype is QuantDtype {
  return known(dtype) && 'quant' in WEIGHT_DTYPE_TABLE[dtype];
}

/** Whether `dtype` is one of llama.cpp's K-quants (codes are super-blocks of 256 weights with their own scales). */
export function isKQuant(dtype: WeightDtype): boolean {
  const entry = known(dtype) ? (WEIGHT_DTYPE_TABLE[dtype] as { quant?: object }) : undefined;
  return entry?.quant !== undefined && 'block' in entry.quant;
}

/** Bytes of codes in a row of k weights of a quantized dtype. */
export function codeBytes(dtype: QuantDtype, k: number): number {
  const q = WEIGHT_DTYPE_TABLE[dtype].quant;
  return 'block' in q ? (k / K_QUANT_BLOCK) * q.block : k / q.codesPerByte;
}

/** float16 scales in a row of k weights in groups of g: none for the K-quants. */
export function scalesPerRow(dtype: QuantDtype, k: number, g: number): number {
  return isKQuant(dtype) ? 0 : k / g;
}

/** A quantized dtype's code facts. */
export function quantFacts(dtype: QuantDtype): (typeof WEIGHT_DTYPE_TABLE)[QuantDtype]['quant'] {
  return WEIGHT_DTYPE_TABLE[dtype].quant;
}

/**
 * Bytes per weight once packed, for the memory limit's estimates: the codes, and for quantized dtypes a float16
 * scale per 16 weights (the size at groups of 16; groups of 8 hold a little more, groups of 32 less).
 */
export function packedBytesPerWeight(dtype: WeightDtype): number {
  if (!known(dtype)) return 4; // (a bad name: refused elsewhere)
  // K-quant panels (core/weight_formats.h, KPanel): codes as int4 nibbles (q4_k) or bytes, the blocks' factors
  if (isKQuant(dtype)) return { q4_k: 148 / 256, q5_k: 276 / 256, q6_k: 274 / 256 }[dtype as 'q4_k' | 'q5_k' | 'q6_k'];
  return WEIGHT_DTYPE_TABLE[dtype].bits / 8 + (isQuantDtype(dtype) ? 2 / 16 : 0);
}
