import { describe, rangeError, typeError } from '../errors';
import { typedArrayTag } from '../typed-arrays';
import { expectBoolean, expectInteger, expectOneOf, expectOptions } from '../validate';
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
} from './common';
import { TIE_BREAKS } from './top-k';
import { routingRule } from './rule';

export interface SigmoidBiasOptions {
  k: number;
  /** [E] added to the scores for selection only (DeepSeek-V3 eq. 16, the loss-free balancing bias). */
  bias?: ArrayLike<number>;
  /** Experts split into numGroups equal groups; only the topKGroups best groups are eligible (default 1, 1). */
  numGroups?: number;
  topKGroups?: number;
  /** Multiplies the final weights (DeepSeek-V3 route_scale, 2.5 in the 671B config; default 1). */
  routeScale?: number;
  /** Normalise the selected scores to sum to 1 (eq. 13; default true). */
  normalize?: boolean;
  tieBreak?: TieBreak;
}

export interface SigmoidBiasGate extends GateResult {
  /** [T, E] sigmoid scores s = sigmoid(logits), unbiased. */
  scores: Float64Array;
  routeScale: number;
  normalized: boolean;
}

/** The options checked against numExperts (groups dividing it, k within the kept groups, a finite bias of E). */
export function checkSigmoidBiasOptions(options: SigmoidBiasOptions, n: number) {
  const numGroups = expectInteger(options?.numGroups ?? 1, 'numGroups', 1, n);
  if (n % numGroups !== 0) throw rangeError(`numGroups to divide numExperts = ${n}`, `${numGroups}`);
  const topKGroups = expectInteger(options.topKGroups ?? numGroups, `topKGroups (numGroups = ${numGroups})`, 1, numGroups);
  const groupSize = n / numGroups;
  const k = expectInteger(options.k, `k (at most topKGroups x experts per group = ${topKGroups * groupSize})`, 1, topKGroups * groupSize);
  const routeScale = options.routeScale ?? 1;
  if (typeof routeScale !== 'number' || !Number.isFinite(routeScale) || routeScale <= 0)
    throw rangeError('routeScale to be a finite number > 0', describe(routeScale));
  const normalized = expectBoolean(options.normalize ?? true, 'normalize');
  const tieBreak = expectOneOf(options.tieBreak ?? 'lower', 'tieBreak', TIE_BREAKS);
  const bias = options.bias ?? new Float64Array(n);
  if (typedArrayTag(bias) === undefined && !Array.isArray(bias)) throw typeError('bias to be a typed array [numExperts]', describe(bias));
  if (bias.length !== n) throw rangeError(`bias.length = ${n} (numExperts)`, `${bias.length}`);
  for (let i = 0; i < n; i++)
    if (!Number.isFinite(bias[i])) throw rangeError('bias to contain only finite values', `${bias[i]} at bias[${i}]`);
  return { numGroups, topKGroups, k, routeScale, normalized, tieBreak, bias };
}

/**
 * DeepSeek-V3 routing (eqs. 13-16; inference/model.py Gate): s = sigmoid(logits); selection on s + bias,
 * restricted to the topKGroups groups with the largest sum of their top-2 biased scores; weights are the
 * unbiased s of the k selected, normalised to sum to 1, times routeScale.
 */
