import { rangeError } from '../errors';
import { expectSeed } from '../tensor';
import { Random } from '../random';
import { expectBoolean, expectInteger, expectOneOf, expectOptions } from '../validate';
import { checkCapacityFactor, expertCapacity } from './capacity';
import {
  GateResult,
  Matrix,
  TieBreak,
  checkGate,
  checkGrad,
  checkMatrix,
  coreGateBase,
  countPerExpert,
  kept,
  madeGate,
  rankTop,
  selectedSoftmaxBackward,
  softmaxRow,
} from './common';
import { TIE_BREAKS } from './top-k';
import { routingRule } from './rule';

export interface GShardTop2Options {
  /** Per-group capacity = 2S/E x capacityFactor (default 1). */
  capacityFactor?: number;
  /** Tokens per group S (default: the whole batch is one group). */
  groupSize?: number;
  /** Keep the second expert only with probability min(1, 2 g2) (default true). */
  randomRouting?: boolean;
  /** Seed of the random-routing draws, one U(0, 1) per token in token order. */
  seed?: number;
  tieBreak?: TieBreak;
}

export interface GShardTop2Gate extends GateResult {
  probs: Float64Array;
  /** The per-group capacity of the last group (all groups have it when groupSize divides tokens). */
  capacity: number;
  /** @internal */
  saved: { selected: Int32Array; selectedWeights: Float64Array };
}

/**
 * GShard's top-2 gating (Lepikhin et al. 2020, Algorithm 1): softmax, top-2, g1 and g2 renormalised to sum to
 * 1; within each group of S tokens, every first choice is served in token order while its expert has fewer
 * than C = 2S/E x capacityFactor tokens, then every second choice the same way, kept only when
 * 2 g2 > U(0, 1). Over-capacity and randomly dropped slots get expert -1 and weight 0.
 */
export function gshardTop2(logits: Matrix, options: GShardTop2Options = {}): GShardTop2Gate {
  options = expectOptions(options, 'options') as GShardTop2Options;
  const { data, tokens, numExperts: n } = checkMatrix(logits, 'logits');
  if (n < 2) throw rangeError('at least 2 experts for top-2 gating', `${n}`);
  const capacityFactor = checkCapacityFactor(options.capacityFactor ?? 1);
  const groupSize = expectInteger(options.groupSize ?? tokens, 'groupSize', 1);
  const randomRouting = expectBoolean(options.randomRouting ?? true, 'randomRouting');
  const tieBreak = expectOneOf(options.tieBreak ?? 'lower', 'tieBreak', TIE_BREAKS);
  const rng = new Random(expectSeed(options.seed ?? 0, 'options.seed'));

  const probs = new Float64Array(tokens * n);
  const experts = new Int32Array(tokens * 2);
  const weights = new Float64Array(tokens * 2);
  for (let t = 0; t < tokens; t++) {
    const p = softmaxRow(data, t, n, probs.subarray(t * n, (t + 1) * n));
    const [e1, e2] = rankTop(data, t * n, n, 2, tieBreak);
    const sum = p[e1] + p[e2];
    experts[2 * t] = e1;
    experts[2 * t + 1] = e2;
    weights[2 * t] = p[e1] / sum;
    weights[2 * t + 1] = p[e2] / sum;
  }
  const selected = Int32Array.from(experts);
  const selectedWeights = weights.slice();
  const coin = Float64Array.from({ length: tokens }, () => rng.uniform());
  let dropped = 0;
  let capacity = 0;
  const drop = (s: number) => {
    experts[s] = -1;
    weights[s] = 0;
    dropped++;
  };
  for (let g0 = 0; g0 < tokens; g0 += groupSize) {
    const g1 = Math.min(tokens, g0 + groupSize);
    capacity = expertCapacity(g1 - g0, n, 2, capacityFactor);
    const count = new Int32Array(n);
    for (let t = g0; t < g1; t++) {
      if (count[experts[2 * t]] < capacity) count[experts[2 * t]]++;
      else drop(2 * t);
    }
    for (let t = g0; t < g1; t++) {
      const e = experts[2 * t + 1];
      if (count[e] < capacity && (!randomRouting || 2 * weights[2 * t + 1] > coin[t])) count[e]++;
      else drop(2 * t + 1);
    }
  }
  return madeGate({
    kind: 'gshardTop2',
    topK: 2,
    experts,
    weights,
    tokensPerExpert: countPerExpert(experts, n),
    dropped,
    tokens,
    numExperts: n,
    probs,
    capacity,
    saved: { selected, selectedWeights },
  });
}

/** dL/dlogits [T, E] from dL/dweights [T * 2], with the dropping decisions held fixed. */
export function gshardTop2Backward(gate: GShardTop2Gate, gradWeights: ArrayLike<number>): Float64Array {
  checkGate(gate, 'gshardTop2', 'gshardTop2');
  return selectedSoftmaxBackward(gate, gate.saved.selected, gate.saved.selectedWeights, checkGrad(gradWeights, gate));
}

export const gshardTop2Rule = routingRule<{ kind: 'gshardTop2'; capacityFactor?: number; groupSize?: number; randomRouting?: boolean }>({
  kind: 'gshardTop2',
  impliedTopK: () => 2,
  fromCore: (g): GShardTop2Gate =>
    madeGate<GShardTop2Gate>({
      ...coreGateBase(g),
      kind: 'gshardTop2',
      probs: kept(g.probs, 'probs'),
      capacity: g.capacity,
      saved: { selected: kept(g.selected, 'selected'), selectedWeights: kept(g.selectedWeights, 'selectedWeights') },
    }),
  backward: (gate, grad) => ({ gradLogits: gshardTop2Backward(gate as GShardTop2Gate, grad) }),
});
