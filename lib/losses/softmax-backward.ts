import { rangeError } from '../errors';

/** dL/dlogits from dL/dprobs for row-wise probs = softmax(logits) [T, E]: p (g - sum p g). */
export function softmaxBackward(probs: ArrayLike<number>, gradProbs: ArrayLike<number>, numExperts: number): Float64Array {
  if (probs.length !== gradProbs.length || probs.length % numExperts !== 0)
    throw rangeError(`probs and gradProbs of equal length, a multiple of ${numExperts}`, `${probs.length} and ${gradProbs.length}`);
  const out = new Float64Array(probs.length);
  for (let t = 0; t < probs.length / numExperts; t++) {
    let dot = 0;
    for (let e = 0; e < numExperts; e++) dot += probs[t * numExperts + e] * gradProbs[t * numExperts + e];
    for (let e = 0; e < numExperts; e++) out[t * numExperts + e] = probs[t * numExperts + e] * (gradProbs[t * numExperts + e] - dot);
  }
  return out;
}
