import { ACTIVATIONS, Activation, isGated } from './activation';
import { describe, typeError } from './errors';
import { MAX_DIM, MAX_EXPERTS, expectInteger, expectNonNegative, expectOneOf } from './validate';

/** The dimensions these estimates read, checked (they were multiplied as given: NaN, -1 and Infinity came back). */
function dims(config: unknown, keys: readonly ('dModel' | 'dHidden' | 'numExperts' | 'topK')[]) {
  if (typeof config !== 'object' || config === null) throw typeError('config to be an object', describe(config));
  const c = config as Record<string, unknown>;
  const out: Record<string, number> = {};
  for (const key of keys)
    out[key] = expectInteger(c[key], `config.${key}`, 1, key === 'numExperts' || key === 'topK' ? MAX_EXPERTS : MAX_DIM);
  const activation = expectOneOf(c.activation ?? 'swiglu', 'config.activation', ACTIVATIONS);
  return { ...out, up: isGated(activation) ? 2 : 1 } as Record<string, number> & { up: number };
}

/** Floating-point operations of one forward (multiply-add = 2): router, the routed experts' GEMMs. */
export function layerFlops(
  config: { dModel: number; dHidden: number; numExperts: number; topK: number; activation?: Activation },
  tokens: number,
): number {
  const { dModel: d, dHidden: h, numExperts: e, topK: k, up } = dims(config, ['dModel', 'dHidden', 'numExperts', 'topK']);
  expectNonNegative(tokens, 'tokens');
  return 2 * tokens * d * e + tokens * k * (2 * d * h * up + 2 * h * d);
}

/** Bytes of expert weights (float32) that `activeExperts` experts stream per forward: the decode roofline. */
export function activeWeightBytes(config: { dModel: number; dHidden: number; activation?: Activation }, activeExperts: number): number {
  const { dModel, dHidden, up } = dims(config, ['dModel', 'dHidden']);
  expectNonNegative(activeExperts, 'activeExperts');
  return activeExperts * (up + 1) * dModel * dHidden * 4;
}
