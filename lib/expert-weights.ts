import { Activation, isGated } from './activation';
import { describe, rangeError, typeError } from './errors';
import type { NativeExpertSpec } from './native';
import { Tensor } from './tensor';
import { expectTensor, float32Data } from './validate';

/**
 * Expert weights in the nn.Linear / Hugging Face layout [out, in]. float32, or float16 / bfloat16 converted
 * exactly to float32 when packed.
 */
export interface ExpertWeights {
  /** [numExperts, dHidden, dModel]: the gate projection (the only up-projection when not gated). */
  w1: Tensor;
  /** [numExperts, dHidden, dModel]: the up projection; required by 'swiglu' and 'geglu', refused otherwise. */
  w3?: Tensor;
  /** [numExperts, dModel, dHidden]: the down projection. */
  w2: Tensor;
  b1?: Tensor; // [numExperts, dHidden]
  b3?: Tensor; // [numExperts, dHidden]
  b2?: Tensor; // [numExperts, dModel]
}

/**
 * How packed expert weights are stored: 'float32' (the default), 'bfloat16' or 'float16' (rounded to nearest even
 * when packed, half the bytes; the kernels widen them exactly and keep activations and sums in float32; float16
 * refuses weights past 65504). The router stays float32. The core's weight-dtype table
 * (native/src/core/weight_formats.cpp) has one entry per name here.
 */
export const WEIGHT_DTYPES = ['float32', 'bfloat16', 'float16'] as const;
export type WeightDtype = (typeof WEIGHT_DTYPES)[number];

export interface ExpertShape {
  numExperts: number;
  dModel: number;
  dHidden: number;
  activation: Activation;
}

const FLOATS = ['float32', 'float16', 'bfloat16'] as const;

/** Checks every expert weight against the shape and returns the spec the binding packs (float32 data). */
export function expertSpec(weights: unknown, shape: ExpertShape, name = 'weights', weightDtype: WeightDtype = 'float32'): NativeExpertSpec {
  if (typeof weights !== 'object' || weights === null) throw typeError(`${name} to be an object of Tensors`, describe(weights));
  const w = weights as Partial<Record<keyof ExpertWeights, unknown>>;
  const { numExperts: e, dModel: d, dHidden: h, activation } = shape;
  const gated = isGated(activation);
  const big = (key: 'w1' | 'w3' | 'w2', dims: number[], names: string[]) =>
    float32Data(expectTensor(w[key], `${name}.${key}`, FLOATS, dims, names));
  const bias = (key: 'b1' | 'b3' | 'b2', dims: number[], names: string[]) =>
    w[key] === undefined || w[key] === null ? null : float32Data(expectTensor(w[key], `${name}.${key}`, FLOATS, dims, names));
  if (!gated && w.w3 !== undefined && w.w3 !== null)
    throw rangeError(`no ${name}.w3 (activation '${activation}' is not gated)`, describe(w.w3));
  if (!gated && w.b3 !== undefined && w.b3 !== null)
    throw rangeError(`no ${name}.b3 (activation '${activation}' is not gated)`, describe(w.b3));
  if (gated && (w.w3 === undefined || w.w3 === null))
    throw typeError(`${name}.w3 to be a Tensor [${e}, ${h}, ${d}] (required by the gated activation '${activation}')`, describe(w.w3));
  return {
    ...shape,
    weightDtype,
    w1: big('w1', [e, h, d], ['numExperts', 'dHidden', 'dModel']),
    w3: gated ? big('w3', [e, h, d], ['numExperts', 'dHidden', 'dModel']) : null,
    w2: big('w2', [e, d, h], ['numExperts', 'dModel', 'dHidden']),
    b1: bias('b1', [e, h], ['numExperts', 'dHidden']),
    b3: gated ? bias('b3', [e, h], ['numExperts', 'dHidden']) : null,
    b2: bias('b2', [e, d], ['numExperts', 'dModel']),
  };
}
