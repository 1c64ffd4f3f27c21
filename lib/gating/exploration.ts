import { rangeError, describe } from '../errors';
import { expectSeed } from '../tensor';
import { expectOptions } from '../validate';
import { Random } from '../random';
import { Matrix, checkMatrix } from './common';

/**
 * Uniform exploration noise on router logits, logits + U[0, scale) (Chen et al. 2022, used with a
 * zero-initialised router so that early routing is decided by the noise alone). Returns new logits.
 */
export function explorationNoise(logits: Matrix, options: { scale?: number; seed?: number } = {}): Float64Array {
  options = expectOptions(options, 'options') as { scale?: number; seed?: number };
  const { data } = checkMatrix(logits, 'logits');
  const scale = options.scale ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale < 0)
    throw rangeError('scale to be a finite number >= 0', describe(scale));
  const rng = new Random(expectSeed(options.seed ?? 0, 'options.seed'));
  return Float64Array.from(data, (v) => v + scale * rng.uniform());
}

/**
 * Switch Transformer's multiplicative jitter on the router input: x * U(1 - epsilon, 1 + epsilon)
 * (mesh-TF; DeepSpeed multiplicative_jitter; epsilon 1e-2 in the paper). Returns a new array; x is untouched.
 */
export function multiplicativeJitter(x: Float32Array, epsilon: number, seed = 0): Float32Array {
  if (typeof epsilon !== 'number' || !Number.isFinite(epsilon) || epsilon < 0 || epsilon >= 1)
    throw rangeError('epsilon to be a number in [0, 1)', describe(epsilon));
  const rng = new Random(expectSeed(seed, 'seed'));
  return Float32Array.from(x, (v) => v * (1 - epsilon + 2 * epsilon * rng.uniform()));
}
