export { erf, gelu, geluTanh, relu, sigmoid, silu, activationFunction } from './activation';
export { referenceExpert, referenceExperts, referenceMoE, referenceRouterLogits, referenceTopK } from './moe';
export { activationDerivative, gatedUnitDerivative, referenceExpertsBackward } from './backward';
export type { ExpertGradients, ReferenceBackward } from './backward';
export {
  argsortDescending,
  referenceCapacity,
  referenceExpertChoice,
  referenceNoisyTopK,
  referenceSigmoidBias,
  referenceTopKRouting,
  rowsOf,
  softmax,
} from './gating';
export type { ReferenceRouting } from './gating';
export type { ReferenceConfig, ReferenceWeights } from './moe';
export { referenceCvSquared, referenceLoad, referenceMixtralLoss, referenceSwitchLoss, referenceZLoss } from './losses';
