/**
 * What the checkpoint families added to the layer, against the float64 reference: Qwen2-MoE's gated shared
 * experts, gpt-oss's router bias, DeepSeek-V2's group-limited top-k with its routed scaling factor; and their
 * refusals.
 */
import { MoELayer, Tensor, gating, reference } from '../lib';
import { Case, expectError, randomWeights, relativeError } from './helpers';

const c: Case = { tokens: 23, dModel: 33, dHidden: 40, numExperts: 8, topK: 3, activation: 'swiglu', bias: true };
const f64 = (t: Tensor | undefined) => (t ? Float64Array.from(t.data as Float32Array) : null);

function refWeights(w: ReturnType<typeof randomWeights>) {
  return { router: f64(w.router)!, w1: f64(w.w1)!, w3: f64(w.w3), w2: f64(w.w2)!, b1: f64(w.b1), b3: f64(w.b3), b2: f64(w.b2) };
}

test('shared experts with a sigmoid gate each (Qwen2-MoE), 1 and 23 tokens, any thread count the same bits', () => {
  const w = randomWeights(c, 1);
  const shared = randomWeights({ ...c, numExperts: 2, dHidden: 24 }, 2);
  const sharedGate = Tensor.randn([2, c.dModel], { seed: 3, std: 0.5 });
  const config = { ...c, sharedExperts: 2, sharedHidden: 24 };
  const layer = new MoELayer(config, { ...w, shared, sharedGate });
  const one = new MoELayer({ ...config, threads: 1 }, { ...w, shared, sharedGate });
  for (const tokens of [1, 23]) {
    const x = Tensor.randn([tokens, c.dModel], { seed: tokens });
    const out = layer.forwardSync(x);
    const { experts, weights } = out.routing;
    const want = reference.referenceExperts(
      x.data as Float32Array,
      tokens,
      refWeights(w),
      { ...c, normalizeTopK: true },
      c.topK,
      experts,
      weights,
      {
        weights: refWeights(shared),
        count: 2,
        dHidden: 24,
        gate: sharedGate.data as Float32Array,
      },
    );
    expect(relativeError(out.output.data, want)).toBeLessThan(1e-5);
    expect(Buffer.from(one.forwardSync(x).output.data.buffer).equals(Buffer.from(out.output.data.buffer))).toBe(true);
  }
  const ungated = new MoELayer(config, { ...w, shared });
  const x = Tensor.randn([5, c.dModel], { seed: 9 });
  expect(relativeError(ungated.forwardSync(x).output.data, layer.forwardSync(x).output.data)).toBeGreaterThan(1e-3);
  expect(layer.packedBytes).toBeGreaterThanOrEqual(ungated.packedBytes + 2 * 33 * 4); // the gate, packed like the router
  for (const l of [layer, one, ungated]) l.dispose();
});

test('a router bias (gpt-oss) is added to the logits before routing, by every rule', async () => {
  const w = randomWeights(c, 4);
  const routerBias = Tensor.randn([c.numExperts], { seed: 5, std: 2 });
  const x = Tensor.randn([c.tokens, c.dModel], { seed: 6 });
  const logits = reference.referenceRouterLogits(x.data as Float32Array, c.tokens, c.dModel, w.router.data as Float32Array, c.numExperts);
  for (let i = 0; i < logits.length; i++) logits[i] += routerBias.data[i % c.numExperts] as number;
  for (const order of ['softmax-topk', 'topk-softmax'] as const) {
    const layer = new MoELayer({ ...c, router: { kind: 'topK', order } }, { ...w, routerBias });
    const out = await layer.forward(x);
    const gate = gating.topK({ data: logits, shape: [c.tokens, c.numExperts] }, { k: c.topK, order });
    expect(Array.from(out.routing.experts)).toEqual(Array.from(gate.experts));
    expect(relativeError(out.routing.logits.data, logits)).toBeLessThan(1e-5);
    const want = reference.referenceExperts(
      x.data as Float32Array,
      c.tokens,
      refWeights(w),
      { ...c, normalizeTopK: true },
      c.topK,
      gate.experts,
      gate.weights,
    );
    expect(relativeError(out.output.data, want)).toBeLessThan(1e-5);
    layer.dispose();
  }
});

