/**
 * Expert capacity and token dropping (Switch Transformer eq. 3, GShard Algorithm 1, batch-prioritized routing).
 */
import { rangeError, describe } from '../errors';
import { expectInteger } from '../validate';

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
  experts: Int32Array, weights: Float64Array, scores: ArrayLike<number>, tokens: number, k: number,
  numExperts: number, capacity: number, policy: DropPolicy,
): number {
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
