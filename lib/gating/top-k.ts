import { describe, rangeError } from '../errors';
import { expectBoolean, expectInteger, expectOneOf, expectOptions } from '../validate';
import { DropPolicy, applyCapacity, checkCapacityFactor, expertCapacity } from './capacity';
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
  /**
   * DeepSeek-V2's group-limited greedy routing (topk_method 'group_limited_greedy'): experts split into numGroups
   * equal groups, each scored by its largest probability; only the topKGroups best groups are eligible (default
   * 1 and 1: no restriction).
   */
  numGroups?: number;
  topKGroups?: number;
  /** Multiplies the final weights (DeepSeek-V2's routed_scaling_factor; default 1). */
  routeScale?: number;
}

/** The group and scale options checked against numExperts and k. */
export function checkTopKGroups(options: { numGroups?: number; topKGroups?: number; routeScale?: number }, n: number, k: number) {
  const numGroups = expectInteger(options.numGroups ?? 1, 'numGroups', 1, n);
  if (n % numGroups !== 0) throw rangeError(`numGroups to divide numExperts = ${n}`, `${numGroups}`);
  const topKGroups = expectInteger(options.topKGroups ?? numGroups, `topKGroups (numGroups = ${numGroups})`, 1, numGroups);
  const eligible = topKGroups * (n / numGroups);
  if (k > eligible) throw rangeError(`k at most topKGroups x experts per group = ${eligible}`, `${k}`);
  const routeScale = options.routeScale ?? 1;
  if (typeof routeScale !== 'number' || !Number.isFinite(routeScale) || routeScale <= 0)
    throw rangeError('routeScale to be a finite number > 0', describe(routeScale));
  return { numGroups, topKGroups, routeScale };
}

export interface TopKGate extends GateResult {
  /** [T, E] softmax over all experts. */
  probs: Float64Array;
  /** @internal for the backward pass: the experts before dropping and the weights over them. */
  saved: { selected: Int32Array; selectedWeights: Float64Array; normalized: boolean; routeScale: number };
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
  const { numGroups, topKGroups, routeScale } = checkTopKGroups(options, numExperts, k);
  const groupSize = numExperts / numGroups;
  const groupScore = new Float64Array(numGroups);

  const probs = new Float64Array(tokens * numExperts);
  const experts = new Int32Array(tokens * k);
  const weights = new Float64Array(tokens * k);
  const selectedWeights = new Float64Array(tokens * k);
  for (let t = 0; t < tokens; t++) {
    const p = softmaxRow(data, t, numExperts, probs.subarray(t * numExperts, (t + 1) * numExperts));
    let allowed: ((e: number) => boolean) | undefined;
    if (numGroups > 1) {
      // A group's score is its best expert's probability (the largest logit: softmax is monotone).
      for (let g = 0; g < numGroups; g++) groupScore[g] = Math.max(...p.subarray(g * groupSize, (g + 1) * groupSize));
      const keep = new Set(rankTop(groupScore, 0, numGroups, topKGroups, 'lower'));
      allowed = (e) => keep.has(Math.floor(e / groupSize));
    }
    const picked = rankTop(data, t * numExperts, numExperts, k, tieBreak, allowed);
    // Over the kept logits: exp(l_i - max) / sum over kept, which is p_i / sum of kept p.
    let kept = 0;
    for (const e of picked) kept += p[e];
    picked.forEach((e, j) => {
      experts[t * k + j] = e;
      selectedWeights[t * k + j] = p[e] / kept;
      weights[t * k + j] = (normalized ? p[e] / kept : p[e]) * routeScale;
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
    saved: { selected, selectedWeights, normalized, routeScale },
  });
}

/** dL/dlogits [T, E] from dL/dweights [T * k] (dropped slots contribute nothing). */
export function topKBackward(gate: TopKGate, gradWeights: ArrayLike<number>): Float64Array {
  checkGate(gate, 'topK', 'topK');
  let grad = checkGrad(gradWeights, gate);
  const scale = gate.saved.routeScale ?? 1;
  if (scale !== 1) grad = Float64Array.from(grad, (g) => g * scale);
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
  /** DeepSeek-V2: group-limited selection and the routed scaling factor (see TopKOptions). */
  numGroups?: number;
  topKGroups?: number;
  routeScale?: number;
}

/** Mixtral's softmax top-k as the native core runs it by itself (every backend). */
export const BUILT_IN_SOFTMAX: BuiltInRouting = { rule: 'softmax', numGroups: 1, topKGroups: 1, routeScale: 1, bias: null };

export const topKRule = routingRule<TopKRouterConfig>({
  kind: 'topK',
  checkConfig: (r, numExperts, topK) => {
    if (r.order === 'topk-softmax' && r.normalize === false)
      throw rangeError("config.router.normalize: false only with order 'softmax-topk'", "order 'topk-softmax'");
    checkTopKGroups(r, numExperts, topK);
  },
  fromCore: (g): TopKGate =>
    madeGate<TopKGate>({
      ...coreGateBase(g),
      kind: 'topK',
      probs: kept(g.probs, 'probs'),
      saved: {
        selected: kept(g.selected, 'selected'),
        selectedWeights: kept(g.selectedWeights, 'selectedWeights'),
        normalized: g.normalized,
        routeScale: g.routeScale,
      },
    }),
  backward: (gate, grad) => ({ gradLogits: topKBackward(gate as TopKGate, grad) }),
  // The core's rule: softmax then top-k, ties to the lower index, no capacity.
  builtIn: (r, offers) =>
    offers.includes('routeSoftmaxTopK') &&
    (r.order ?? 'softmax-topk') === 'softmax-topk' &&
    (r.tieBreak ?? 'lower') === 'lower' &&
    r.capacityFactor === undefined &&
    (r.numGroups ?? 1) === 1 &&
    (r.routeScale ?? 1) === 1
      ? BUILT_IN_SOFTMAX
      : undefined,
});
