/**
 * Expert capacity and token dropping (Switch Transformer eq. 3, GShard Algorithm 1, batch-prioritized routing).
 */
import { types } from 'util';
import { describe, rangeError, typeError } from '../errors';
import { isInt32Array } from '../typed-arrays';
import { MAX_DIM, MAX_EXPERTS, expectInteger, expectOneOf } from '../validate';

export type DropPolicy = 'position' | 'score';

/**
 * Slots one expert may take: ceil(k * tokens * capacityFactor / numExperts) (Switch: tokens / experts x
 * capacity factor; GShard: 2S/E for top-2). At least 1.
 */
export function expertCapacity(tokens: number, numExperts: number, k: number, capacityFactor: number): number {
  expectInteger(tokens, 'tokens');
  expectInteger(numExperts, 'numExperts');
  expectInteger(k, 'k', 1, numExperts);
  checkCapacityFactor(capacityFactor);
  return Math.max(1, Math.ceil((k * tokens * capacityFactor) / numExperts - 1e-9));
}

export function checkCapacityFactor(capacityFactor: unknown, name = 'capacityFactor'): number {
  if (typeof capacityFactor !== 'number' || !Number.isFinite(capacityFactor) || capacityFactor <= 0)
    throw rangeError(`${name} to be a finite number > 0`, describe(capacityFactor));
  return capacityFactor;
}

/**
 * Drops the slots over each expert's capacity: sets their expert to -1 and weight to 0, returns how many.
 * 'position': slots are served by rank (every token's first choice before any second choice, as GShard and
 * DeepSpeed do), then in token order, so later tokens drop first. 'score': slots with the highest score are
 * served first (batch-prioritized routing), ties in position order.
 */
export function applyCapacity(
  experts: Int32Array,
  weights: Float64Array,
  scores: ArrayLike<number>,
  tokens: number,
  k: number,
  numExperts: number,
  capacity: number,
  policy: DropPolicy,
): number {
  // The arrays are changed in place (the documented contract), so they are checked first, whole.
  if (!isInt32Array(experts)) throw typeError('experts to be an Int32Array', describe(experts));
  if (!types.isFloat64Array(weights)) throw typeError('weights to be a Float64Array', describe(weights));
  expectInteger(tokens, 'tokens', 1, MAX_DIM);
  expectInteger(numExperts, 'numExperts', 1, MAX_EXPERTS);
  expectInteger(k, 'k', 1, numExperts);
  expectInteger(capacity, 'capacity', 0);
  expectOneOf(policy, 'policy', ['position', 'score'] as const);
  const slots = tokens * k;
  if (experts.length !== slots) throw rangeError(`experts.length = ${slots} (tokens * k)`, `${experts.length}`);
  if (weights.length !== slots) throw rangeError(`weights.length = ${slots} (tokens * k)`, `${weights.length}`);
  if (policy === 'score' && (typeof scores !== 'object' || scores === null || scores.length !== slots))
    throw rangeError(`scores to have ${slots} elements (tokens * k)`, describe(scores));
  for (let i = 0; i < slots; i++)
    if (experts[i] < -1 || experts[i] >= numExperts) throw rangeError(`experts[${i}] in [-1, ${numExperts - 1}]`, `${experts[i]}`);
  const priority: number[] = [];
  for (let j = 0; j < k; j++) for (let t = 0; t < tokens; t++) priority.push(t * k + j);
  if (policy === 'score') {
    const rank = new Map(priority.map((s, i) => [s, i]));
    priority.sort((a, b) => scores[b] - scores[a] || rank.get(a)! - rank.get(b)!);
  }
  const used = new Int32Array(numExperts);
  let dropped = 0;
  for (const s of priority) {
    const e = experts[s];
    if (e < 0) continue;
    if (used[e] < capacity) used[e]++;
    else {
      experts[s] = -1;
      weights[s] = 0;
      dropped++;
    }
  }
  return dropped;
}