export function sigmoidBias(logits: Matrix, options: SigmoidBiasOptions): SigmoidBiasGate {
  options = expectOptions(options, 'options') as SigmoidBiasOptions;
  const { data, tokens, numExperts: n } = checkMatrix(logits, 'logits');
  const { numGroups, topKGroups, k, routeScale, normalized, tieBreak, bias } = checkSigmoidBiasOptions(options, n);
  const groupSize = n / numGroups;

  const scores = new Float64Array(tokens * n);
  const experts = new Int32Array(tokens * k);
  const weights = new Float64Array(tokens * k);
  const biased = new Float64Array(n);
  const groupScore = new Float64Array(numGroups);
  for (let t = 0; t < tokens; t++) {
    for (let e = 0; e < n; e++) {
      scores[t * n + e] = 1 / (1 + Math.exp(-data[t * n + e]));
      biased[e] = scores[t * n + e] + bias[e];
    }
    for (let g = 0; g < numGroups; g++)
      groupScore[g] = rankTop(biased, g * groupSize, groupSize, Math.min(2, groupSize)).reduce((s, i) => s + biased[g * groupSize + i], 0);
    const keep = new Set(rankTop(groupScore, 0, numGroups, topKGroups, 'lower'));
    const picked = rankTop(biased, 0, n, k, tieBreak, (e) => keep.has(Math.floor(e / groupSize)));
    let sum = 0;
    for (const e of picked) sum += scores[t * n + e];
    picked.forEach((e, j) => {
      experts[t * k + j] = e;
      weights[t * k + j] = (scores[t * n + e] / (normalized ? sum : 1)) * routeScale;
    });
  }
  return madeGate({
    kind: 'sigmoidBias',
    topK: k,
    experts,
    weights,
    tokensPerExpert: countPerExpert(experts, n),
    dropped: 0,
    tokens,
    numExperts: n,
    scores,
    routeScale,
    normalized,
  });
}

/** dL/dlogits [T, E] from dL/dweights [T * k]; the bias and the selection carry no gradient. */
export function sigmoidBiasBackward(gate: SigmoidBiasGate, gradWeights: ArrayLike<number>): Float64Array {
  checkGate(gate, 'sigmoidBias', 'sigmoidBias');
  const grad = checkGrad(gradWeights, gate);
  const { topK: k, tokens, numExperts: n, scores, routeScale: r } = gate;
  const out = new Float64Array(tokens * n);
  for (let t = 0; t < tokens; t++) {
    let sum = 0;
    let dot = 0;
    for (let j = 0; j < k; j++) {
      const s = scores[t * n + gate.experts[t * k + j]];
      sum += s;
      dot += grad[t * k + j] * s;
    }
    for (let j = 0; j < k; j++) {
      const e = gate.experts[t * k + j];
      const s = scores[t * n + e];
      // w_j = r s_j / sum (normalised) or r s_j; ds/dlogit = s (1 - s)
      const dS = gate.normalized ? (r / sum) * (grad[t * k + j] - dot / sum) : r * grad[t * k + j];
      out[t * n + e] += dS * s * (1 - s);
    }
  }
  return out;
}

/** config.router for DeepSeek-V3's routing. */
export interface SigmoidBiasRouterConfig {
  kind: 'sigmoidBias';
  numGroups?: number;
  topKGroups?: number;
  routeScale?: number;
  normalize?: boolean;
  bias?: ArrayLike<number>;
  tieBreak?: TieBreak;
}

export const sigmoidBiasRule = routingRule<SigmoidBiasRouterConfig>({
  kind: 'sigmoidBias',
  checkConfig: (r, numExperts, topK) => {
    checkSigmoidBiasOptions({ ...r, k: topK }, numExperts);
    return r.bias === undefined ? r : { ...r, bias: Float64Array.from(r.bias) };
  },
  fromCore: (g): SigmoidBiasGate =>
    madeGate<SigmoidBiasGate>({
      ...coreGateBase(g),
      kind: 'sigmoidBias',
      scores: kept(g.probs, 'scores'),
      routeScale: g.routeScale,
      normalized: g.normalized,
    }),
  backward: (gate, grad) => ({ gradLogits: sigmoidBiasBackward(gate as SigmoidBiasGate, grad) }),
  // A backend whose core routes it (the GPU) does so normalised, ties to the lower index; elsewhere it routes here.
  builtIn: (r, offers) => {
    if (!offers.includes('routeSigmoidBias') || !(r.normalize ?? true) || (r.tieBreak ?? 'lower') !== 'lower') return undefined;
    const numGroups = r.numGroups ?? 1;
    return {
      rule: 'sigmoidBias',
      numGroups,
      topKGroups: r.topKGroups ?? numGroups,
      routeScale: r.routeScale ?? 1,
      bias: r.bias ? Float32Array.from(r.bias) : null,
    };
  },
});
