/**
 * The expert activations, one entry each: whether it is gated (uses both w1 and w3: act(x W1^T) * (x W3^T), Shazeer
 * 2020, "GLU Variants"). The core's table (kActivationTable in native/include/moe/moe.h) has one entry per name here;
 * test/core-tables.test.ts compares them. Each one's math: the kernels' epilogue and unit_backward, and
 * lib/reference's float64 twin.
 */
export const ACTIVATION_TABLE = {
  swiglu: { gated: true },
  geglu: { gated: true },
  gelu: { gated: false },
  'gelu-tanh': { gated: false },
  relu: { gated: false },
  silu: { gated: false },
  identity: { gated: false },
  'swiglu-clamped': { gated: true },
} as const;

export type Activation = keyof typeof ACTIVATION_TABLE;
export const ACTIVATIONS = Object.freeze(Object.keys(ACTIVATION_TABLE)) as readonly Activation[];

/**
 * 'swiglu-clamped' is gpt-oss's gated unit (transformers GptOssExperts): with g = x W1^T + b1 and u = x W3^T + b3,
 * g' = min(g, limit), u' = clamp(u, -limit, limit), out = g' sigmoid(alpha g') (u' + 1). gpt-oss uses alpha = 1.702
 * (the sigmoid approximation of gelu) and limit = 7 (its config's swiglu_limit), the defaults here.
 */
export const SWIGLU_CLAMPED_DEFAULTS = { alpha: 1.702, limit: 7 } as const;

/** Whether `activation` is gated (false for a name that is not an activation). */
export function isGated(activation: Activation): boolean {
  return Object.prototype.hasOwnProperty.call(ACTIVATION_TABLE, activation) && ACTIVATION_TABLE[activation].gated;
}
