/** The expert activations. Gated ones use both w1 and w3: act(x W1^T) * (x W3^T) (Shazeer 2020, "GLU Variants"). */
export const ACTIVATIONS = ['swiglu', 'geglu', 'gelu', 'gelu-tanh', 'relu', 'silu', 'identity'] as const;
export type Activation = (typeof ACTIVATIONS)[number];

export function isGated(activation: Activation): boolean {
  return activation === 'swiglu' || activation === 'geglu';
}
