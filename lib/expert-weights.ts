import { Activation, SWIGLU_CLAMPED_DEFAULTS, isGated } from './activation';
import { describe, rangeError, typeError } from './errors';
import { WEIGHT_DTYPES, WeightDtype, isKQuant, isQuantDtype } from './weight-dtypes';
import type { NativeExpertSpec, NativeWeight } from './native';
import { GroupSize, QuantizedTensor, checkGroup, defaultGroup, isQuantized } from './quant';
import { Tensor } from './tensor';
import { expectOneOf, expectTensor, float32Data } from './validate';

/**
 * Expert weights in the nn.Linear / Hugging Face layout [out, in]. float32, or float16 / bfloat16 converted
 * exactly to float32 when packed; with weightDtype 'int8' / 'int4', w1, w3 and w2 may also be QuantizedTensors of
 * that dtype and group size (quant.quantize), taken as they are: `ExpertWeights<Tensor | QuantizedTensor>`.
 */
export interface ExpertWeights<W extends Tensor | QuantizedTensor = Tensor> {
  /** [numExperts, dHidden, dModel]: the gate projection (the only up-projection when not gated). */
  w1: W;
  /** [numExperts, dHidden, dModel]: the up projection; required by 'swiglu' and 'geglu', refused otherwise. */
  w3?: W;
  /** [numExperts, dModel, dHidden]: the down projection. */
  w2: W;
  b1?: Tensor; // [numExperts, dHidden]
  b3?: Tensor; // [numExperts, dHidden]
  b2?: Tensor; // [numExperts, dModel]
}

export { WEIGHT_DTYPES } from './weight-dtypes';
export type { WeightDtype } from './weight-dtypes';

/** The expert weights a layer or PackedExperts accepts: Tensors, or QuantizedTensors for int8 / int4. */
export type AnyExpertWeights = ExpertWeights<Tensor | QuantizedTensor>;

export interface ExpertShape {
  numExperts: number;
  dModel: number;
  dHidden: number;
  activation: Activation;
  /** 'swiglu-clamped' only (default SWIGLU_CLAMPED_DEFAULTS). */
  swigluAlpha?: number;
  swigluLimit?: number;
}

const FLOATS = ['float32', 'float16', 'bfloat16'] as const;

/**
 * Checks every expert weight against the shape and returns the spec the binding packs (float32 data, or the codes
 * and scales of QuantizedTensors). weightDtype and groupSize come checked by resolveWeightFormat.
 */
/** The fields of a NativeExpertSpec that describe the experts' shape and format. */
function shapeFields(shape: ExpertShape, weightDtype: WeightDtype, groupSize: GroupSize, downWeightDtype: WeightDtype) {
  const clamped =
    shape.activation === 'swiglu-clamped'
      ? { swigluAlpha: shape.swigluAlpha ?? SWIGLU_CLAMPED_DEFAULTS.alpha, swigluLimit: shape.swigluLimit ?? SWIGLU_CLAMPED_DEFAULTS.limit }
      : {};
  return {
    ...shape,
    ...clamped,
    weightDtype,
    ...(downWeightDtype !== weightDtype ? { downWeightDtype } : {}),
    groupSize: isQuantDtype(weightDtype) && groupSize !== 'row' && !isKQuant(weightDtype) ? groupSize : 0,
  };
}

/** The spec of routed experts read from their expert store (a layer on an ExpertCache): their shape, no arrays. */
export function storedExpertSpec(
  shape: ExpertShape,
  weightDtype: WeightDtype,
  groupSize: GroupSize,
  downWeightDtype: WeightDtype = weightDtype,
): NativeExpertSpec {
  return {
    ...shapeFields(shape, weightDtype, groupSize, downWeightDtype),
    stored: true,
    w1: null,
    w3: null,
    w2: null,
    b1: null,
    b3: null,
    b2: null,
  };
}

