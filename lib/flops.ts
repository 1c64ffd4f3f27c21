import { Activation, isGated } from './activation';

/** Floating-point operations of one forward (multiply-add = 2): router, the routed experts' GEMMs. */
export function layerFlops(
  config: { dModel: number; dHidden: number; numExperts: number; topK: number; activation?: Activation },
  tokens: number,
): number {
  const { dModel: d, dHidden: h, numExperts: e, topK: k } = config;
  const up = isGated(config.activation ?? 'swiglu') ? 2 : 1;
  return 2 * tokens * d * e + tokens * k * (2 * d * h * up + 2 * h * d);
}

/** Bytes of expert weights (float32) that `activeExperts` experts stream per forward: the decode roofline. */
export function activeWeightBytes(config: { dModel: number; dHidden: number; activation?: Activation }, activeExperts: number): number {
  const up = isGated(config.activation ?? 'swiglu') ? 2 : 1;
  return activeExperts * (up + 1) * config.dModel * config.dHidden * 4;
}
