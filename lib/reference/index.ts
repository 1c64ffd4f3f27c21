export { erf, gelu, geluTanh, relu, sigmoid, silu, activationFunction } from './activation';
export { referenceExpert, referenceMoE, referenceRouterLogits, referenceTopK } from './moe';
export type { ReferenceConfig, ReferenceWeights } from './moe';
