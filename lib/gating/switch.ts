import { expectOneOf, expectOptions } from '../validate';
import { DropPolicy, applyCapacity, checkCapacityFactor, expertCapacity } from './capacity';
import {
  GateResult,
  Matrix,
  checkGate,
  checkGrad,
  checkMatrix,
  coreGateBase,
  countPerExpert,
  kept,
  fullSoftmaxBackward,
  madeGate,
  rankTop,
  softmaxRows,
} from './common';
import { DROP_POLICIES } from './top-k';
import { routingRule } from './rule';

export interface SwitchOptions {
  /** Expert capacity = tokens / experts x capacityFactor (Fedus et al. eq. 3); omit for no dropping. */
  capacityFactor?: number;
  dropPolicy?: DropPolicy;
}

export interface SwitchGate extends GateResult {
  probs: Float64Array;
}

/**
 * Switch routing (Fedus et al. 2021 eqs. 1-2): top-1 of the full softmax; the weight is that probability,
 * not renormalised. Ties to the lower expert index.
 */
export function switchTop1(logits: Matrix, options: SwitchOptions = {}): SwitchGate {
  options = expectOptions(options, 'options') as SwitchOptions;
  const { data, tokens, numExperts: n } = checkMatrix(logits, 'logits');
  const dropPolicy = expectOneOf(options.dropPolicy ?? 'position', 'dropPolicy', DROP_POLICIES);
  if (options.capacityFactor !== undefined) checkCapacityFactor(options.capacityFactor);
  const probs = softmaxRows(data, tokens, n);
  const experts = new Int32Array(tokens);
  const weights = new Float64Array(tokens);
  for (let t = 0; t < tokens; t++) {
    const [e] = rankTop(data, t * n, n, 1);
    experts[t] = e;
    weights[t] = probs[t * n + e];
  }
  const dropped =
    options.capacityFactor === undefined
      ? 0
      : applyCapacity(experts, weights, weights.slice(), tokens, 1, n, expertCapacity(tokens, n, 1, options.capacityFactor), dropPolicy);
  return madeGate({
    kind: 'switch',
    topK: 1,
    experts,
    weights,
    tokensPerExpert: countPerExpert(experts, n),
    dropped,
    tokens,
    numExperts: n,
    probs,
  });
}

/** dL/dlogits [T, E] from dL/dweights [T]: p_i (G delta_i,sel - p_sel G); dropped tokens get none. */
export function switchTop1Backward(gate: SwitchGate, gradWeights: ArrayLike<number>): Float64Array {
  checkGate(gate, 'switch', 'switchTop1');
  return fullSoftmaxBackward(gate, gate.probs, checkGrad(gradWeights, gate));
}

export const switchRule = routingRule<{ kind: 'switch'; capacityFactor?: number; dropPolicy?: DropPolicy }>({
  kind: 'switch',
  impliedTopK: () => 1,
  fromCore: (g): SwitchGate => madeGate<SwitchGate>({ ...coreGateBase(g), kind: 'switch', probs: kept(g.probs, 'probs') }),
  backward: (gate, grad) => ({ gradLogits: switchTop1Backward(gate as SwitchGate, grad) }),
});
