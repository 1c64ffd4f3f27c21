/** MoELayer with every router, shared experts and dropping, against the float64 reference forward. */
import { MoELayer, RouterConfig, Tensor, gating } from '../../lib';
import { referenceExperts, referenceTopKRouting, rowsOf } from '../../lib/reference';
import { Case, randomWeights, relativeError } from '../helpers';

const base: Case = { tokens: 37, dModel: 24, dHidden: 40, numExperts: 8, topK: 2, activation: 'swiglu', bias: true };

function refWeights(w: ReturnType<typeof randomWeights>) {
  return {
    router: w.router.data as Float32Array,
    w1: w.w1.data as Float32Array,
    w3: (w.w3?.data as Float32Array) ?? null,
    w2: w.w2.data as Float32Array,
    b1: (w.b1?.data as Float32Array) ?? null,
    b3: (w.b3?.data as Float32Array) ?? null,
    b2: (w.b2?.data as Float32Array) ?? null,
  };
}

function checkLayer(router: RouterConfig, topK: number | undefined, seed: number, training = false, extra: Partial<Case> = {}) {
  const c = { ...base, ...extra };
  const w = randomWeights(c, seed);
  if (router.kind === 'noisyTopK') w.noiseRouter = Tensor.randn([c.numExperts, c.dModel], { seed: seed + 5, std: 0.2 });
  const layer = new MoELayer({ ...c, topK, router }, w);
  const x = Tensor.randn([c.tokens, c.dModel], { seed: seed + 1 });
  const { output, routing } = layer.forwardSync(x, { training });
  const rc = { ...c, normalizeTopK: true };
  const ref = referenceExperts(x.data, c.tokens, refWeights(w), rc, routing.topK, routing.experts, routing.gate!.weights);
  expect(relativeError(output.data, ref)).toBeLessThan(1e-5);
  expect(Array.from(routing.weights)).toEqual(Array.from(Float32Array.from(routing.gate!.weights)));
  let counted = 0;
  routing.tokensPerExpert.forEach((n) => (counted += n));
  expect(counted).toBe(routing.experts.filter((e) => e >= 0).length);
  layer.dispose();
  return routing;
}

describe('MoELayer with each router matches the reference forward', () => {
  it('topK (topk-softmax, higher ties, capacity with score dropping)', () => {
    checkLayer({ kind: 'topK', order: 'topk-softmax' }, 2, 1);
    checkLayer({ kind: 'topK', tieBreak: 'higher' }, 3, 2);
    const r = checkLayer({ kind: 'topK', capacityFactor: 0.5, dropPolicy: 'score' }, 2, 3);
    expect(r.dropped).toBeGreaterThan(0);
  });
  it('soft, switch with capacity', () => {
    expect(checkLayer({ kind: 'soft' }, undefined, 4).topK).toBe(8);
    const r = checkLayer({ kind: 'switch', capacityFactor: 1 }, undefined, 5);
    expect(r.topK).toBe(1);
    expect(r.dropped).toBeGreaterThan(0);
  });
  it('noisy top-k, evaluation and training (seeded noise)', () => {
    checkLayer({ kind: 'noisyTopK' }, 2, 6);
    const a = checkLayer({ kind: 'noisyTopK', seed: 9 }, 2, 7, true);
    const b = checkLayer({ kind: 'noisyTopK', seed: 9 }, 2, 7, true);
    expect(Array.from(a.experts)).toEqual(Array.from(b.experts));
    const gate = a.gate as gating.NoisyTopKGate;
    expect(gate.training).toBe(true);
    expect(gate.noise.some((v) => v !== 0)).toBe(true);
  });
  it('GShard top-2 with groups, expert choice (variable experts per token)', () => {
    checkLayer({ kind: 'gshardTop2', capacityFactor: 1, groupSize: 10 }, undefined, 8, true);
    const r = checkLayer({ kind: 'expertChoice', capacityFactor: 2 }, undefined, 9);
    expect(r.topK).toBeGreaterThanOrEqual(1);
    expect(Array.from(r.tokensPerExpert)).toEqual(new Array(8).fill(Math.ceil((37 * 2) / 8)));
  });
  it('sigmoid + bias with groups; exploration noise and jitter while training', () => {
    checkLayer({ kind: 'sigmoidBias', numGroups: 4, topKGroups: 2, routeScale: 2.5, bias: new Float32Array(8).fill(0.1) }, 4, 10);
    checkLayer({ kind: 'topK', explorationNoise: 1, jitter: 0.01, seed: 3 }, 2, 11, true);
  });
  it('a token whose every slot is dropped gets a zero output', () => {
    const c = { ...base, tokens: 4, numExperts: 4 };
    const w = randomWeights(c, 12);
    w.router = Tensor.zeros([4, c.dModel]); // every token picks expert 0 (ties to the lower index)
    const layer = new MoELayer({ ...c, topK: undefined, router: { kind: 'switch', capacityFactor: 1 } }, w);
    const { output, routing } = layer.forwardSync(Tensor.randn([4, c.dModel], { seed: 13 }));
    expect(Array.from(routing.experts)).toEqual([0, -1, -1, -1]);
    expect(output.data.subarray(c.dModel).every((v) => v === 0)).toBe(true);
    expect(output.data.subarray(0, c.dModel).some((v) => v !== 0)).toBe(true);
  });
  it('zero router + exploration noise: routing decided by the seeded noise (Chen et al.)', () => {
    const layer = MoELayer.random(
      { dModel: 16, dHidden: 24, numExperts: 4, topK: 1, router: { kind: 'topK', explorationNoise: 1, seed: 1 } },
      { seed: 2, zeroRouter: true },
    );
    const x = Tensor.randn([64, 16], { seed: 3 });
    const evalRouting = layer.forwardSync(x).routing;
    expect(Array.from(evalRouting.experts).every((e) => e === 0)).toBe(true); // no noise at evaluation: all tie
    const trainRouting = layer.forwardSync(x, { training: true }).routing;
    expect(new Set(trainRouting.experts).size).toBe(4);
  });
});

