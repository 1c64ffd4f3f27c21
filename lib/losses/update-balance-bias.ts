import { describe, rangeError, typeError } from '../errors';
import { typedArrayTag } from '../typed-arrays';
import { checkVector } from './cv-squared';

/**
 * DeepSeek-V3's auxiliary-loss-free balancing (eq. 16 and after; Wang et al. 2024): after a step,
 * b_i <- b_i - gamma for an overloaded expert (load above the mean), b_i + gamma for an underloaded one,
 * unchanged at the mean; b_i + gamma sign(mean - load_i). Returns the new bias; the input is not modified.
 */
export function updateBalanceBias(bias: ArrayLike<number>, tokensPerExpert: ArrayLike<number>, gamma: number): Float64Array {
  const b = checkVector(bias, 'bias');
  if (typedArrayTag(tokensPerExpert) === undefined && !Array.isArray(tokensPerExpert))
    throw typeError('tokensPerExpert to be an array', describe(tokensPerExpert));
  const load = checkVector(tokensPerExpert, 'tokensPerExpert');
  if (load.length !== b.length) throw rangeError(`tokensPerExpert.length = ${b.length} (bias.length)`, `${load.length}`);
  if (typeof gamma !== 'number' || !Number.isFinite(gamma) || gamma < 0)
    throw rangeError('gamma to be a finite number >= 0', describe(gamma));
  let mean = 0;
  for (let i = 0; i < load.length; i++) mean += load[i] / load.length;
  return Float64Array.from(b, (v, i) => v + gamma * Math.sign(mean - load[i]));
}