export function expertSpec(
  weights: unknown,
  shape: ExpertShape,
  name = 'weights',
  weightDtype: WeightDtype = 'float32',
  groupSize: GroupSize = 32,
  slice?: { first: number; count: number },
  /** w2's dtype where it differs (config.downWeightDtype). */
  downWeightDtype: WeightDtype = weightDtype,
): NativeExpertSpec {
  if (typeof weights !== 'object' || weights === null) throw typeError(`${name} to be an object of Tensors`, describe(weights));
  const w = weights as Partial<Record<keyof ExpertWeights, unknown>>;
  const { dModel: d, dHidden: h, activation } = shape;
  // Expert parallel: the weights of all experts, or of this rank's slice only (told apart by w1's first dimension).
  const rows = (w.w1 as { shape?: unknown } | undefined)?.shape;
  const sliced = slice !== undefined && slice.count !== shape.numExperts && Array.isArray(rows) && rows[0] === slice.count;
  const e = sliced ? slice.count : shape.numExperts;
  const experts = sliced ? `experts ${slice.first}-${slice.first + slice.count - 1} of this rank` : 'numExperts';
  const gated = isGated(activation);
  const big = (key: 'w1' | 'w3' | 'w2', dims: number[], names: string[]): NativeWeight => {
    const value = w[key];
    const dtype = key === 'w2' ? downWeightDtype : weightDtype;
    const option = key === 'w2' && downWeightDtype !== weightDtype ? 'downWeightDtype' : 'weightDtype';
    if (!isQuantized(value)) {
      const t = expectTensor(value, `${name}.${key}`, FLOATS, dims, names);
      // 16-bit weights go over as they are and are widened row by row while packing: no float32 copy of them all.
      if (t.dtype === 'float16' || t.dtype === 'bfloat16') return { bits: t.data as Uint16Array, format: t.dtype };
      return float32Data(t);
    }
    const where = `${name}.${key}`;
    if (!isQuantDtype(dtype))
      throw typeError(
        `${where} to be a Tensor (${option} '${dtype}'; QuantizedTensors need a quantized weightDtype: int8, int4, q4_k, q5_k, q6_k)`,
        'a QuantizedTensor',
      );
    if (value.dtype !== dtype) throw rangeError(`${where}.dtype = '${dtype}' (the ${option})`, `'${value.dtype}'`);
    if (value.shape.length !== dims.length || value.shape.some((s, i) => s !== dims[i]))
      throw rangeError(`${where}.shape = [${dims.join(', ')}] ([${names.join(', ')}])`, `[${value.shape.join(', ')}]`);
    const k = dims[dims.length - 1];
    const g = groupSize === 'row' ? k : groupSize;
    if (value.groupSize !== g)
      throw rangeError(`${where}.groupSize = ${g} (the layer's groupSize${groupSize === 'row' ? " 'row'" : ''})`, `${value.groupSize}`);
    return { codes: value.codes, scales: value.scales };
  };
  const bias = (key: 'b1' | 'b3' | 'b2', dims: number[], names: string[]) =>
    w[key] === undefined || w[key] === null ? null : float32Data(expectTensor(w[key], `${name}.${key}`, FLOATS, dims, names));
  if (!gated && w.w3 !== undefined && w.w3 !== null)
    throw rangeError(`no ${name}.w3 (activation '${activation}' is not gated)`, describe(w.w3));
  if (!gated && w.b3 !== undefined && w.b3 !== null)
    throw rangeError(`no ${name}.b3 (activation '${activation}' is not gated)`, describe(w.b3));
  if (gated && (w.w3 === undefined || w.w3 === null))
    throw typeError(`${name}.w3 to be a Tensor [${e}, ${h}, ${d}] (required by the gated activation '${activation}')`, describe(w.w3));
  return {
    ...shapeFields(shape, weightDtype, groupSize, downWeightDtype),
    w1: big('w1', [e, h, d], [experts, 'dHidden', 'dModel']),
    w3: gated ? big('w3', [e, h, d], [experts, 'dHidden', 'dModel']) : null,
    w2: big('w2', [e, d, h], [experts, 'dModel', 'dHidden']),
    b1: bias('b1', [e, h], [experts, 'dHidden']),
    b3: gated ? bias('b3', [e, h], [experts, 'dHidden']) : null,
    b2: bias('b2', [e, d], [experts, 'dModel']),
    ...(sliced ? { given: slice.count } : {}),
  };
}

/**
 * A weight dtype and group size as given (`where`: 'config' or 'options'), with defaults, checked: a known dtype, no
 * groupSize unless int8 / int4, and groups that divide each of `dims` ([name, size]).
 */
export function resolveWeightFormat(
  weightDtype: unknown,
  groupSize: unknown,
  where: string,
  dims: [string, number][],
): { weightDtype: WeightDtype; groupSize: GroupSize } {
  const dtype = expectOneOf(weightDtype ?? 'float32', `${where}.weightDtype`, WEIGHT_DTYPES);
  if (!isQuantDtype(dtype)) {
    if (groupSize !== undefined) throw rangeError(`no ${where}.groupSize (weightDtype '${dtype}' is not quantized)`, describe(groupSize));
    return { weightDtype: dtype, groupSize: 32 };
  }
  const g = (groupSize ?? defaultGroup(dtype)) as GroupSize;
  for (const [what, k] of dims) checkGroup(dtype, g, k, `${where}.groupSize (${what} = ${k})`);
  return { weightDtype: dtype, groupSize: g };
}

/**
 * The weightDtype and groupSize that quantized weights imply, for a config or options that name neither: a
 * QuantizedTensor w1 brings its dtype, and its group size ('row' when w1 and w2 each have one scale per row).
 */
export function impliedQuantization(
  weights: unknown,
  weightDtype: unknown,
  groupSize: unknown,
): { weightDtype?: WeightDtype; downWeightDtype?: WeightDtype; groupSize?: GroupSize } | undefined {
  const w = typeof weights === 'object' && weights !== null ? (weights as Partial<Record<'w1' | 'w2', unknown>>) : {};
  if (weightDtype !== undefined || !isQuantized(w.w1)) return undefined;
  const w1 = w.w1;
  const w2 = isQuantized(w.w2) ? w.w2 : undefined;
  // K-quant blocks of two types (a Q4_K_M layer: q4_k w1 / w3, q6_k w2) imply downWeightDtype too
  if (isKQuant(w1.dtype) && w2 && isKQuant(w2.dtype) && w2.dtype !== w1.dtype) return { weightDtype: w1.dtype, downWeightDtype: w2.dtype };
  if (groupSize !== undefined) return { weightDtype: w1.dtype };
  // One group size for both matrices; where w1's and w2's differ, each has one scale per row (or it is refused).
  const same = !w2 || w2.groupSize === w1.groupSize;
  return { weightDtype: w1.dtype, groupSize: same && w1.groupSize % 8 === 0 ? w1.groupSize : 'row' };
}
