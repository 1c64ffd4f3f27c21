import { describe, rangeError, typeError } from '../errors';
import { typedArrayTag } from '../typed-arrays';
import { native } from '../native';
import { Matrix, checkMatrix } from './common';

/** The values as a Float64Array: the array itself when it is one, else a float64 copy. */
function float64(values: ArrayLike<number>): Float64Array {
  return typedArrayTag(values) === 'Float64Array' ? (values as Float64Array) : Float64Array.from(values);
}

/**
 * dL/dW [E, dModel] for logits = x W^T, from dL/dlogits [T, E] and x [T, dModel]: the chain rule step from
 * any router's backward to its weight matrix (W_g, or W_noise for noisy top-k).
 */
export function routerWeightGradient(gradLogits: ArrayLike<number>, x: Matrix): Float64Array {
  // A float32 x is checked finite by the binding, in the core's SIMD scan (a JavaScript scan of a 512 x 1024 x took
  // ~1 ms of a training step's backward).
  const float32 = typeof x === 'object' && x !== null && typedArrayTag((x as Matrix).data) === 'Float32Array';
  const { data, tokens, numExperts: dModel } = checkMatrix(x, 'x', !float32);
  if (typedArrayTag(gradLogits) === undefined && !Array.isArray(gradLogits))
    throw typeError('gradLogits to be a typed array [tokens, numExperts]', describe(gradLogits));
  for (let i = 0; i < gradLogits.length; i++)
    if (typeof gradLogits[i] !== 'number' || !Number.isFinite(gradLogits[i]))
      throw rangeError('gradLogits to contain only finite numbers', `${describe(gradLogits[i])} at gradLogits[${i}]`);
  if (gradLogits.length === 0) throw rangeError('gradLogits to have at least tokens elements', '0');
  if (gradLogits.length % tokens !== 0)
    throw rangeError(`gradLogits.length to be a multiple of ${tokens} (tokens)`, `${gradLogits.length}`);
  const n = gradLogits.length / tokens;
  // The GEMM runs in the core, in float64 with each product rounded before it is added, as this loop did in
  // TypeScript: bitwise the same result.
  // A float32 x (the layer's input) goes as it is: the core widens it exactly as it reads it, where a float64 copy
  // of a 512 x 1024 x cost 9-13 ms of fresh memory.
  const xs = typedArrayTag(data) === 'Float32Array' ? (data as Float32Array) : float64(data);
  return native().routerWeightGradient({ gradLogits: float64(gradLogits), x: xs, tokens, numExperts: n, dModel });
}
