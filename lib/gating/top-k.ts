import { rangeError } from '../errors';
import { expectBoolean, expectInteger, expectOneOf, expectOptions } from '../validate';
import { DropPolicy, applyCapacity, checkCapacityFactor, expertCapacity } from './capacity';
import {
  GateResult,
  Matrix,
  TieBreak,
  checkGate,
  checkGrad,
  checkMatrix,
  countPerExpert,
  fullSoftmaxBackward,
  madeGate,
  rankTop,
  selectedSoftmaxBackward,
  softmaxRow,
} from './common';
import { BuiltInRouting, routingRule } from './rule';

export interface TopKOptions {
  k: number;
  /**
   * 'softmax-topk' (default; Hugging Face Mixtral): softmax over all experts, then the top k, renormalised
   * when `normalize` (default true). 'topk-softmax' (Shazeer et al. eqs. 3 and 5, KeepTopK then softmax;
   * the Mistral reference): a softmax over the k kept logits. The two agree in exact arithmetic when
   * normalised.
   */
  order?: 'softmax-topk' | 'topk-softmax';
  normalize?: boolean;
  /** Equal logits go to the lower expert index (default, like torch) or the higher one (onnxruntime). */
  tieBreak?: TieBreak;
  /** Drop slots beyond expertCapacity(T, E, k, capacityFactor); omit for dropless routing. */
  capacityFactor?: number;
  dropPolicy?: DropPolicy;
}

export interface TopKGate extends GateResult {
  /** [T, E] softmax over all experts. */
  probs: Float64Array;
  /** @internal for the backward pass: the experts before dropping and the weights over them. */
  saved: { selected: Int32Array; selectedWeights: Float64Array; normalized: boolean };
}

export const TIE_BREAKS = ['lower', 'higher'] as const;
export const DROP_POLICIES = ['position', 'score'] as const;

/** Top-k softmax routing. */
export function topK(logits: Matrix, options: TopKOptions): TopKGate {
  options = expectOptions(options, 'options') as TopKOptions;
  const { data, tokens, numExperts } = checkMatrix(logits, 'logits');
  const k = expectInteger(options?.k, 'k', 1, numExperts);
  const order = expectOneOf(options.order ?? 'softmax-topk', 'order', ['softmax-topk', 'topk-softmax'] as const);
  if (order === 'topk-softmax' && options.normalize === false)
    throw rangeError("normalize: false only with order 'softmax-topk' (topk-softmax always sums to 1)", 'order topk-softmax');
  const normalized = expectBoolean(options.normalize ?? true, 'normalize');
  const tieBreak = expectOneOf(options.tieBreak ?? 'lower', 'tieBreak', TIE_BREAKS);
  const dropPolicy = expectOneOf(options.dropPolicy ?? 'position', 'dropPolicy', DROP_POLICIES);
  if (options.capacityFactor !== undefined) checkCapacityFactor(options.capacityFactor);

  const probs = new Float64Array(tokens * numExperts);
  const experts = new Int32Array(tokens * k);
  const weights = new Float64Array(tokens * k);
  const selectedWeights = new Float64Array(tokens * k);
  for (let t = 0; t < tokens; t++) {
    const p = softmaxRow(data, t, numExperts, probs.subarray(t * numExperts, (t + 1) * numExperts));
    const picked = rankTop(data, t * numExperts, numExperts, k, tieBreak);
    // Over the kept logits: exp(l_i - max) / sum over kept, which is p_i / sum of kept p.
    let kept = 0;
    for (const e of picked) kept += p[e];
    picked.forEach((e, j) => {
      experts[t * k + j] = e;
      selectedWeights[t * k + j] = p[e] / kept;
      weights[t * k + j] = normalized ? p[e] / kept : p[e];
    });
  }
  const selected = Int32Array.from(experts);
  const dropped =
    options.capacityFactor === undefined
      ? 0
      : applyCapacity(
          experts,
          weights,
          weights.slice(),
          tokens,
          k,
          numExperts,
          expertCapacity(tokens, numExperts, k, options.capacityFactor),
          dropPolicy,
        );
  return madeGate({
    kind: 'topK',
    topK: k,
    experts,
    weights,
    tokensPerExpert: countPerExpert(experts, numExperts),
    dropped,
    tokens,
    numExperts,
    probs,
    saved: { selected, selectedWeights, normalized },
  });
}

/** dL/dlogits [T, E] from dL/dweights [T * k] (dropped slots contribute nothing). */
export function topKBackward(gate: TopKGate, gradWeights: ArrayLike<number>): Float64Array {
  checkGate(gate, 'topK', 'topK');
  const grad = checkGrad(gradWeights, gate);
  if (gate.saved.normalized) return selectedSoftmaxBackward(gate, gate.saved.selected, gate.saved.selectedWeights, grad);
  return fullSoftmaxBackward(gate, gate.probs, grad);
}

/** config.router for top-k softmax routing (the default router). */
export interface TopKRouterConfig {
  kind: 'topK';
  order?: 'softmax-topk' | 'topk-softmax';
  normalize?: boolean;
  tieBreak?: TieBreak;
  capacityFactor?: number;
  dropPolicy?: DropPolicy;
}

/** Mixtral's softmax top-k as the native core runs it by itself (every backend). */
export const BUILT_IN_SOFTMAX: BuiltInRouting = { rule: 'softmax', numGroups: 1, topKGroups: 1, routeScale: 1, bias: null };

export const topKRule = routingRule<TopKRouterConfig>({
  kind: 'topK',
  checkConfig: (r) => {
    if (r.order === 'topk-softmax' && r.normalize === false)
      throw rangeError("config.router.normalize: false only with order 'softmax-topk'", "order 'topk-softmax'");
  },
  route: (c) => topK(c.logits, { ...c.router, k: c.topK }),
  backward: (gate, grad) => ({ gradLogits: topKBackward(gate as TopKGate, grad) }),
  // The core's rule: softmax then top-k, ties to the lower index, no capacity.
  builtIn: (r) =>
    (r.order ?? 'softmax-topk') === 'softmax-topk' && (r.tieBreak ?? 'lower') === 'lower' && r.capacityFactor === undefined
      ? BUILT_IN_SOFTMAX
      : undefined,
});
