import { Matrix, checkMatrix } from '../gating/common';
import { expectOneOf, expectOptions } from '../validate';
import { expertFractions, meanProbs } from './switch-loss';

/**
 * GShard's auxiliary loss with the top-1 mask (Lepikhin et al. Algorithm 1): m_e the mean gate (softmax) value,
 * c_e / S the fraction of tokens whose first choice is e. scale 'deepspeed' (default; DeepSpeed top2gating and
 * FastMoE: mean(m_e c_e) E^2 = E sum_e m_e c_e / S, 1 under uniform routing) or 'paper' ((1/E) sum_e (c_e/S) m_e).
 * probs [T, E]; firstExperts [T]: each token's first choice. Gradient w.r.t. probs.
 */
export function gshardLoss(probs: Matrix, firstExperts: Int32Array, options: { scale?: 'deepspeed' | 'paper' } = {}) {
  options = expectOptions(options, 'options') as { scale?: 'deepspeed' | 'paper' };
  const { data, tokens, numExperts: n } = checkMatrix(probs, 'probs');
  const c = expertFractions(firstExperts, tokens, n, 'firstExperts');
  const m = meanProbs(data, tokens, n);
  const scale = expectOneOf(options.scale ?? 'deepspeed', 'options.scale', ['deepspeed', 'paper'] as const);
  const factor = scale === 'deepspeed' ? n : 1 / n;
  let value = 0;
  for (let e = 0; e < n; e++) value += c[e] * m[e];
  const gradProbs = new Float64Array(tokens * n);
  for (let t = 0; t < tokens; t++) for (let e = 0; e < n; e++) gradProbs[t * n + e] = (factor * c[e]) / tokens;
  return { value: factor * value, fractions: c, meanProbs: m, gradProbs };
}
