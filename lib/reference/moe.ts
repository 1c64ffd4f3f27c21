/**
 * A float64, pure-TypeScript MoE forward: the reference that the native kernels are tested against, and
 * the plain baseline in benchmarks. Written for clarity, not speed.
 */
import { Activation, isGated } from '../activation';
import { activationFunction, gatedUnit } from './activation';

export interface ReferenceWeights {
  router: ArrayLike<number>; // [E, d]
  w1: ArrayLike<number>; // [E, h, d]
  w3?: ArrayLike<number> | null; // [E, h, d]
  w2: ArrayLike<number>; // [E, d, h]
  b1?: ArrayLike<number> | null; // [E, h]
  b3?: ArrayLike<number> | null; // [E, h]
  b2?: ArrayLike<number> | null; // [E, d]
}

export interface ReferenceConfig {
  dModel: number;
  dHidden: number;
  numExperts: number;
  topK: number;
  activation: Activation;
  normalizeTopK: boolean;
  /** 'swiglu-clamped' only (defaults 1.702 and 7, gpt-oss's). */
  swigluAlpha?: number;
  swigluLimit?: number;
}

/** logits[t, e] = sum_i x[t, i] router[e, i]. */
export function referenceRouterLogits(
  x: ArrayLike<number>,
  tokens: number,
  dModel: number,
  router: ArrayLike<number>,
  numExperts: number,
): Float64Array {
  const out = new Float64Array(tokens * numExperts);
  for (let t = 0; t < tokens; t++)
    for (let e = 0; e < numExperts; e++) {
      let s = 0;
      for (let i = 0; i < dModel; i++) s += x[t * dModel + i] * router[e * dModel + i];
      out[t * numExperts + e] = s;
    }
  return out;
}

/** Softmax over all experts, top-k by logit (ties to the lower index), optionally renormalised (HF Mixtral). */
export function referenceTopK(logits: ArrayLike<number>, tokens: number, numExperts: number, k: number, normalize: boolean) {
  const experts = new Int32Array(tokens * k);
  const weights = new Float64Array(tokens * k);
  for (let t = 0; t < tokens; t++) {
    const row = Array.from({ length: numExperts }, (_, e) => logits[t * numExperts + e]);
    const max = Math.max(...row);
    const exps = row.map((l) => Math.exp(l - max));
    const total = exps.reduce((a, b) => a + b, 0);
    const ranked = row
      .map((l, e) => ({ l, e }))
      .sort((a, b) => b.l - a.l || a.e - b.e)
      .slice(0, k);
    const selected = ranked.reduce((s, r) => s + exps[r.e], 0);
    ranked.forEach((r, j) => {
      experts[t * k + j] = r.e;
      weights[t * k + j] = exps[r.e] / (normalize ? selected : total);
    });
  }
  return { experts, weights };
}

/**
 * One expert on one token, every intermediate: the pre-activations g = W1 x + b1 and u = W3 x + b3 (gated only),
 * the hidden units a = act(g) [* u], and the output y = W2 a + b2.
 */
export function referenceExpertPass(x: ArrayLike<number>, xOffset: number, expert: number, w: ReferenceWeights, c: ReferenceConfig) {
  const { dModel: d, dHidden: h } = c;
  const act = activationFunction(c.activation);
  const gated = isGated(c.activation);
  const unit = gatedUnit(c.activation, c.swigluAlpha, c.swigluLimit);
  const g = new Float64Array(h);
  const u = new Float64Array(h);
  const a = new Float64Array(h);
  for (let j = 0; j < h; j++) {
    let sg = w.b1 ? w.b1[expert * h + j] : 0;
    let su = gated && w.b3 ? w.b3[expert * h + j] : 0;
    const base = (expert * h + j) * d;
    for (let i = 0; i < d; i++) {
      sg += w.w1[base + i] * x[xOffset + i];
      if (gated) su += w.w3![base + i] * x[xOffset + i];
    }
    g[j] = sg;
    u[j] = su;
    a[j] = gated ? unit(sg, su) : act(sg);
  }
  const y = new Float64Array(d);
  for (let i = 0; i < d; i++) {
    let s = w.b2 ? w.b2[expert * d + i] : 0;
    const base = (expert * d + i) * h;
    for (let j = 0; j < h; j++) s += w.w2[base + j] * a[j];
    y[i] = s;
  }
  return { g, u, a, y };
}

/** One expert on one token: W2 (act(W1 x + b1) [* (W3 x + b3)]) + b2. */
export function referenceExpert(
  x: ArrayLike<number>,
  xOffset: number,
  expert: number,
  w: ReferenceWeights,
  c: ReferenceConfig,
): Float64Array {
  return referenceExpertPass(x, xOffset, expert, w, c).y;
}

/**
 * The expert part for any routing: y[t] = sum over slots j of weights[t*k+j] * E_{experts[t*k+j]}(x[t])
 * (slots with expert -1 skipped), plus every shared expert with weight 1 (DeepSeekMoE), or with weight
 * sigmoid(x . gate[s]) when the shared experts have a gate [count, dModel] (Qwen2-MoE's shared_expert_gate).
 */
export function referenceExperts(
  x: ArrayLike<number>,
  tokens: number,
  w: ReferenceWeights,
  c: ReferenceConfig,
  k: number,
  experts: ArrayLike<number>,
  weights: ArrayLike<number>,
  shared?: { weights: ReferenceWeights; count: number; dHidden: number; gate?: ArrayLike<number> | null },
): Float64Array {
  const output = new Float64Array(tokens * c.dModel);
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < k; j++) {
      const e = experts[t * k + j];
      if (e < 0) continue;
      const y = referenceExpert(x, t * c.dModel, e, w, c);
      for (let i = 0; i < c.dModel; i++) output[t * c.dModel + i] += weights[t * k + j] * y[i];
    }
    for (let s = 0; s < (shared?.count ?? 0); s++) {
      const y = referenceExpert(x, t * c.dModel, s, shared!.weights, { ...c, dHidden: shared!.dHidden });
      let g = 1;
      if (shared!.gate) {
        let z = 0;
        for (let i = 0; i < c.dModel; i++) z += x[t * c.dModel + i] * shared!.gate[s * c.dModel + i];
        g = 1 / (1 + Math.exp(-z));
      }
      for (let i = 0; i < c.dModel; i++) output[t * c.dModel + i] += g * y[i];
    }
  }
  return output;
}

/** The whole layer: y[t] = sum over t's top-k experts e of weight(t, e) * E_e(x[t]). */
export function referenceMoE(x: ArrayLike<number>, tokens: number, w: ReferenceWeights, c: ReferenceConfig) {
  const logits = referenceRouterLogits(x, tokens, c.dModel, w.router, c.numExperts);
  const { experts, weights } = referenceTopK(logits, tokens, c.numExperts, c.topK, c.normalizeTopK);
  const tokensPerExpert = new Int32Array(c.numExperts);
  for (const e of experts) tokensPerExpert[e]++;
  const output = referenceExperts(x, tokens, w, c, c.topK, experts, weights);
  return { output, logits, experts, weights, tokensPerExpert };
}
