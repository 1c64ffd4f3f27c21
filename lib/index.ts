/** moe-kernels: Mixture-of-Experts layers for Node.js, with SIMD C++ kernels. Public exports only. */
export { Tensor, halfToFloat, isTensor } from './tensor';
export type { DType, DataOf } from './tensor';
export { ACTIVATIONS, isGated } from './activation';
export type { Activation } from './activation';
export type { ExpertWeights } from './expert-weights';
export { MoELayer } from './layer';
export type { MoEConfig, MoEWeights, MoEOutput, Routing, ForwardOptions } from './layer';
export type { RouterConfig, RouterKind } from './router-config';
export { backendInfo, setThreads } from './backend';
export type { BackendInfo } from './backend';
export { ERROR_PREFIX } from './errors';
export { layerFlops, activeWeightBytes } from './flops';
import * as kernels from './kernels';
import * as reference from './reference';
import * as gating from './gating';
import * as losses from './losses';
export { kernels, reference, gating, losses };
export type { DispatchPlan, TopKResult, PackedExperts } from './kernels';
