import {
  GateResult,
  Matrix,
  checkGate,
  checkGrad,
  checkMatrix,
  coreGateBase,
  fullSoftmaxBackward,
  kept,
  madeGate,
  rankTop,
  softmaxRows,
} from './common';
import { routingRule } from './rule';

export interface SoftGate extends GateResult {
  probs: Float64Array;
}

/**
 * Soft routing: every expert, weighted by the softmax over all of them (Shazeer et al. eq. 2; the seed's
 * "soft routing", k = E). Slots are in descending weight order, ties to the lower index.
 */
export function soft(logits: Matrix): SoftGate {
  const { data, tokens, numExperts: n } = checkMatrix(logits, 'logits');
  const probs = softmaxRows(data, tokens, n);
  const experts = new Int32Array(tokens * n);
  const weights = new Float64Array(tokens * n);
  for (let t = 0; t < tokens; t++)
    rankTop(probs, t * n, n, n).forEach((e, j) => {
      experts[t * n + j] = e;
      weights[t * n + j] = probs[t * n + e];
    });
  return madeGate({
    kind: 'soft',
    topK: n,
    experts,
    weights,
    tokensPerExpert: new Int32Array(n).fill(tokens),
    dropped: 0,
    tokens,
    numExperts: n,
    probs,
  });
}

/** dL/dlogits [T, E]: the softmax Jacobian applied to dL/dweights. */
export function softBackward(gate: SoftGate, gradWeights: ArrayLike<number>): Float64Array {
  checkGate(gate, 'soft', 'soft');
  return fullSoftmaxBackward(gate, gate.probs, checkGrad(gradWeights, gate));
}

export const softRule = routingRule<{ kind: 'soft' }>({
  kind: 'soft',
  impliedTopK: (numExperts) => numExperts,
  fromCore: (g): SoftGate => madeGate<SoftGate>({ ...coreGateBase(g), kind: 'soft', probs: kept(g.probs, 'probs') }),
  backward: (gate, grad) => ({ gradLogits: softBackward(gate as SoftGate, grad) }),
});
