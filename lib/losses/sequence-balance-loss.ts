import { describe, rangeError, typeError } from '../errors';
import { isInt32Array } from '../typed-arrays';
import { Matrix, checkMatrix, rankTop } from '../gating/common';
import { expectInteger, expectOptions } from '../validate';

/**
 * DeepSeek-V3's complementary sequence-wise balance loss (eqs. 17-20), per sequence of `sequenceLength` tokens:
 * f_i = E / (K T) sum_t 1(s_i,t in TopK(s_t, K)), s'_i,t = s_i,t / sum_j s_j,t, P_i = (1/T) sum_t s'_i,t,
 * L = alpha sum_i f_i P_i; the value is the mean over the sequences (perSequence has each). scores: [T, E]
 * sigmoid affinities; pass `experts` ([T * K], the routed choices, e.g. made with the bias) to use those for f.
 * Gradient w.r.t. the scores.
 */
export function sequenceBalanceLoss(
  scores: Matrix,
  topK: number,
  sequenceLength: number,
  alpha: number,
  options: { experts?: Int32Array } = {},
) {
  options = expectOptions(options, 'options');
  const { data, tokens, numExperts: n } = checkMatrix(scores, 'scores');
  const k = expectInteger(topK, 'topK', 1, n);
  const len = expectInteger(sequenceLength, 'sequenceLength');
  if (tokens % len !== 0) throw rangeError(`tokens (${tokens}) to be a multiple of sequenceLength`, `${len}`);
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0)
    throw rangeError('alpha to be a finite number >= 0', describe(alpha));
  for (let i = 0; i < data.length; i++)
    if (data[i] < 0) throw rangeError('scores >= 0 (sigmoid affinities)', `${data[i]} at scores[${Math.floor(i / n)}, ${i % n}]`);
  if (options.experts !== undefined) {
    const chosen = options.experts;
    if (!isInt32Array(chosen)) throw typeError('options.experts to be an Int32Array [tokens * topK]', describe(chosen));
    if (chosen.length !== tokens * k) throw rangeError(`options.experts.length = ${tokens * k} (tokens * topK)`, `${chosen.length}`);
    // An id past numExperts once fell outside f and was silently ignored.
    for (let i = 0; i < chosen.length; i++)
      if (chosen[i] < -1 || chosen[i] >= n) throw rangeError(`options.experts[${i}] in [-1, ${n - 1}]`, `${chosen[i]}`);
  }
  const sequences = tokens / len;
  const perSequence = new Float64Array(sequences);
  const gradScores = new Float64Array(tokens * n);
  for (let q = 0; q < sequences; q++) {
    const f = new Float64Array(n);
    const p = new Float64Array(n);
    for (let t = q * len; t < (q + 1) * len; t++) {
      const chosen = options.experts ? Array.from(options.experts.subarray(t * k, (t + 1) * k)) : rankTop(data, t * n, n, k);
      for (const e of chosen) if (e >= 0) f[e] += n / (k * len);
      let sum = 0;
      for (let e = 0; e < n; e++) sum += data[t * n + e];
      for (let e = 0; e < n; e++) p[e] += data[t * n + e] / sum / len;
    }
    let value = 0;
    for (let e = 0; e < n; e++) value += f[e] * p[e];
    perSequence[q] = alpha * value;
    // dL/ds_j,t = alpha / len * (f_j - sum_i f_i s'_i,t) / sum_t, over the mean of sequences
    for (let t = q * len; t < (q + 1) * len; t++) {
      let sum = 0;
      for (let e = 0; e < n; e++) sum += data[t * n + e];
      let dot = 0;
      for (let e = 0; e < n; e++) dot += f[e] * (data[t * n + e] / sum);
      for (let e = 0; e < n; e++) gradScores[t * n + e] = ((alpha / len) * (f[e] - dot)) / sum / sequences;
    }
  }
  const value = perSequence.reduce((a, b) => a + b, 0) / sequences;
  return { value, perSequence, gradScores };
}
