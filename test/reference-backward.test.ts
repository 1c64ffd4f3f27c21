/**
 * The float64 backward of the expert part (lib/reference/backward.ts) by central finite differences: every
 * parameter, the input and the routing weights, on awkward shapes (1 token, k = E, dropped slots, experts with no
 * token, biases, shared experts with and without their gate), for every activation.
 */
import { ACTIVATIONS, Activation, Tensor, isGated, reference } from '../lib';
import { ReferenceConfig, ReferenceWeights } from '../lib/reference';

const rand = (n: number, seed: number, std = 0.5) => Float64Array.from(Tensor.randn([n], { seed, std }).data);

interface Setup {
  tokens: number;
  d: number;
  h: number;
  e: number;
  k: number;
  experts: number[];
  shared?: { count: number; h: number; gated: boolean };
}

function check(activation: Activation, s: Setup, seed: number) {
  const gated = isGated(activation);
  const c: ReferenceConfig = {
    dModel: s.d,
    dHidden: s.h,
    numExperts: s.e,
    topK: s.k,
    activation,
    normalizeTopK: true,
    swigluAlpha: 1.3,
    swigluLimit: 0.6,
  };
  const params: Record<string, Float64Array> = {
    x: rand(s.tokens * s.d, seed, 1),
    weights: rand(s.tokens * s.k, seed + 1, 0.7),
    w1: rand(s.e * s.h * s.d, seed + 2),
    w2: rand(s.e * s.d * s.h, seed + 3),
    b1: rand(s.e * s.h, seed + 4, 0.3),
    b2: rand(s.e * s.d, seed + 5, 0.3),
    ...(gated ? { w3: rand(s.e * s.h * s.d, seed + 6), b3: rand(s.e * s.h, seed + 7, 0.3) } : {}),
  };
  if (s.shared) {
    const n = s.shared.count;
    Object.assign(params, {
      sw1: rand(n * s.shared.h * s.d, seed + 8),
      sw2: rand(n * s.d * s.shared.h, seed + 9),
      sb1: rand(n * s.shared.h, seed + 10, 0.3),
      sb2: rand(n * s.d, seed + 11, 0.3),
      ...(gated ? { sw3: rand(n * s.shared.h * s.d, seed + 12), sb3: rand(n * s.shared.h, seed + 13, 0.3) } : {}),
      ...(s.shared.gated ? { gate: rand(n * s.d, seed + 14, 0.8) } : {}),
    });
  }
  const dOut = rand(s.tokens * s.d, seed + 15, 1);
  const weightsOf = (p: Record<string, Float64Array>, prefix = ''): ReferenceWeights => ({
    router: new Float64Array(0),
    w1: p[`${prefix}w1`],
    w3: p[`${prefix}w3`] ?? null,
    w2: p[`${prefix}w2`],
    b1: p[`${prefix}b1`],
    b3: p[`${prefix}b3`] ?? null,
    b2: p[`${prefix}b2`],
  });
  const shared = (p: Record<string, Float64Array>) =>
    s.shared ? { weights: weightsOf(p, 's'), count: s.shared.count, dHidden: s.shared.h, gate: p.gate ?? null } : undefined;
  const loss = (p: Record<string, Float64Array>) => {
    const out = reference.referenceExperts(p.x, s.tokens, weightsOf(p), c, s.k, s.experts, p.weights, shared(p));
    return out.reduce((acc, v, i) => acc + v * dOut[i], 0);
  };
  const g = reference.referenceExpertsBackward(
    params.x,
    s.tokens,
    weightsOf(params),
    c,
    s.k,
    s.experts,
    params.weights,
    dOut,
    shared(params),
  );
  const analytic: Record<string, ArrayLike<number> | null | undefined> = {
    x: g.dx,
    weights: g.dWeights,
    w1: g.dw1,
    w3: g.dw3,
    w2: g.dw2,
    b1: g.db1,
    b3: g.db3,
    b2: g.db2,
    sw1: g.shared?.dw1,
    sw3: g.shared?.dw3,
    sw2: g.shared?.dw2,
    sb1: g.shared?.db1,
    sb3: g.shared?.db3,
    sb2: g.shared?.db2,
    gate: g.shared?.dGate,
  };
  const eps = 1e-6;
  for (const [name, values] of Object.entries(params)) {
    const grad = analytic[name]!;
    expect(grad).toBeTruthy();
    expect(grad.length).toBe(values.length);
    for (let i = 0; i < values.length; i++) {
      const keep = values[i];
      values[i] = keep + eps;
      const up = loss(params);
      values[i] = keep - eps;
      const down = loss(params);
      values[i] = keep;
      const numeric = (up - down) / (2 * eps);
      if (Math.abs(numeric - grad[i]) > 1e-6 * Math.max(1, Math.abs(numeric)))
        throw new Error(`${activation}: d${name}[${i}] analytic ${grad[i]} numeric ${numeric}`);
    }
  }
}

const SETUPS: [string, Setup][] = [
  ['1 token, k = E', { tokens: 1, d: 5, h: 7, e: 3, k: 3, experts: [2, 0, 1] }],
  ['dropped slots and an expert with no token', { tokens: 4, d: 4, h: 6, e: 5, k: 2, experts: [0, 3, -1, 3, 0, -1, 3, 0] }],
  ['shared experts with their gate', { tokens: 3, d: 4, h: 5, e: 3, k: 1, experts: [1, 1, 2], shared: { count: 2, h: 3, gated: true } }],
  [
    'a shared expert without a gate',
    { tokens: 2, d: 3, h: 4, e: 2, k: 2, experts: [0, 1, 1, 0], shared: { count: 1, h: 5, gated: false } },
  ],
];

describe.each(ACTIVATIONS)('reference backward, %s', (activation) => {
  test.each(SETUPS)('%s', (_, setup) => check(activation, setup, 7));
});
