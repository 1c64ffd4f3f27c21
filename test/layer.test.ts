import { ACTIVATIONS, MoELayer, Tensor, backendInfo } from '../lib';
import { Case, layerFor, randomWeights, referenceFor, relativeError } from './helpers';

const TOLERANCE = 1e-5;

function check(c: Case, seed: number) {
  const w = randomWeights(c, seed);
  const x = Tensor.randn([c.tokens, c.dModel], { seed: seed + 1 });
  const xCopy = Float32Array.from(x.data);
  const ref = referenceFor(c, w, x);
  const layer = layerFor(c, w);
  const { output, routing } = layer.forwardSync(x);
  layer.dispose();
  expect(Array.from(routing.experts)).toEqual(Array.from(ref.experts));
  expect(Array.from(routing.tokensPerExpert)).toEqual(Array.from(ref.tokensPerExpert));
  expect(relativeError(routing.weights, ref.weights)).toBeLessThan(TOLERANCE);
  expect(relativeError(routing.logits.data, ref.logits)).toBeLessThan(TOLERANCE);
  expect(relativeError(output.data, ref.output)).toBeLessThan(TOLERANCE);
  expect(output.shape).toEqual([c.tokens, c.dModel]);
  expect(x.data).toEqual(xCopy); // inputs are never modified
}

describe(`MoELayer against the float64 reference (isa ${backendInfo().isa})`, () => {
  const shapes: Array<[number, number, number, number, number]> = [
    // tokens, dModel, dHidden, numExperts, topK
    [1, 33, 100, 1, 1],
    [3, 33, 100, 4, 2],
    [64, 33, 100, 8, 8],
    [513, 33, 100, 8, 2],
    [1, 100, 33, 64, 6],
    [64, 17, 40, 64, 64],
    [3, 64, 48, 4, 4],
    [513, 24, 36, 64, 1],
  ];
  let seed = 100;
  for (const [tokens, dModel, dHidden, numExperts, topK] of shapes)
    for (const bias of [false, true])
      it(`T=${tokens} d=${dModel} h=${dHidden} E=${numExperts} k=${topK} swiglu bias=${bias}`, () =>
        check({ tokens, dModel, dHidden, numExperts, topK, activation: 'swiglu', bias }, seed++));

  for (const activation of ACTIVATIONS)
    for (const bias of [false, true])
      it(`activation ${activation}, bias=${bias}`, () =>
        check({ tokens: 37, dModel: 33, dHidden: 100, numExperts: 4, topK: 2, activation, bias }, seed++));

  it('swiglu-clamped with alpha and a limit that the pre-activations pass (the clamps of gpt-oss)', () => {
    for (const tokens of [1, 37])
      check(
        {
          tokens,
          dModel: 33,
          dHidden: 100,
          numExperts: 4,
          topK: 2,
          activation: 'swiglu-clamped',
          swigluAlpha: 1.3,
          swigluLimit: 0.3,
          bias: true,
        },
        seed++,
      );
  });

  it('every k from 1 to E', () => {
    for (let k = 1; k <= 8; k++)
      check({ tokens: 9, dModel: 20, dHidden: 30, numExperts: 8, topK: k, activation: 'swiglu', bias: true }, seed++);
  });

  it('normalizeTopK: false keeps the raw softmax probabilities', () =>
    check(
      { tokens: 50, dModel: 33, dHidden: 40, numExperts: 8, topK: 2, activation: 'swiglu', bias: false, normalizeTopK: false },
      seed++,
    ));

  it('experts that receive no token (k = 1, E = 64, 3 tokens)', () => {
    const c: Case = { tokens: 3, dModel: 16, dHidden: 24, numExperts: 64, topK: 1, activation: 'gelu', bias: true };
    check(c, seed++);
  });
});

