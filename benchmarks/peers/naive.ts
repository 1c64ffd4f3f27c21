/**
 * The plain TypeScript MoE a user would write first: softmax top-k routing, then for every token and every
 * chosen expert three matrix-vector products in nested loops over Float32Arrays. The baseline the native
 * kernels are compared with.
 */
import { MoEWeights } from '../../lib';

export function naiveMoE(
  x: Float32Array,
  tokens: number,
  w: MoEWeights,
  c: { dModel: number; dHidden: number; numExperts: number; topK: number },
): Float32Array {
  const { dModel: d, dHidden: h, numExperts: n, topK: k } = c;
  const router = w.router.data as Float32Array;
  const w1 = w.w1.data as Float32Array;
  const w3 = w.w3!.data as Float32Array;
  const w2 = w.w2.data as Float32Array;
  const out = new Float32Array(tokens * d);
  const logits = new Float32Array(n);
  const hidden = new Float32Array(h);
  for (let t = 0; t < tokens; t++) {
    const xo = t * d;
    for (let e = 0; e < n; e++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += x[xo + i] * router[e * d + i];
      logits[e] = s;
    }
    const order = Array.from(logits.keys())
      .sort((a, b) => logits[b] - logits[a] || a - b)
      .slice(0, k);
    const max = logits[order[0]];
    const exps = order.map((e) => Math.exp(logits[e] - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    order.forEach((e, j) => {
      for (let r = 0; r < h; r++) {
        let g = 0;
        let u = 0;
        const base = (e * h + r) * d;
        for (let i = 0; i < d; i++) {
          g += w1[base + i] * x[xo + i];
          u += w3[base + i] * x[xo + i];
        }
        hidden[r] = (g / (1 + Math.exp(-g))) * u;
      }
      const weight = exps[j] / sum;
      for (let i = 0; i < d; i++) {
        let s = 0;
        const base = (e * d + i) * h;
        for (let r = 0; r < h; r++) s += w2[base + r] * hidden[r];
        out[xo + i] += weight * s;
      }
    });
  }
  return out;
}
