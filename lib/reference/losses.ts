/** float64 reference versions of the balance losses, written plainly from the papers' formulas. */
import { normalCdf } from '../math';
import { argsortDescending, softmax } from './gating';

/** tensor2tensor cv_squared (population, n + 1e-10) or torch x.var() / (mean^2 + 1e-10) (sample). */
export function referenceCvSquared(x: number[], variance: 'population' | 'sample' = 'population'): number {
  if (variance === 'sample') {
    if (x.length === 1) return 0;
    const mean = x.reduce((a, b) => a + b, 0) / x.length;
    const v = x.reduce((a, b) => a + (b - mean) ** 2, 0) / (x.length - 1);
    return v / (mean * mean + 1e-10);
  }
  const n = x.length + 1e-10;
  const mean = x.reduce((a, b) => a + b, 0) / n;
  const v = x.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  return v / (mean * mean + 1e-10);
}

/** Shazeer eq. 9 with kth_excluding written out: the k-th highest of H excluding component i. */
export function referenceLoad(clean: number[][], noisy: number[][], std: number[][], k: number): number[] {
  const n = clean[0].length;
  const load = new Array(n).fill(0);
  clean.forEach((row, t) => {
    for (let i = 0; i < n; i++) {
      const others = noisy[t].filter((_, j) => j !== i).sort((a, b) => b - a);
      load[i] += normalCdf((row[i] - others[k - 1]) / std[t][i]);
    }
  });
  return load;
}

/** Fedus et al. eqs. 4-6 with the top-1 of each token. */
export function referenceSwitchLoss(logits: number[][], alpha: number): number {
  const n = logits[0].length;
  const f = new Array(n).fill(0);
  const p = new Array(n).fill(0);
  for (const row of logits) {
    const probs = softmax(row);
    f[argsortDescending(row)[0]] += 1 / logits.length;
    probs.forEach((v, e) => (p[e] += v / logits.length));
  }
  return alpha * n * f.reduce((s, v, e) => s + v * p[e], 0);
}

/** HF load_balancing_loss_func, without a mask: layers concatenated, one_hot(top-k) averaged per slot. */
export function referenceMixtralLoss(layers: number[][][], k: number): number {
  const rows = layers.flat();
  const n = rows[0].length;
  const perSlot = Array.from({ length: k }, () => new Array(n).fill(0));
  const meanProb = new Array(n).fill(0);
  for (const row of rows) {
    const p = softmax(row);
    argsortDescending(p)
      .slice(0, k)
      .forEach((e, j) => (perSlot[j][e] += 1 / rows.length));
    p.forEach((v, e) => (meanProb[e] += v / rows.length));
  }
  return n * perSlot.reduce((s, slot) => s + slot.reduce((a, v, e) => a + v * meanProb[e], 0), 0);
}

/** ST-MoE: mean of logsumexp^2. */
export function referenceZLoss(logits: number[][]): number {
  return logits.reduce((s, row) => {
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    return s + (lse * lse) / logits.length;
  }, 0);
}
