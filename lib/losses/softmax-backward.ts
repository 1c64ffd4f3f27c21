import { describe, rangeError, typeError } from '../errors';
import { MAX_EXPERTS, expectInteger } from '../validate';

/** dL/dlogits from dL/dprobs for row-wise probs = softmax(logits) [T, E]: p (g - sum p g). */
export function softmaxBackward(probs: ArrayLike<number>, gradProbs: ArrayLike<number>, numExperts: number): Float64Array {
  // numExperts must be a positive integer: 5e-324 once made the row count Infinity, a loop without end.
  expectInteger(numExperts, 'numExperts', 1, MAX_EXPERTS);
  for (const [name, a] of [
    ['probs', probs],
    ['gradProbs', gradProbs],
  ] as const)
    if (typeof a !== 'object' || a === null || typeof a.length !== 'number')
      throw typeError(`${name} to be an array of numbers`, describe(a));
  if (probs.length !== gradProbs.length || probs.length % numExperts !== 0)
    throw rangeError(`probs and gradProbs of equal length, a multiple of ${numExperts}`, `${probs.length} and ${gradProbs.length}`);
  const out = new Float64Array(probs.length);
  for (let i = 0; i < probs.length; i++)
    if (!Number.isFinite(probs[i]) || !Number.isFinite(gradProbs[i]))
      throw rangeError(
        'probs and gradProbs to contain only finite numbers',
        `${Number.isFinite(probs[i]) ? gradProbs[i] : probs[i]} at [${i}]`,
      );
  for (let t = 0; t < probs.length / numExperts; t++) {
    let dot = 0;
    for (let e = 0; e < numExperts; e++) dot += probs[t * numExperts + e] * gradProbs[t * numExperts + e];
    for (let e = 0; e < numExperts; e++) out[t * numExperts + e] = probs[t * numExperts + e] * (gradProbs[t * numExperts + e] - dot);
  }
  return out;
}
