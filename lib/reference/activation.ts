/** float64 activations, the reference for the native kernels. */
import { Activation } from '../activation';

/** erf to about 1e-15: Taylor series near 0, continued fraction for erfc in the tails. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  return Math.sign(x) * (1 - erfcTail(ax));
}

/** erfc(x) for x >= 2.5, by the Lentz continued fraction erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + ...))). */
function erfcTail(x: number): number {
  const tiny = 1e-300;
  let f = x;
  let c = x;
  let d = 0;
  for (let n = 1; n < 300; n++) {
    const a = n / 2;
    d = x + a * d;
    d = Math.abs(d) < tiny ? tiny : d;
    c = x + a / c;
    c = Math.abs(c) < tiny ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
}

export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));
export const silu = (x: number): number => x * sigmoid(x);
/** gelu, exact erf form: x * Phi(x). */
export const gelu = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));
/** gelu, tanh approximation (Hendrycks & Gimpel 2016). */
export const geluTanh = (x: number): number =>
  0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
export const relu = (x: number): number => (x > 0 ? x : 0);

/** The elementwise function applied to the first projection (for gated activations, to the gate). */
export function activationFunction(activation: Activation): (x: number) => number {
  switch (activation) {
    case 'swiglu':
    case 'silu':
      return silu;
    case 'geglu':
    case 'gelu':
      return gelu;
    case 'gelu-tanh':
      return geluTanh;
    case 'relu':
      return relu;
    case 'identity':
      return (x) => x;
  }
}
