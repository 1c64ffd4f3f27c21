import { describe, rangeError, typeError } from '../errors';
import { typedArrayTag } from '../typed-arrays';
import { Matrix, checkMatrix } from './common';

/**
 * dL/dW [E, dModel] for logits = x W^T, from dL/dlogits [T, E] and x [T, dModel]: the chain rule step from
 * any router's backward to its weight matrix (W_g, or W_noise for noisy top-k).
 */
export function routerWeightGradient(gradLogits: ArrayLike<number>, x: Matrix): Float64Array {
  const { data, tokens, numExperts: dModel } = checkMatrix(x, 'x');
  if (typedArrayTag(gradLogits) === undefined && !Array.isArray(gradLogits))
    throw typeError('gradLogits to be a typed array [tokens, numExperts]', describe(gradLogits));
  for (let i = 0; i < gradLogits.length; i++)
    if (typeof gradLogits[i] !== 'number' || !Number.isFinite(gradLogits[i]))
      throw rangeError('gradLogits to contain only finite numbers', `${describe(gradLogits[i])} at gradLogits[${i}]`);
  if (gradLogits.length === 0) throw rangeError('gradLogits to have at least tokens elements', '0');
  if (gradLogits.length % tokens !== 0) throw rangeError(`gradLogits.length to be a multiple of ${tokens} (tokens)`, `${gradLogits.length}`);
  const n = gradLogits.length / tokens;
  const out = new Float64Array(n * dModel);
  for (let t = 0; t < tokens; t++)
    for (let e = 0; e < n; e++) {
      const g = gradLogits[t * n + e];
      if (g === 0) continue;
      for (let i = 0; i < dModel; i++) out[e * dModel + i] += g * data[t * dModel + i];
    }
  return out;
}