describe('MoELayer behaviour', () => {
  const c: Case = { tokens: 200, dModel: 64, dHidden: 96, numExperts: 8, topK: 2, activation: 'swiglu', bias: true };

  it('forward (async) and forwardSync agree bitwise', async () => {
    const w = randomWeights(c, 7);
    const layer = layerFor(c, w);
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 8 });
    const a = layer.forwardSync(x);
    const b = await layer.forward(x);
    expect(Buffer.from(b.output.data.buffer).equals(Buffer.from(a.output.data.buffer))).toBe(true);
    expect(Array.from(b.routing.experts)).toEqual(Array.from(a.routing.experts));
    layer.dispose();
  });

  it('options.out: the output written into a given tensor, bitwise the same, both routing paths', async () => {
    const w = randomWeights(c, 17);
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 18 });
    const xCopy = Float32Array.from(x.data);
    for (const router of [undefined, { kind: 'topK' as const, capacityFactor: 0.75 }]) {
      const layer = new MoELayer({ dModel: c.dModel, dHidden: c.dHidden, numExperts: c.numExperts, topK: c.topK, router }, w);
      const fresh = layer.forwardSync(x);
      const out = Tensor.zeros([c.tokens, c.dModel]);
      out.data.fill(7);
      const a = layer.forwardSync(x, { out });
      expect(a.output).toBe(out);
      expect(Buffer.from(out.data.buffer).equals(Buffer.from(fresh.output.data.buffer))).toBe(true);
      out.data.fill(-1);
      const b = await layer.forward(x, { out });
      expect(b.output).toBe(out);
      expect(Buffer.from(out.data.buffer).equals(Buffer.from(fresh.output.data.buffer))).toBe(true);
      // A view into a larger buffer, next to x's copy but not overlapping it.
      const shared = new Float32Array(2 * c.tokens * c.dModel);
      shared.set(x.data);
      const view = Tensor.from(shared.subarray(c.tokens * c.dModel), [c.tokens, c.dModel]);
      layer.forwardSync(Tensor.from(shared.subarray(0, c.tokens * c.dModel), [c.tokens, c.dModel]), { out: view });
      expect(Buffer.from(view.data.slice().buffer).equals(Buffer.from(fresh.output.data.buffer))).toBe(true);
      layer.dispose();
    }
    expect(x.data).toEqual(xCopy);
  });

  it('threads 1 and 2 agree bitwise', () => {
    const w = randomWeights(c, 9);
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 10 });
    const one = layerFor(c, w, 1).forwardSync(x).output.data;
    const two = layerFor(c, w, 2).forwardSync(x).output.data;
    expect(Buffer.from(one.buffer).equals(Buffer.from(two.buffer))).toBe(true);
  });

  it('concurrent async forwards on one layer give the same answers', async () => {
    const w = randomWeights(c, 11);
    const layer = layerFor(c, w);
    const xs = [0, 1, 2, 3].map((i) => Tensor.randn([c.tokens, c.dModel], { seed: 20 + i }));
    const expected = xs.map((x) => layer.forwardSync(x).output.data);
    const got = await Promise.all(xs.map((x) => layer.forward(x)));
    got.forEach((g, i) => expect(Buffer.from(g.output.data.buffer).equals(Buffer.from(expected[i].buffer))).toBe(true));
  });

  it('dispose while a forward is in flight lets it finish', async () => {
    const layer = layerFor(c, randomWeights(c, 12));
    const pending = layer.forward(Tensor.randn([c.tokens, c.dModel], { seed: 13 }));
    layer.dispose();
    const { output } = await pending;
    expect(output.shape).toEqual([c.tokens, c.dModel]);
    expect(layer.disposed).toBe(true);
  });

  it('routing is token-major with descending weights that sum to 1', () => {
    const layer = MoELayer.random({ dModel: 32, dHidden: 48, numExperts: 8, topK: 3 }, { seed: 3 });
    const { routing } = layer.forwardSync(Tensor.randn([10, 32], { seed: 4 }));
    for (let t = 0; t < 10; t++) {
      const w = Array.from(routing.weights.slice(t * 3, t * 3 + 3));
      expect(w[0]).toBeGreaterThanOrEqual(w[1]);
      expect(w[1]).toBeGreaterThanOrEqual(w[2]);
      expect(w.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
      expect(new Set(routing.experts.slice(t * 3, t * 3 + 3)).size).toBe(3);
    }
    expect(routing.tokensPerExpert.reduce((a, b) => a + b, 0)).toBe(30);
  });

  it('MoELayer.random is reproducible from its seed', () => {
    const cfg = { dModel: 16, dHidden: 24, numExperts: 4, topK: 2 };
    const x = Tensor.randn([5, 16], { seed: 1 });
    const a = MoELayer.random(cfg, { seed: 42 }).forwardSync(x).output.data;
    const b = MoELayer.random(cfg, { seed: 42 }).forwardSync(x).output.data;
    const d = MoELayer.random(cfg, { seed: 43 }).forwardSync(x).output.data;
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(d));
  });

  it('ties go to the lower expert index (zero router)', () => {
    const c2: Case = { tokens: 4, dModel: 8, dHidden: 8, numExperts: 4, topK: 2, activation: 'relu', bias: false };
    const w = randomWeights(c2, 5);
    w.router = Tensor.zeros([4, 8]);
    const { routing } = layerFor(c2, w).forwardSync(Tensor.randn([4, 8], { seed: 6 }));
    expect(Array.from(routing.experts)).toEqual([0, 1, 0, 1, 0, 1, 0, 1]);
    expect(Array.from(routing.weights)).toEqual([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
  });
});

describe('result memory', () => {
  it('stays correct when the memory of collected results is recycled', () => {
    // Results of 64 KiB and more live in addon memory that is reused once the GC frees them: force that.
    const v8 = require('node:v8');
    const vm = require('node:vm');
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const config = { dModel: 96, dHidden: 40, numExperts: 5, topK: 2, activation: 'swiglu' as const };
    const layer = MoELayer.random(config, { seed: 3 });
    const inputs = [Tensor.randn([200, 96], { seed: 4 }), Tensor.randn([200, 96], { seed: 5 })];
    const expected = inputs.map((x) => Array.from(layer.forwardSync(x).output.data));
    for (let i = 0; i < 6; i++) {
      gc();
      const out = layer.forwardSync(inputs[i % 2]).output.data;
      expect(Array.from(out)).toEqual(expected[i % 2]);
    }
    layer.dispose();
  });
});
