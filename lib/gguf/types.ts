/**
 * ggml's tensor types as GGUF files number them (ggml.h's `enum ggml_type`): the block of values each stores
 * together and its bytes (ggml.c's type traits, printed by `ggml_dequant sizes` from benchmarks/peers/ggml). A
 * tensor's byte size is checked against these before anything of it is read; the library computes with some
 * (GGUF_KEPT_TYPES) and converts or refuses the others by name.
 */

export interface GgmlType {
  id: number;
  name: string;
  /** Values per block along a row (ne[0] must be a multiple). */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

const TABLE: readonly [number, string, number, number][] = [
  [0, 'F32', 1, 4],
  [1, 'F16', 1, 2],
  [2, 'Q4_0', 32, 18],
  [3, 'Q4_1', 32, 20],
  [6, 'Q5_0', 32, 22],
  [7, 'Q5_1', 32, 24],
  [8, 'Q8_0', 32, 34],
  [9, 'Q8_1', 32, 36],
  [10, 'Q2_K', 256, 84],
  [11, 'Q3_K', 256, 110],
  [12, 'Q4_K', 256, 144],
  [13, 'Q5_K', 256, 176],
  [14, 'Q6_K', 256, 210],
  [15, 'Q8_K', 256, 292],
  [16, 'IQ2_XXS', 256, 66],
  [17, 'IQ2_XS', 256, 74],
  [18, 'IQ3_XXS', 256, 98],
  [19, 'IQ1_S', 256, 50],
  [20, 'IQ4_NL', 32, 18],
  [21, 'IQ3_S', 256, 110],
  [22, 'IQ2_S', 256, 82],
  [23, 'IQ4_XS', 256, 136],
  [24, 'I8', 1, 1],
  [25, 'I16', 1, 2],
  [26, 'I32', 1, 4],
  [27, 'I64', 1, 8],
  [28, 'F64', 1, 8],
  [29, 'IQ1_M', 256, 56],
  [30, 'BF16', 1, 2],
  [34, 'TQ1_0', 256, 54],
  [35, 'TQ2_0', 256, 66],
  [39, 'MXFP4', 32, 17],
  [40, 'NVFP4', 64, 36],
  [41, 'Q1_0', 128, 18],
  [42, 'Q2_0', 64, 18],
];

/** Every type by id. */
export const GGML_TYPES: ReadonlyMap<number, GgmlType> = new Map(
  TABLE.map(([id, name, blockSize, typeSize]) => [id, Object.freeze({ id, name, blockSize, typeSize })]),
);

/** A type's name (GGML_TYPES' spelling); the library's type names. */
export type GgmlTypeName = (typeof TABLE)[number][1];

/** The type called `name` ('Q4_K'), or undefined. */
export function ggmlType(name: string): GgmlType | undefined {
  for (const t of GGML_TYPES.values()) if (t.name === name) return t;
  return undefined;
}

/** Bytes of a tensor of `values` values whose rows are whole blocks of `type`. */
export function tensorBytes(type: GgmlType, values: number): number {
  return (values / type.blockSize) * type.typeSize;
}
