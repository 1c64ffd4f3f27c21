/** The expert activations. Gated ones use both w1 and w3: act(x W1^T) * (x W3^T) (Shazeer 2020, "GLU Variants"). */
export const ACTIVATIONS = ['swiglu', 'geglu', 'gelu', 'gelu-tanh', 'relu', 'silu', 'identity', 'swiglu-clamped'] as const;
export type Activation = (typeof ACTIVATIONS)[number];

/**
 * 'swiglu-clamped' is gpt-oss's gated unit (transformers GptOssExperts): with g = x W1^T + b1 and u = x W3^T + b3,
 * g' = min(g, limit), u' = clamp(u, -limit, limit), out = g' sigmoid(alpha g') (u' + 1). gpt-oss uses alpha = 1.702
 * (the sigmoid approximation of gelu) and limit = 7 (its config's swiglu_limit), the defaults here.
 */
export const SWIGLU_CLAMPED_DEFAULTS = { alpha: 1.702, limit: 7 } as const;

export function isGated(activation: Activation): boolean {
  return activation === 'swiglu' || activation === 'geglu' || activation === 'swiglu-clamped';
}
