import { describe, rangeError, typeError } from '../errors';
import { typedArrayTag } from '../typed-arrays';
import { expectOneOf, expectOptions } from '../validate';

export type Variance = 'population' | 'sample';

export interface LossResult {
  value: number;
}

export function checkVector(v: unknown, name: string): ArrayLike<number> {
  if (typedArrayTag(v) === undefined && !Array.isArray(v))
    throw typeError(`${name} to be a typed array or an array of numbers`, describe(v));
  const a = v as ArrayLike<number>;
  if (a.length === 0) throw rangeError(`${name} to be non-empty`, 'an empty array');
  for (let i = 0; i < a.length; i++)
    if (!Number.isFinite(a[i])) throw rangeError(`${name} to contain only finite values`, `${a[i]} at ${name}[${i}]`);
  return a;
}

const EPS = 1e-10;

/**
 * The squared coefficient of variation, var / (mean^2 + 1e-10), and its gradient.
 * 'population' (default) is tensor2tensor's cv_squared: n is size + 1e-10 and both the mean and the variance
 * divide by it. 'sample' is the PyTorch ports' x.var() / (x.mean()^2 + 1e-10) (davidmrau, FastMoE, Tutel):
 * unbiased variance (n - 1), n/(n-1) times the population value; it is 0 for a single element, as there.
 */
export function cvSquared(v: ArrayLike<number>, options: { variance?: Variance } = {}): LossResult & { grad: Float64Array } {
  options = expectOptions(options, 'options');
  const x = checkVector(v, 'v');
  const variance = expectOneOf(options.variance ?? 'population', 'options.variance', ['population', 'sample'] as const);
  const n = x.length;
  const grad = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += x[i];
  if (variance === 'sample') {
    if (n === 1) return { value: 0, grad };
    const mean = sum / n;
    let ss = 0;
    for (let i = 0; i < n; i++) ss += (x[i] - mean) ** 2;
    const vr = ss / (n - 1);
    const d = mean * mean + EPS;
    for (let i = 0; i < n; i++) grad[i] = (2 * (x[i] - mean)) / (n - 1) / d - (vr * 2 * mean) / n / (d * d);
    return { value: vr / d, grad };
  }
  const count = n + EPS;
  const mean = sum / count;
  let ss = 0;
  let dev = 0;
  for (let i = 0; i < n; i++) {
    ss += (x[i] - mean) ** 2;
    dev += x[i] - mean;
  }
  const vr = ss / count;
  const d = mean * mean + EPS;
  // dV/dx_i = (2 / count) ((x_i - mean) - sum_j (x_j - mean) / count), since dmean/dx_i = 1 / count
  for (let i = 0; i < n; i++) {
    const dV = (2 / count) * (x[i] - mean - dev / count);
    grad[i] = dV / d - (vr * 2 * mean) / count / (d * d);
  }
  return { value: vr / d, grad };
}