describe('shared experts (DeepSeekMoE)', () => {
  it('are added to every token, with the default native router and with a TS router', async () => {
    const c = { ...base, tokens: 9 };
    const w = randomWeights(c, 20);
    const sharedCase = { ...c, numExperts: 2, dHidden: 30 };
    const sw = randomWeights(sharedCase, 21);
    const shared = { w1: sw.w1, w3: sw.w3, w2: sw.w2, b1: sw.b1, b3: sw.b3, b2: sw.b2 };
    const x = Tensor.randn([9, c.dModel], { seed: 22 });
    for (const router of [undefined, { kind: 'sigmoidBias' as const, numGroups: 2, topKGroups: 1 }]) {
      const layer = new MoELayer({ ...c, router, sharedExperts: 2, sharedHidden: 30 }, { ...w, shared });
      const { output, routing } = await layer.forward(x);
      const weights = routing.gate ? routing.gate.weights : routing.weights;
      const ref = referenceExperts(x.data, 9, refWeights(w), { ...c, normalizeTopK: true }, routing.topK, routing.experts, weights, {
        weights: refWeights(sw),
        count: 2,
        dHidden: 30,
      });
      expect(relativeError(output.data, ref)).toBeLessThan(1e-5);
      expect(Array.from(routing.tokensPerExpert).reduce((a, b) => a + b, 0)).toBe(9 * routing.topK);
      if (!router)
        expect(Array.from(routing.experts)).toEqual(Array.from(referenceTopKRouting(rowsOf(routing.logits.data, 9, 8), 2).experts.flat()));
    }
  });
});

describe('DeepSeek loss-free balancing on the layer', () => {
  it('setRouterBias changes the selection (and only that); updateBalanceBias feeds it', () => {
    const c = { ...base, tokens: 64 };
    const w = randomWeights(c, 30);
    const layer = new MoELayer({ ...c, router: { kind: 'sigmoidBias' } }, w);
    const x = Tensor.randn([64, c.dModel], { seed: 31 });
    const before = layer.forwardSync(x).routing;
    const { losses } = require('../../lib') as typeof import('../../lib');
    const bias = losses.updateBalanceBias(new Float64Array(8), before.tokensPerExpert, 10); // a big step
    layer.setRouterBias(bias);
    const after = layer.forwardSync(x).routing;
    expect(Array.from(after.experts)).not.toEqual(Array.from(before.experts));
    // the most loaded expert loses tokens
    const busiest = before.tokensPerExpert.indexOf(Math.max(...before.tokensPerExpert));
    expect(after.tokensPerExpert[busiest]).toBeLessThan(before.tokensPerExpert[busiest]);
    expect(() => new MoELayer({ ...c, topK: 2 }, w).setRouterBias(bias)).toThrow(/a 'sigmoidBias' router for setRouterBias/);
  });
});
