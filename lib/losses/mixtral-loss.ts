import { describe, rangeError, typeError } from '../errors';
import { Matrix, checkMatrix, rankTop, softmaxRow } from '../gating/common';
import { typedArrayTag } from '../typed-arrays';
import { expectInteger } from '../validate';

/**
 * Hugging Face's load_balancing_loss_func (Mixtral): the router logits of all layers pooled along the tokens,
 * p = softmax, the top-k per token, tokens_per_expert = mean one-hot per top-k slot ([k, E]: one row per slot),
 * router_prob_per_expert = mean p ([E]); loss = E * sum over slots and experts of their product. Equals topK under
 * uniform routing. With attentionMask ([batch * seqLen] of 0/1, the tokens of every layer laid out batch-major),
 * both means skip the padding. Returns the gradient w.r.t. each layer's logits.
 */
export function mixtralLoss(logitsPerLayer: Matrix[], numExperts: number, topK: number, attentionMask?: ArrayLike<number>) {
  if (!Array.isArray(logitsPerLayer) || logitsPerLayer.length === 0)
    throw typeError('logitsPerLayer to be a non-empty array of [tokens, numExperts] matrices', describe(logitsPerLayer));
  const n = expectInteger(numExperts, 'numExperts');
  const k = expectInteger(topK, 'topK', 1, n);
  const layers = logitsPerLayer.map((l, i) => {
    const m = checkMatrix(l, `logitsPerLayer[${i}]`);
    if (m.numExperts !== n) throw rangeError(`logitsPerLayer[${i}].shape[1] = ${n} (numExperts)`, `${m.numExperts}`);
    if (m.tokens !== checkMatrix(logitsPerLayer[0], 'logitsPerLayer[0]').tokens)
      throw rangeError(`every layer with the same tokens as layer 0`, `layer ${i} with ${m.tokens}`);
    return m;
  });
  const tokens = layers[0].tokens;
  let mask: ArrayLike<number> = new Float64Array(tokens).fill(1);
  if (attentionMask !== undefined) {
    if (typedArrayTag(attentionMask) === undefined && !Array.isArray(attentionMask))
      throw typeError('attentionMask to be an array [tokens]', describe(attentionMask));
    if (attentionMask.length !== tokens) throw rangeError(`attentionMask.length = ${tokens} (tokens per layer)`, `${attentionMask.length}`);
    mask = attentionMask;
  }
  let count = 0;
  for (let t = 0; t < tokens; t++) count += mask[t];
  if (count === 0) throw rangeError('attentionMask with at least one token', 'all padding');
  count *= layers.length;
  const perSlot = new Float64Array(k * n); // tokens_per_expert [k, E]
  const meanProb = new Float64Array(n); // router_prob_per_expert [E]
  const probs = layers.map(({ data }) => {
    const p = new Float64Array(tokens * n);
    for (let t = 0; t < tokens; t++) {
      const row = softmaxRow(data, t, n, p.subarray(t * n, (t + 1) * n));
      if (!mask[t]) continue;
      rankTop(row, 0, n, k).forEach((e, j) => (perSlot[j * n + e] += mask[t] / count));
      for (let e = 0; e < n; e++) meanProb[e] += (mask[t] * row[e]) / count;
    }
    return p;
  });
  let value = 0;
  const slotSum = new Float64Array(n); // sum over slots of tokens_per_expert[j, e]
  for (let j = 0; j < k; j++)
    for (let e = 0; e < n; e++) {
      value += perSlot[j * n + e] * meanProb[e];
      slotSum[e] += perSlot[j * n + e];
    }
  // dloss/dp[t, e] = E slotSum[e] mask[t] / count, then through each token's softmax.
  const gradLogits = probs.map((p) => {
    const g = new Float64Array(tokens * n);
    for (let t = 0; t < tokens; t++) {
      if (!mask[t]) continue;
      let dot = 0;
      for (let e = 0; e < n; e++) dot += p[t * n + e] * slotSum[e];
      for (let e = 0; e < n; e++) g[t * n + e] = ((n * mask[t]) / count) * p[t * n + e] * (slotSum[e] - dot);
    }
    return g;
  });
  return { value: n * value, tokensPerExpert: perSlot, routerProbPerExpert: meanProb, gradLogits };
}
