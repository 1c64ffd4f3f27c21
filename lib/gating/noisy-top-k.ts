import { describe, rangeError } from '../errors';
import { expectSeed } from '../tensor';
import { Random } from '../random';
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
  madeGate,
  rankTop,
  selectedSoftmaxBackward,
} from './common';
import { DROP_POLICIES, TIE_BREAKS } from './top-k';
import { routingRule } from './rule';

export interface NoisyTopKOptions {
  k: number;
  /** Noise is added only while training (tensor2tensor multiplies the noise std by `train`). */
  training?: boolean;
  /** Added to softplus(x W_noise^T) (tensor2tensor's noise_epsilon, default 1e-2). */
  noiseEpsilon?: number;
  /** The N(0, 1) samples to use [T, E] (to hold the noise fixed); otherwise drawn from `seed`. */
  noise?: Matrix;
  seed?: number;
  tieBreak?: TieBreak;
  capacityFactor?: number;
  dropPolicy?: DropPolicy;
}

export interface NoisyTopKGate extends GateResult {
  clean: Float64Array; // [T, E] x W_g^T
  noisy: Float64Array; // [T, E] H(x) (= clean when not training)
  noiseStd: Float64Array; // [T, E] softplus(x W_noise^T) + noiseEpsilon
  noise: Float64Array; // [T, E] the standard normal samples used (zeros when not training)
  /** [T] the k-th and (k+1)-th largest noisy logits (NaN when k = E): the load estimator's thresholds. */
  kthNoisy: Float64Array;
  kPlus1Noisy: Float64Array;
  /** [T] which experts hold those values (-1 for the (k+1)-th when k = E). */
  kthExpert: Int32Array;
  kPlus1Expert: Int32Array;
  training: boolean;
  /** @internal */
  saved: { selected: Int32Array; selectedWeights: Float64Array; noiseLogits: Float64Array };
}

const softplus = (x: number): number => (x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x)));
const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/**
 * Noisy top-k gating (Shazeer et al. 2017 eqs. 3-5): H = x W_g^T + N(0, 1) (softplus(x W_noise^T) + eps),
 * G = softmax(KeepTopK(H, k)): the softmax covers only the k kept values.
 * `cleanLogits` = x W_g^T and `noiseLogits` = x W_noise^T, both [T, E].
 */
export function noisyTopK(cleanLogits: Matrix, noiseLogits: Matrix, options: NoisyTopKOptions): NoisyTopKGate {
  options = expectOptions(options, 'options') as NoisyTopKOptions;
  const { data: clean, tokens, numExperts: n } = checkMatrix(cleanLogits, 'cleanLogits');
  const { data: raw, tokens: t2, numExperts: n2 } = checkMatrix(noiseLogits, 'noiseLogits');
  if (t2 !== tokens || n2 !== n) throw rangeError(`noiseLogits of shape [${tokens}, ${n}] (as cleanLogits)`, `[${t2}, ${n2}]`);
  const k = expectInteger(options?.k, 'k', 1, n);
  const training = expectBoolean(options.training ?? false, 'training');
  const eps = options.noiseEpsilon ?? 1e-2;
  if (typeof eps !== 'number' || !Number.isFinite(eps) || eps < 0)
    throw rangeError('noiseEpsilon to be a finite number >= 0', describe(eps));
  const tieBreak = expectOneOf(options.tieBreak ?? 'lower', 'tieBreak', TIE_BREAKS);
  const dropPolicy = expectOneOf(options.dropPolicy ?? 'position', 'dropPolicy', DROP_POLICIES);
  if (options.capacityFactor !== undefined) checkCapacityFactor(options.capacityFactor);

  const noise = new Float64Array(tokens * n);
  if (training) {
    if (options.noise !== undefined) {
      const { data, tokens: t3, numExperts: n3 } = checkMatrix(options.noise, 'noise');
      if (t3 !== tokens || n3 !== n) throw rangeError(`noise of shape [${tokens}, ${n}]`, `[${t3}, ${n3}]`);
      noise.set(Array.from(data));
    } else {
      const rng = new Random(expectSeed(options.seed ?? 0, 'options.seed'));
      for (let i = 0; i < noise.length; i++) noise[i] = rng.normal();
    }
  }
  const noiseStd = new Float64Array(tokens * n);
  const noisy = new Float64Array(tokens * n);
  for (let i = 0; i < noisy.length; i++) {
    noiseStd[i] = softplus(raw[i]) + eps;
    noisy[i] = clean[i] + noise[i] * noiseStd[i];
  }
  const experts = new Int32Array(tokens * k);
  const weights = new Float64Array(tokens * k);
  const kthNoisy = new Float64Array(tokens);
  const kPlus1Noisy = new Float64Array(tokens);
  const kthExpert = new Int32Array(tokens);
  const kPlus1Expert = new Int32Array(tokens);
  for (let t = 0; t < tokens; t++) {
    const picked = rankTop(noisy, t * n, n, Math.min(k + 1, n), tieBreak);
    const top = picked.slice(0, k);
    kthNoisy[t] = noisy[t * n + top[k - 1]];
    kPlus1Noisy[t] = k < n ? noisy[t * n + picked[k]] : NaN;
    kthExpert[t] = top[k - 1];
    kPlus1Expert[t] = k < n ? picked[k] : -1;
    const max = noisy[t * n + top[0]];
    let sum = 0;
    for (const e of top) sum += Math.exp(noisy[t * n + e] - max);
    top.forEach((e, j) => {
      experts[t * k + j] = e;
      weights[t * k + j] = Math.exp(noisy[t * n + e] - max) / sum;
    });
  }
  const selected = Int32Array.from(experts);
  const selectedWeights = weights.slice();
  const dropped =
    options.capacityFactor === undefined
      ? 0
      : applyCapacity(experts, weights, weights.slice(), tokens, k, n, expertCapacity(tokens, n, k, options.capacityFactor), dropPolicy);
  return madeGate({
    kind: 'noisyTopK',
    topK: k,
    experts,
    weights,
    tokensPerExpert: countPerExpert(experts, n),
    dropped,
    tokens,
    numExperts: n,
    clean: Float64Array.from(clean),
    noisy,
    noiseStd,
    noise,
    kthNoisy,
    kPlus1Noisy,
    kthExpert,
    kPlus1Expert,
    training,
    saved: { selected, selectedWeights, noiseLogits: Float64Array.from(raw) },
  });
}

