import { describe, typeError } from '../errors';
import { GateResult } from './common';
import { ROUTING_RULES, routingRuleOf } from './registry';

/**
 * The backward pass of whichever rule made `gate` (its descriptor in registry.ts): dL/dlogits [T, E] from
 * dL/dweights [T * topK], plus, for noisy top-k, dL/d(x W_noise^T).
 */
export function backward(gate: GateResult, gradWeights: ArrayLike<number>): { gradLogits: Float64Array; gradNoiseLogits?: Float64Array } {
  const kind = (gate as { kind?: unknown } | null | undefined)?.kind;
  if (typeof kind !== 'string' || !Object.prototype.hasOwnProperty.call(ROUTING_RULES, kind))
    throw typeError('gate to be a router result (with a kind)', describe(gate));
  return routingRuleOf(kind as keyof typeof ROUTING_RULES).backward(gate, gradWeights);
}
