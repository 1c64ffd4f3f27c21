import { rangeError } from '../errors';
import { checkGate } from '../gating/common';
import { NoisyTopKGate } from '../gating/noisy-top-k';
import { normalCdf, normalPdf } from '../math';
import { expectNonNegative, expectOptions } from '../validate';
import { Variance, cvSquared } from './cv-squared';

/**
 * The smooth load estimator of Shazeer et al. (Appendix A, eqs. 8-11) in tensor2tensor's two-threshold form
 * (_prob_in_top_k): P(x, i) = Phi((clean_i - threshold_i) / std_i), threshold_i = the (k+1)-th largest noisy
 * value when expert i is in the top k (its noisy value exceeds that), else the k-th. Load = sum_x P;
 * loss = coefficient * CV(Load)^2. Needs a training-mode noisyTopK result with k < E. The gradient flows to the
 * clean logits and the noise std (and through them to W_g and W_noise), including through the thresholds, which
 * are noisy values H_j = clean_j + noise_j std_j of other experts. Phi is computed accurately in the tails.
 */
export function loadLoss(gate: NoisyTopKGate, options: { variance?: Variance; coefficient?: number } = {}) {
  options = expectOptions(options, 'options') as { variance?: Variance; coefficient?: number };
  checkGate(gate, 'noisyTopK', 'noisyTopK');
  const coefficient = expectNonNegative(options.coefficient ?? 1, 'options.coefficient');
  const { tokens, numExperts: n, topK: k } = gate;
  if (k >= n) throw rangeError(`k < numExperts = ${n} for the smooth load estimator (tensor2tensor counts gates instead)`, `k = ${k}`);
  if (!gate.training) throw rangeError('a noisyTopK result computed with training: true (the estimator needs noise)', 'training: false');
  const prob = new Float64Array(tokens * n);
  const z = new Float64Array(tokens * n);
  const thresholdExpert = new Int32Array(tokens * n);
  const load = new Float64Array(n);
  for (let t = 0; t < tokens; t++)
    for (let i = 0; i < n; i++) {
      const s = t * n + i;
      const isIn = gate.noisy[s] > gate.kPlus1Noisy[t];
      const threshold = isIn ? gate.kPlus1Noisy[t] : gate.kthNoisy[t];
      thresholdExpert[s] = isIn ? gate.kPlus1Expert[t] : gate.kthExpert[t];
      z[s] = (gate.clean[s] - threshold) / gate.noiseStd[s];
      prob[s] = normalCdf(z[s]);
      load[i] += prob[s];
    }
  const cv = cvSquared(load, options);
  const gradClean = new Float64Array(tokens * n);
  const gradNoiseStd = new Float64Array(tokens * n);
  for (let t = 0; t < tokens; t++)
    for (let i = 0; i < n; i++) {
      const s = t * n + i;
      const dP = coefficient * cv.grad[i] * normalPdf(z[s]); // dL/dz
      gradClean[s] += dP / gate.noiseStd[s];
      gradNoiseStd[s] -= (dP * z[s]) / gate.noiseStd[s];
      // the threshold is H_j = clean_j + noise_j std_j of expert j = thresholdExpert
      const j = t * n + thresholdExpert[s];
      gradClean[j] -= dP / gate.noiseStd[s];
      gradNoiseStd[j] -= (dP / gate.noiseStd[s]) * gate.noise[j];
    }
  // std = softplus(noise logits) + eps: dstd/dlogit = sigmoid(logit)
  const gradNoiseLogits = Float64Array.from(gradNoiseStd, (g, s) => g / (1 + Math.exp(-gate.saved.noiseLogits[s])));
  return { value: coefficient * cv.value, load, prob, gradCleanLogits: gradClean, gradNoiseStd, gradNoiseLogits };
}
