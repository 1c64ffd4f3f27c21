import { expectOneOf, expectOptions } from '../validate';
import { checkCapacityFactor, expertCapacity } from './capacity';
import {
  GateResult,
  Matrix,
  TieBreak,
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
import { TIE_BREAKS } from './top-k';
import { routingRule } from './rule';

export interface ExpertChoiceOptions {
  /** Average experts per token c; each expert takes C = ceil(T c / E) tokens (Zhou et al. use c = 2, the default). */
  capacityFactor?: number;
  /** Among tokens with equal scores an expert takes the lower token index (default) or the higher one. */
  tieBreak?: TieBreak;
}

export interface ExpertChoiceGate extends GateResult {
  probs: Float64Array;
  /** Tokens each expert took. */
  capacity: number;
  /** Tokens that no expert took (their output is zero; the residual is the caller's). */
  droppedTokens: number;
}

/**
 * Expert-choice routing (Zhou et al. 2022): S = softmax(x W_g^T) over experts; each expert takes its top C
 * tokens by S[:, e], so a token may get zero or several experts. Returned token-major like the other routers:
 * topK is the most experts any token got, unused slots are -1 with weight 0, and the kernels skip them.
 */
export function expertChoice(logits: Matrix, options: ExpertChoiceOptions = {}): ExpertChoiceGate {
  options = expectOptions(options, 'options') as ExpertChoiceOptions;
  const { data, tokens, numExperts: n } = checkMatrix(logits, 'logits');
  const capacityFactor = checkCapacityFactor(options.capacityFactor ?? 2);
  const tieBreak = expectOneOf(options.tieBreak ?? 'lower', 'tieBreak', TIE_BREAKS);
  const probs = softmaxRows(data, tokens, n);
  const capacity = Math.min(tokens, expertCapacity(tokens, n, 1, capacityFactor));
  const chosen: number[][] = Array.from({ length: tokens }, () => []);
  for (let e = 0; e < n; e++) for (const t of rankTop(probs, e, tokens, capacity, tieBreak, undefined, n)) chosen[t].push(e);
  const k = Math.max(1, ...chosen.map((c) => c.length));
  const experts = new Int32Array(tokens * k).fill(-1);
  const weights = new Float64Array(tokens * k);
  let droppedTokens = 0;
  chosen.forEach((list, t) => {
    if (list.length === 0) droppedTokens++;
    list.sort((a, b) => probs[t * n + b] - probs[t * n + a] || a - b);
    list.forEach((e, j) => {
      experts[t * k + j] = e;
      weights[t * k + j] = probs[t * n + e];
    });
  });
  return madeGate({
    kind: 'expertChoice',
    topK: k,
    experts,
    weights,
    tokensPerExpert: new Int32Array(n).fill(capacity),
    dropped: 0,
    tokens,
    numExperts: n,
    probs,
    capacity,
    droppedTokens,
  });
}

/** dL/dlogits [T, E] from dL/dweights [T * topK] (the softmax Jacobian; the choices held fixed). */
export function expertChoiceBackward(gate: ExpertChoiceGate, gradWeights: ArrayLike<number>): Float64Array {
  checkGate(gate, 'expertChoice', 'expertChoice');
  return fullSoftmaxBackward(gate, gate.probs, checkGrad(gradWeights, gate));
}

export const expertChoiceRule = routingRule<{ kind: 'expertChoice'; capacityFactor?: number }>({
  kind: 'expertChoice',
  impliedTopK: () => 'experts choose',
  fromCore: (g): ExpertChoiceGate =>
    madeGate<ExpertChoiceGate>({
      ...coreGateBase(g),
      kind: 'expertChoice',
      probs: kept(g.probs, 'probs'),
      capacity: g.capacity,
      droppedTokens: g.droppedTokens,
    }),
  backward: (gate, grad) => ({ gradLogits: expertChoiceBackward(gate as ExpertChoiceGate, grad) }),
});
