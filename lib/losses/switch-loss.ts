import { rangeError, describe, typeError } from '../errors';
import { Matrix, checkMatrix } from '../gating/common';
import { isInt32Array } from '../typed-arrays';
import { expectNonNegative, expectOptions } from '../validate';

export function expertFractions(experts: Int32Array, tokens: number, numExperts: number, name = 'experts'): Float64Array {
  if (!isInt32Array(experts)) throw typeError(`${name} to be an Int32Array [tokens]`, describe(experts));
  if (experts.length !== tokens) throw rangeError(`${name}.length = ${tokens} (tokens, one expert each)`, `${experts.length}`);
  const f = new Float64Array(numExperts);
  for (const e of experts) {
    if (e >= numExperts || e < -1) throw rangeError(`${name} in [-1, ${numExperts - 1}]`, `${e}`);
    if (e >= 0) f[e] += 1 / tokens;
  }
  return f;
}

/** Mean router probability per expert: P_i = (1/T) sum_x p_i(x). */
export function meanProbs(data: ArrayLike<number>, tokens: number, n: number): Float64Array {
  const p = new Float64Array(n);
  for (let t = 0; t < tokens; t++) for (let e = 0; e < n; e++) p[e] += data[t * n + e] / tokens;
  return p;
}

/**
 * The Switch Transformer balance loss (Fedus et al. eqs. 4-6): alpha * N * sum_i f_i P_i, f_i the fraction of
 * tokens whose top-1 is i (not differentiable), P_i the mean probability. Equals alpha under uniform routing.
 * probs: [T, E] softmax probabilities; experts: [T] each token's top-1 (-1 = not counted). Gradient w.r.t. probs.
 */
export function switchLoss(probs: Matrix, experts: Int32Array, options: { alpha?: number } = {}) {
  options = expectOptions(options, 'options') as { alpha?: number };
  const { data, tokens, numExperts: n } = checkMatrix(probs, 'probs');
  const alpha = expectNonNegative(options.alpha ?? 1e-2, 'options.alpha');
  const f = expertFractions(experts, tokens, n);
  const p = meanProbs(data, tokens, n);
  let value = 0;
  for (let e = 0; e < n; e++) value += f[e] * p[e];
  const gradProbs = new Float64Array(tokens * n);
  for (let t = 0; t < tokens; t++) for (let e = 0; e < n; e++) gradProbs[t * n + e] = (alpha * n * f[e]) / tokens;
  return { value: alpha * n * value, fractions: f, meanProbs: p, gradProbs };
}