test("group-limited top-k (DeepSeek-V2 'group_limited_greedy') with a routed scaling factor", () => {
  const E = 16;
  const w = randomWeights({ ...c, numExperts: E }, 7);
  const x = Tensor.randn([c.tokens, c.dModel], { seed: 8 });
  const router = { kind: 'topK' as const, normalize: false, numGroups: 4, topKGroups: 2, routeScale: 16 };
  const layer = new MoELayer({ ...c, numExperts: E, router }, w);
  const out = layer.forwardSync(x);
  const logits = reference.referenceRouterLogits(x.data as Float32Array, c.tokens, c.dModel, w.router.data as Float32Array, E);
  for (let t = 0; t < c.tokens; t++) {
    const row = Array.from(logits.subarray(t * E, (t + 1) * E));
    const m = Math.max(...row);
    const p = row.map((l) => Math.exp(l - m));
    const s = p.reduce((a, b) => a + b, 0);
    const groupMax = [0, 1, 2, 3].map((g) => Math.max(...p.slice(g * 4, g * 4 + 4)));
    const kept = [0, 1, 2, 3].sort((a, b) => groupMax[b] - groupMax[a]).slice(0, 2);
    const eligible = row.map((_, e) => e).filter((e) => kept.includes(Math.floor(e / 4)));
    const chosen = eligible.sort((a, b) => row[b] - row[a]).slice(0, c.topK);
    expect(Array.from(out.routing.experts.subarray(t * c.topK, (t + 1) * c.topK))).toEqual(chosen);
    chosen.forEach((e, j) => expect(out.routing.weights[t * c.topK + j]).toBeCloseTo((16 * p[e]) / s, 4));
  }
  layer.dispose();
});

test('the group-limited top-k backward by finite differences (routeScale included)', () => {
  const T = 6;
  const E = 12;
  const l0 = Float64Array.from(Tensor.randn([T * E], { seed: 3, std: 1.5 }).data);
  const opts = { k: 3, numGroups: 3, topKGroups: 2, routeScale: 2.5 };
  for (const normalize of [true, false]) {
    const gate = gating.topK({ data: l0, shape: [T, E] }, { ...opts, normalize });
    const up = Float64Array.from(Tensor.randn([T * 3], { seed: 4 }).data);
    const grad = gating.topKBackward(gate, up);
    const h = 1e-6;
    for (let i = 0; i < l0.length; i++) {
      const at = (d: number) => {
        const l = l0.slice();
        l[i] += d;
        const g = gating.topK({ data: l, shape: [T, E] }, { ...opts, normalize });
        return g.weights.reduce((s, wv, j) => s + wv * up[j], 0);
      };
      expect(Math.abs((at(h) - at(-h)) / (2 * h) - grad[i])).toBeLessThan(1e-6);
    }
  }
});

test('refusals', () => {
  const w = randomWeights(c, 9);
  expectError(
    () => new MoELayer({ ...c, swigluLimit: 3 }, w),
    'RangeError',
    /no config\.swigluLimit \(activation 'swiglu'; it belongs to 'swiglu-clamped'\)/,
  );
  expectError(
    () => new MoELayer({ ...c, activation: 'swiglu-clamped', swigluLimit: 0 }, w),
    'RangeError',
    /config\.swigluLimit to be a finite number > 0/,
  );
  expectError(
    () => new MoELayer(c, { ...w, sharedGate: Tensor.zeros([1, c.dModel]) }),
    'RangeError',
    /no weights\.sharedGate \(config\.sharedExperts is 0\)/,
  );
  const shared = randomWeights({ ...c, numExperts: 1 }, 10);
  expectError(
    () => new MoELayer({ ...c, sharedExperts: 1 }, { ...w, shared, sharedGate: Tensor.zeros([2, c.dModel]) }),
    'RangeError',
    /weights\.sharedGate\.shape\[0\] = 1 \(sharedExperts\)/,
  );
  expectError(
    () => new MoELayer(c, { ...w, routerBias: Tensor.zeros([3]) }),
    'RangeError',
    /weights\.routerBias\.shape\[0\] = 8 \(numExperts\)/,
  );
  expectError(() => new MoELayer({ ...c, router: { kind: 'topK', numGroups: 3 } }, w), 'RangeError', /numGroups to divide numExperts = 8/);
  expectError(
    () => new MoELayer({ ...c, router: { kind: 'topK', numGroups: 4, topKGroups: 1 } }, w),
    'RangeError',
    /k at most topKGroups x experts per group = 2/,
  );
  expectError(
    () => new MoELayer({ ...c, router: { kind: 'topK', routeScale: -1 } }, w),
    'RangeError',
    /routeScale to be a finite number > 0/,
  );
});
