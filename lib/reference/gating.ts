/**
 * float64 reference versions of the routing rules, written independently of gating/ and as plainly as
 * possible (full sorts, no shortcuts), to test it against. Each returns token-major experts and weights.
 */
type Rows = number[][];

export function rowsOf(data: ArrayLike<number>, tokens: number, numExperts: number): Rows {
  return Array.from({ length: tokens }, (_, t) => Array.from({ length: numExperts }, (_, e) => data[t * numExperts + e]));
}

export function softmax(row: number[]): number[] {
  const max = Math.max(...row);
  const exps = row.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
}

/** Indices sorted by value descending; ties by index ('lower') or reversed index ('higher'). */
export function argsortDescending(values: number[], tieBreak: 'lower' | 'higher' = 'lower'): number[] {
  return values.map((_, i) => i).sort((a, b) => values[b] - values[a] || (tieBreak === 'lower' ? a - b : b - a));
}

export interface ReferenceRouting {
  experts: number[][]; // per token, -1 = dropped
  weights: number[][];
}

/** Top-k: 'softmax-topk' (HF) or 'topk-softmax' (Shazeer eq. 3/5). */
export function referenceTopKRouting(
  rows: Rows,
  k: number,
  opts: { order?: 'softmax-topk' | 'topk-softmax'; normalize?: boolean; tieBreak?: 'lower' | 'higher' } = {},
): ReferenceRouting {
  const experts: number[][] = [];
  const weights: number[][] = [];
  for (const row of rows) {
    const top = argsortDescending(row, opts.tieBreak).slice(0, k);
    experts.push(top);
    if (opts.order === 'topk-softmax') weights.push(softmax(top.map((e) => row[e])));
    else {
      const p = softmax(row);
      const kept = top.reduce((s, e) => s + p[e], 0);
      weights.push(top.map((e) => (opts.normalize === false ? p[e] : p[e] / kept)));
    }
  }
  return { experts, weights };
}

/** Drops slots over capacity; order: by slot rank then token ('position') or by weight descending ('score'). */
export function referenceCapacity(r: ReferenceRouting, numExperts: number, capacity: number, policy: 'position' | 'score'): number {
  const slots: Array<{ t: number; j: number }> = [];
  const k = Math.max(...r.experts.map((e) => e.length));
  for (let j = 0; j < k; j++) for (let t = 0; t < r.experts.length; t++) if (j < r.experts[t].length) slots.push({ t, j });
  if (policy === 'score') slots.sort((a, b) => r.weights[b.t][b.j] - r.weights[a.t][a.j]); // stable: ties keep position order
  const used = new Array(numExperts).fill(0);
  let dropped = 0;
  for (const { t, j } of slots) {
    const e = r.experts[t][j];
    if (e < 0) continue;
    if (used[e] < capacity) used[e]++;
    else {
      r.experts[t][j] = -1;
      r.weights[t][j] = 0;
      dropped++;
    }
  }
  return dropped;
}

/** Expert choice (Zhou et al.): each expert takes its `capacity` best tokens by softmax score. */
export function referenceExpertChoice(rows: Rows, capacity: number): ReferenceRouting {
  const probs = rows.map(softmax);
  const picks: Array<Array<[number, number]>> = rows.map(() => []);
  for (let e = 0; e < rows[0].length; e++)
    argsortDescending(probs.map((p) => p[e]))
      .slice(0, capacity)
      .forEach((t) => picks[t].push([e, probs[t][e]]));
  const ordered = picks.map((p) => p.sort((a, b) => b[1] - a[1] || a[0] - b[0]));
  return { experts: ordered.map((p) => p.map((x) => x[0])), weights: ordered.map((p) => p.map((x) => x[1])) };
}

/** DeepSeek-V3 sigmoid + bias with group-limited selection (inference/model.py Gate). */
export function referenceSigmoidBias(
  rows: Rows,
  k: number,
  o: { bias?: number[]; numGroups?: number; topKGroups?: number; routeScale?: number; normalize?: boolean },
): ReferenceRouting {
  const n = rows[0].length;
  const groups = o.numGroups ?? 1;
  const size = n / groups;
  const keepGroups = o.topKGroups ?? groups;
  const experts: number[][] = [];
  const weights: number[][] = [];
  for (const row of rows) {
    const s = row.map((v) => 1 / (1 + Math.exp(-v)));
    const biased = s.map((v, e) => v + (o.bias?.[e] ?? 0));
    const groupScores = Array.from({ length: groups }, (_, g) =>
      biased
        .slice(g * size, (g + 1) * size)
        .sort((a, b) => b - a)
        .slice(0, 2)
        .reduce((a, b) => a + b, 0),
    );
    const kept = new Set(argsortDescending(groupScores).slice(0, keepGroups));
    const masked = biased.map((v, e) => (kept.has(Math.floor(e / size)) ? v : -Infinity));
    const top = argsortDescending(masked).slice(0, k);
    const sum = top.reduce((a, e) => a + s[e], 0);
    experts.push(top);
    weights.push(top.map((e) => (s[e] / (o.normalize === false ? 1 : sum)) * (o.routeScale ?? 1)));
  }
  return { experts, weights };
}

/** Shazeer's noisy top-k with the noise given: H = clean + noise (softplus(raw) + eps), softmax over the top k of H. */
export function referenceNoisyTopK(clean: Rows, raw: Rows, noise: Rows, k: number, eps: number): ReferenceRouting {
  const noisy = clean.map((row, t) => row.map((v, e) => v + noise[t][e] * (Math.log(1 + Math.exp(raw[t][e])) + eps)));
  return referenceTopKRouting(noisy, k, { order: 'topk-softmax' });
}
