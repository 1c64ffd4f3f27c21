/** float64 activations, the reference for the native kernels. */
import { Activation } from '../activation';
import { erf } from '../math';

export { erf };

export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));
export const silu = (x: number): number => x * sigmoid(x);
/** gelu, exact erf form: x * Phi(x). */
export const gelu = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));
/** gelu, tanh approximation (Hendrycks & Gimpel 2016). */
export const geluTanh = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
export const relu = (x: number): number => (x > 0 ? x : 0);

/** The elementwise function applied to the first projection (for gated activations, to the gate). */
export function activationFunction(activation: Activation): (x: number) => number {
  switch (activation) {
    case 'swiglu':
    case 'swiglu-clamped':
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

/**
 * The gated unit from the gate and up pre-activations: act(g) * u, or for 'swiglu-clamped' gpt-oss's
 * min(g, limit) sigmoid(alpha min(g, limit)) (clamp(u, -limit, limit) + 1).
 */
export function gatedUnit(activation: Activation, alpha = 1.702, limit = 7): (g: number, u: number) => number {
  if (activation !== 'swiglu-clamped') {
    const act = activationFunction(activation);
    return (g, u) => act(g) * u;
  }
  return (g, u) => {
    const gc = Math.min(g, limit);
    return gc * sigmoid(alpha * gc) * (Math.max(Math.min(u, limit), -limit) + 1);
  };
}
