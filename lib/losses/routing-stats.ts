import { describe, rangeError, typeError } from '../errors';
import { isInt32Array } from '../typed-arrays';
import { MAX_EXPERTS, expectInteger } from '../validate';

export interface RoutingStats {
  tokensPerExpert: Int32Array;
  /** Dropped slots over all routed-or-dropped slots. */
  dropRate: number;
  /** Coefficient of variation (std / mean, population) of the load; 0 is perfectly balanced. */
  loadCV: number;
  /** Entropy of the load distribution over experts, in nats (log E at perfect balance). */
  loadEntropy: number;
  /** Mean over tokens of the entropy of the token's normalised routing weights, in nats. */
  weightEntropy: number;
  /** Experts that received at least one slot. */
  expertsUsed: number;
}

/** Cheap statistics of one routing (O(slots + E)), fit for every call of a server. */
export function routingStats(routing: {
  experts: Int32Array;
  weights: ArrayLike<number>;
  topK: number;
  tokensPerExpert: Int32Array;
  dropped?: number;
}): RoutingStats {
  if (typeof routing !== 'object' || routing === null) throw typeError('routing to be a routing result', describe(routing));
  if (!isInt32Array(routing.tokensPerExpert))
    throw typeError('routing.tokensPerExpert to be an Int32Array', describe(routing.tokensPerExpert));
  if (!isInt32Array(routing.experts)) throw typeError('routing.experts to be an Int32Array', describe(routing.experts));
  // topK 0 once made tokens = slots / 0 = Infinity, and the loop over tokens never ended.
  const topK = expectInteger(routing.topK, 'routing.topK', 1, MAX_EXPERTS);
  if (routing.experts.length % topK !== 0)
    throw rangeError(`routing.experts.length to be a multiple of routing.topK = ${topK}`, `${routing.experts.length}`);
  if (typeof routing.weights !== 'object' || routing.weights === null || routing.weights.length !== routing.experts.length)
    throw rangeError(`routing.weights to have ${routing.experts.length} elements (one per slot)`, describe(routing.weights));
  if (routing.tokensPerExpert.length < 1) throw rangeError('routing.tokensPerExpert to have at least 1 element', '0');
  const dropped = routing.dropped === undefined ? 0 : expectInteger(routing.dropped, 'routing.dropped', 0);
  const counts = routing.tokensPerExpert;
  const n = counts.length;
  let total = 0;
  for (const c of counts) total += c;
  const mean = total / n;
  let ss = 0;
  let entropy = 0;
  let used = 0;
  for (const c of counts) {
    ss += (c - mean) ** 2;
    if (c > 0) {
      used++;
      entropy -= (c / total) * Math.log(c / total);
    }
  }
  const k = topK;
  const tokens = routing.experts.length / k;
  let weightEntropy = 0;
  for (let t = 0; t < tokens; t++) {
    let sum = 0;
    for (let j = 0; j < k; j++) sum += routing.weights[t * k + j];
    if (sum <= 0) continue;
    for (let j = 0; j < k; j++) {
      const w = routing.weights[t * k + j] / sum;
      if (w > 0) weightEntropy -= (w * Math.log(w)) / tokens;
    }
  }
  return {
    tokensPerExpert: counts,
    dropRate: total + dropped === 0 ? 0 : dropped / (total + dropped),
    loadCV: mean === 0 ? 0 : Math.sqrt(ss / n) / mean,
    loadEntropy: entropy,
    weightEntropy,
    expertsUsed: used,
  };
}