/**
 * Gradients from dL/dweights [T * k], with the sampled noise held fixed: dL/dH through the softmax over the
 * kept values, then dH/dclean = 1, dH/dstd = noise, dstd/d(x W_noise^T) = sigmoid(x W_noise^T).
 * Non-selected and dropped entries get zero. Chain to the weights with routerWeightGradient(grad, x).
 */
export function noisyTopKBackward(gate: NoisyTopKGate, gradWeights: ArrayLike<number>) {
  checkGate(gate, 'noisyTopK', 'noisyTopK');
  const grad = checkGrad(gradWeights, gate);
  const gradClean = selectedSoftmaxBackward(gate, gate.saved.selected, gate.saved.selectedWeights, grad);
  const gradNoiseStd = new Float64Array(gradClean.length);
  const gradNoiseLogits = new Float64Array(gradClean.length);
  for (let i = 0; i < gradClean.length; i++) {
    gradNoiseStd[i] = gradClean[i] * gate.noise[i];
    gradNoiseLogits[i] = gradNoiseStd[i] * sigmoid(gate.saved.noiseLogits[i]);
  }
  return { gradCleanLogits: gradClean, gradNoiseStd, gradNoiseLogits };
}

export const noisyTopKRule = routingRule<{
  kind: 'noisyTopK';
  noiseEpsilon?: number;
  tieBreak?: TieBreak;
  capacityFactor?: number;
  dropPolicy?: DropPolicy;
}>({
  kind: 'noisyTopK',
  usesNoiseRouter: true,
  fromCore: (g): NoisyTopKGate =>
    madeGate<NoisyTopKGate>({
      ...coreGateBase(g),
      kind: 'noisyTopK',
      clean: kept(g.clean, 'clean'),
      noisy: kept(g.noisy, 'noisy'),
      noiseStd: kept(g.noiseStd, 'noiseStd'),
      noise: kept(g.noise, 'noise'),
      kthNoisy: kept(g.kthNoisy, 'kthNoisy'),
      kPlus1Noisy: kept(g.kPlus1Noisy, 'kPlus1Noisy'),
      kthExpert: kept(g.kthExpert, 'kthExpert'),
      kPlus1Expert: kept(g.kPlus1Expert, 'kPlus1Expert'),
      training: g.training,
      saved: {
        selected: kept(g.selected, 'selected'),
        selectedWeights: kept(g.selectedWeights, 'selectedWeights'),
        noiseLogits: kept(g.noiseLogits, 'noiseLogits'),
      },
    }),
  backward: (gate, grad) => {
    const g = noisyTopKBackward(gate as NoisyTopKGate, grad);
    return { gradLogits: g.gradCleanLogits, gradNoiseLogits: g.gradNoiseLogits };
  },
});
