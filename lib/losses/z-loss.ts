import { Matrix, checkMatrix } from '../gating/common';
import { logSumExp } from '../math';

/**
 * The router z-loss (Zoph et al. 2022, ST-MoE): mean over tokens of logsumexp(logits)^2, computed stably.
 * Gradient: 2 lse_t softmax(logits_t) / T.
 */
export function zLoss(logits: Matrix) {
  const { data, tokens, numExperts: n } = checkMatrix(logits, 'logits');
  let value = 0;
  const gradLogits = new Float64Array(tokens * n);
  for (let t = 0; t < tokens; t++) {
    const lse = logSumExp(data, t, n);
    value += (lse * lse) / tokens;
    for (let e = 0; e < n; e++) gradLogits[t * n + e] = (2 * lse * Math.exp(data[t * n + e] - lse)) / tokens;
  }
  return { value, gradLogits };
}
