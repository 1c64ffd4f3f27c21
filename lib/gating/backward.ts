import { GateResult } from './common';
import { ruleOfGate } from './registry';

/**
 * The backward pass of whichever rule made `gate` (its descriptor in registry.ts): dL/dlogits [T, E] from
 * dL/dweights [T * topK], plus, for noisy top-k, dL/d(x W_noise^T).
 */
export function backward(gate: GateResult, gradWeights: ArrayLike<number>): { gradLogits: Float64Array; gradNoiseLogits?: Float64Array } {
  return ruleOfGate(gate).backward(gate, gradWeights);
}
