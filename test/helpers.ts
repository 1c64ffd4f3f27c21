/** Shared test helpers: seeded layers with their float64 reference, and error matching by message. */
import { Activation, MoELayer, MoEWeights, Tensor, isGated } from '../lib';
import { Random } from '../lib/random';
import { ReferenceConfig, referenceMoE } from '../lib/reference';

export interface Case {
  tokens: number;
  dModel: number;
  dHidden: number;
  numExperts: number;
  topK: number;
  activation: Activation;
  bias: boolean;
  normalizeTopK?: boolean;
  /** 'swiglu-clamped' only. */
  swigluAlpha?: number;
  swigluLimit?: number;
}

export function randomWeights(c: Case, seed: number): MoEWeights {
  const rng = new Random(seed);
  const s = () => rng.nextUint32();
  const { dModel: d, dHidden: h, numExperts: e } = c;
  const gated = isGated(c.activation);
  return {
    router: Tensor.randn([e, d], { seed: s(), std: 1 / Math.sqrt(d) }),
    w1: Tensor.randn([e, h, d], { seed: s(), std: 1 / Math.sqrt(d) }),
    w3: gated ? Tensor.randn([e, h, d], { seed: s(), std: 1 / Math.sqrt(d) }) : undefined,
    w2: Tensor.randn([e, d, h], { seed: s(), std: 1 / Math.sqrt(h) }),
    b1: c.bias ? Tensor.randn([e, h], { seed: s(), std: 0.2 }) : undefined,
    b3: c.bias && gated ? Tensor.randn([e, h], { seed: s(), std: 0.2 }) : undefined,
    b2: c.bias ? Tensor.randn([e, d], { seed: s(), std: 0.2 }) : undefined,
  };
}

export function referenceFor(c: Case, w: MoEWeights, x: Tensor) {
  const config: ReferenceConfig = { ...c, normalizeTopK: c.normalizeTopK ?? true };
  return referenceMoE(
    x.data as Float32Array,
    c.tokens,
    {
      router: w.router.data as Float32Array,
      w1: w.w1.data as Float32Array,
      w3: (w.w3?.data as Float32Array) ?? null,
      w2: w.w2.data as Float32Array,
      b1: (w.b1?.data as Float32Array) ?? null,
      b3: (w.b3?.data as Float32Array) ?? null,
      b2: (w.b2?.data as Float32Array) ?? null,
    },
    config,
  );
}

/** max |a - b| / max |b|: the error relative to the output's scale. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale === 0 ? diff : diff / scale;
}

export function layerFor(c: Case, w: MoEWeights, threads?: number): MoELayer {
  return new MoELayer({ ...c, threads }, w);
}

/** Asserts fn throws `kind` (TypeError / RangeError, matched by name: Jest runs in another realm) with a message matching re. */
export function expectError(fn: () => unknown, kind: 'TypeError' | 'RangeError', re: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  checkError(caught, kind, re);
}

/** The async form of expectError: `p` rejects with `kind` and a message in the one format matching `re`. */
export async function expectRejection(p: Promise<unknown>, kind: 'TypeError' | 'RangeError', re: RegExp): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  checkError(caught, kind, re);
}

function checkError(caught: unknown, kind: 'TypeError' | 'RangeError', re: RegExp): void {
  expect(caught).toBeDefined();
  const err = caught as Error;
  expect(err.name).toBe(kind);
  expect(err.message).toMatch(/^moe-kernels: expected .+ but got .+/s);
  expect(err.message).toMatch(re);
}

/**
 * max |numeric - analytic| / max |analytic| over every coordinate of x, numeric by central differences of f;
 * absolute when the gradient is (near) zero, e.g. a constant loss.
 */
export function finiteDifferenceError(f: (x: Float64Array) => number, x: Float64Array, analytic: ArrayLike<number>, h = 1e-6): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < x.length; i++) {
    const plus = x.slice();
    const minus = x.slice();
    plus[i] += h;
    minus[i] -= h;
    diff = Math.max(diff, Math.abs((f(plus) - f(minus)) / (2 * h) - analytic[i]));
    scale = Math.max(scale, Math.abs(analytic[i]));
  }
  return scale > 1e-8 ? diff / scale : diff;
}
