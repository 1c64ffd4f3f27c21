/**
 * Every routing rule runs in the core (native/src/core/rules/, in float64 C++) on a layer's forward and backward.
 * Here each is compared with its TypeScript twin in lib/gating (the public functions and the reference), on fresh
 * random inputs of awkward sizes (1 token, odd expert counts, k = E, experts that receive no token, capacity drops,
 * groups), evaluation and training: the same choices, drops and counts, values within a few ulps (the C library's
 * exp and log may differ from V8's in the last bit), the same training noise from the layer's seed (lib/random.ts
 * drawn in the core), and the backward's router gradients equal to the TypeScript rule's backward chained by hand.
 */
import { MoELayer, RouterConfig, Tensor, gating, kernels } from '../lib';
import type { GateResult } from '../lib/gating';
import { Random } from '../lib/random';

interface Shape {
  tokens: number;
  numExperts: number;
  topK?: number;
  dModel?: number;
}

/** The largest |a - b| relative to max(1, |b|). */
function maxError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return m;
}

/** What the TypeScript rule makes of the same logits (and seeds drawn as the core draws them). */
function typescriptGate(
  router: RouterConfig,
  layer: MoELayer,
  x: Tensor<'float32'>,
  logits: Float32Array,
  training: boolean,
  seeds: Random,
): { gate: GateResult; ranked: ArrayLike<number>; routerInput: Float32Array } {
  const { numExperts: n, topK: k } = layer.config;
  const tokens = x.shape[0];
  const seed = () => seeds.nextUint32();
  const routerInput =
    training && (router.jitter ?? 0) > 0 ? gating.multiplicativeJitter(x.data, router.jitter!, seed()) : Float32Array.from(x.data);
  const shape = [tokens, n];
  const ranked =
    training && (router.explorationNoise ?? 0) > 0
      ? gating.explorationNoise({ data: logits, shape }, { scale: router.explorationNoise, seed: seed() })
      : logits;
  const l = { data: ranked, shape };
  const r = router as RouterConfig & Record<string, unknown>;
  switch (router.kind) {
    case 'topK':
      return { gate: gating.topK(l, { ...r, k } as gating.TopKOptions), ranked, routerInput };
    case 'soft':
      return { gate: gating.soft(l), ranked, routerInput };
    case 'switch':
      return { gate: gating.switchTop1(l, r as gating.SwitchOptions), ranked, routerInput };
    case 'noisyTopK': {
      const w = layer.exportWeights();
      const noiseLogits = kernels.routerLogits(Tensor.from(routerInput, x.shape), w.noiseRouter!);
      const options = { ...r, k, training, seed: training ? seed() : 0 } as gating.NoisyTopKOptions;
      return { gate: gating.noisyTopK(l, noiseLogits, options), ranked, routerInput };
    }
    case 'gshardTop2': {
      const randomRouting = training && ((r.randomRouting as boolean | undefined) ?? true);
      return { gate: gating.gshardTop2(l, { ...r, randomRouting, seed: training ? seed() : 0 }), ranked, routerInput };
    }
    case 'expertChoice':
      return { gate: gating.expertChoice(l, r as gating.ExpertChoiceOptions), ranked, routerInput };
    case 'sigmoidBias':
      return { gate: gating.sigmoidBias(l, { ...r, k } as gating.SigmoidBiasOptions), ranked, routerInput };
  }
}

/** The float64 arrays a rule's gate keeps, by name (the same fields on both sides). */
const GATE_ARRAYS = ['probs', 'scores', 'clean', 'noisy', 'noiseStd', 'noise', 'kthNoisy', 'kPlus1Noisy'] as const;

/** A typed array as a plain one (Jest runs in another realm: no instanceof), anything else as it is. */
const plain = (v: unknown) => (ArrayBuffer.isView(v) ? Array.from(v as Int32Array) : v);

function compareGates(core: GateResult, ts: GateResult): void {
  expect(core.kind).toBe(ts.kind);
  expect(core.topK).toBe(ts.topK);
  expect(Array.from(core.experts)).toEqual(Array.from(ts.experts));
  expect(Array.from(core.tokensPerExpert)).toEqual(Array.from(ts.tokensPerExpert));
  expect(core.dropped).toBe(ts.dropped);
  expect(maxError(core.weights, ts.weights)).toBeLessThan(1e-14);
  const c = core as unknown as Record<string, unknown>;
  const t = ts as unknown as Record<string, unknown>;
  for (const name of GATE_ARRAYS) {
    if (t[name] === undefined) continue;
    const a = c[name] as Float64Array;
    const b = t[name] as Float64Array;
    expect(a.length).toBe(b.length);
    for (let i = 0; i < a.length; i++) {
      if (Number.isNaN(b[i])) expect(a[i]).toBeNaN();
      else expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(1e-14 * Math.max(1, Math.abs(b[i])));
    }
  }
  for (const name of ['kthExpert', 'kPlus1Expert', 'capacity', 'droppedTokens', 'training'])
    if (t[name] !== undefined) expect(plain(c[name])).toEqual(plain(t[name]));
}

function check(router: RouterConfig, shape: Shape, seed: number, training: boolean, forwards = 2): void {
  const { tokens, numExperts, topK, dModel = 13 } = shape;
  const config = { dModel, dHidden: 7, numExperts, topK, activation: 'swiglu' as const, router };
  const layer = MoELayer.random(config, { seed });
  const seeds = new Random(router.seed ?? 0);
  // Several forwards: the layer's generator advances by the same draws on both sides.
  for (let f = 0; f < forwards; f++) {
    const x = Tensor.randn([tokens, dModel], { seed: seed * 10 + f });
    const { routing } = layer.forwardSync(x, { training });
    const ts = typescriptGate(router, layer, x, routing.logits.data, training, seeds);
    expect(routing.gate).toBeDefined();
    compareGates(routing.gate!, ts.gate);
    expect(Array.from(routing.weights)).toEqual(Array.from(Float32Array.from(routing.gate!.weights)));
    expect(Buffer.from(routing.routerInput.buffer).equals(Buffer.from(ts.routerInput.buffer))).toBe(true);
    expect(Array.from(routing.experts)).toEqual(Array.from(ts.gate.experts));
  }
  layer.dispose();
}

const awkward: Shape[] = [
  { tokens: 1, numExperts: 5, topK: 2 },
  { tokens: 7, numExperts: 9, topK: 9 }, // k = E
  { tokens: 3, numExperts: 64, topK: 12 }, // few tokens: experts that get none; k past the scans (sorted ranking)
  { tokens: 33, numExperts: 6, topK: 1 },
];

describe('the core routes as the TypeScript rules do', () => {
  it.each([false, true])('topK: orders, ties, capacity by position and by score, groups and scale (training %s)', (training) => {
    for (const s of awkward) check({ kind: 'topK' }, s, 1, training);
    check({ kind: 'topK', tieBreak: 'higher', normalize: false }, { tokens: 11, numExperts: 7, topK: 3 }, 2, training);
    check({ kind: 'topK', order: 'topk-softmax' }, { tokens: 5, numExperts: 4, topK: 2 }, 3, training);
    check({ kind: 'topK', capacityFactor: 0.5 }, { tokens: 40, numExperts: 6, topK: 2 }, 4, training);
    check({ kind: 'topK', capacityFactor: 0.7, dropPolicy: 'score' }, { tokens: 40, numExperts: 6, topK: 3 }, 5, training);
    check({ kind: 'topK', numGroups: 4, topKGroups: 2, routeScale: 2.5 }, { tokens: 9, numExperts: 12, topK: 3 }, 6, training);
  });
  it('topK with exploration noise and jitter (the seeds drawn in order)', () => {
    check({ kind: 'topK', explorationNoise: 0.5, jitter: 0.05, seed: 17 }, { tokens: 21, numExperts: 7, topK: 2 }, 7, true, 3);
    check({ kind: 'topK', explorationNoise: 2, seed: 4 }, { tokens: 1, numExperts: 3, topK: 3 }, 8, true, 3);
  });
  it('soft and switch (with capacity)', () => {
    for (const s of awkward) check({ kind: 'soft' }, { ...s, topK: undefined }, 9, false);
    check({ kind: 'soft' }, { tokens: 2, numExperts: 80 }, 10, false); // E past the scans
    check({ kind: 'switch' }, { tokens: 13, numExperts: 5 }, 11, true);
    check({ kind: 'switch', capacityFactor: 1, dropPolicy: 'score' }, { tokens: 30, numExperts: 4 }, 12, false);
  });
  it('noisy top-k: clean at evaluation, seeded noise while training, k = E', () => {
    check({ kind: 'noisyTopK', seed: 5 }, { tokens: 17, numExperts: 6, topK: 2 }, 13, false);
    check({ kind: 'noisyTopK', seed: 5 }, { tokens: 17, numExperts: 6, topK: 2 }, 13, true, 3);
    check({ kind: 'noisyTopK', seed: 6, noiseEpsilon: 0.1, capacityFactor: 0.8 }, { tokens: 20, numExperts: 5, topK: 2 }, 14, true);
    check({ kind: 'noisyTopK', seed: 7, explorationNoise: 0.3 }, { tokens: 1, numExperts: 3, topK: 3 }, 15, true);
  });
  it('GShard top-2: groups, capacity, random routing while training', () => {
    check({ kind: 'gshardTop2', seed: 2 }, { tokens: 25, numExperts: 5 }, 16, true, 3);
    check({ kind: 'gshardTop2', capacityFactor: 0.6, groupSize: 7 }, { tokens: 25, numExperts: 4 }, 17, true);
    check({ kind: 'gshardTop2', randomRouting: false, tieBreak: 'higher' }, { tokens: 1, numExperts: 2 }, 18, true);
  });
  it('expert choice: a token may get none or several', () => {
    check({ kind: 'expertChoice' }, { tokens: 19, numExperts: 5 }, 19, false);
    check({ kind: 'expertChoice', capacityFactor: 0.5 }, { tokens: 40, numExperts: 9 }, 20, false);
    check({ kind: 'expertChoice', capacityFactor: 3 }, { tokens: 1, numExperts: 3 }, 21, false);
  });
  it('sigmoid + bias: groups, scale, no normalisation, ties to the higher index', () => {
    const bias = Float64Array.from({ length: 12 }, (_, i) => ((i * 7) % 5) * 0.03);
    check({ kind: 'sigmoidBias', numGroups: 4, topKGroups: 2, routeScale: 2.5, bias }, { tokens: 15, numExperts: 12, topK: 4 }, 22, false);
    check({ kind: 'sigmoidBias', normalize: false, tieBreak: 'higher' }, { tokens: 6, numExperts: 7, topK: 7 }, 23, true);
    check({ kind: 'sigmoidBias', numGroups: 3, topKGroups: 1 }, { tokens: 1, numExperts: 3, topK: 1 }, 24, false);
  });
  it('the same seed gives the same training routing in two layers; the generator advances per forward', () => {
    const config = { dModel: 8, dHidden: 5, numExperts: 6, topK: 2, router: { kind: 'noisyTopK' as const, seed: 3 } };
    const a = MoELayer.random(config, { seed: 1 });
    const b = MoELayer.random(config, { seed: 1 });
    const x = Tensor.randn([16, 8], { seed: 2 });
    const first = a.forwardSync(x, { training: true }).routing.gate as gating.NoisyTopKGate;
    expect(Array.from((b.forwardSync(x, { training: true }).routing.gate as gating.NoisyTopKGate).noise)).toEqual(Array.from(first.noise));
    const second = a.forwardSync(x, { training: true }).routing.gate as gating.NoisyTopKGate;
    expect(Array.from(second.noise)).not.toEqual(Array.from(first.noise));
  });
});

describe("the core's router backward equals the TypeScript rule's, chained by hand", () => {
  const rules: [RouterConfig, Shape][] = [
    [
      { kind: 'topK', capacityFactor: 0.6 },
      { tokens: 23, numExperts: 5, topK: 2 },
    ],
    [
      { kind: 'topK', normalize: false, numGroups: 2, topKGroups: 1, routeScale: 1.5 },
      { tokens: 9, numExperts: 6, topK: 2 },
    ],
    [{ kind: 'soft' }, { tokens: 4, numExperts: 3 }],
    [
      { kind: 'switch', capacityFactor: 1 },
      { tokens: 12, numExperts: 4 },
    ],
    [
      { kind: 'noisyTopK', seed: 2, capacityFactor: 0.9 },
      { tokens: 14, numExperts: 5, topK: 2 },
    ],
    [
      { kind: 'gshardTop2', seed: 3 },
      { tokens: 16, numExperts: 4 },
    ],
    [{ kind: 'expertChoice' }, { tokens: 11, numExperts: 4 }],
    [
      { kind: 'sigmoidBias', numGroups: 2, topKGroups: 1, routeScale: 2 },
      { tokens: 10, numExperts: 8, topK: 3 },
    ],
  ];
  it.each(rules.map(([r, s]) => [r.kind, r, s] as const))('%s, with aux losses, sync and async', async (_kind, router, shape) => {
    const dModel = 11;
    const layer = MoELayer.random({ dModel, dHidden: 6, numExperts: shape.numExperts, topK: shape.topK, router }, { seed: 40 });
    const x = Tensor.randn([shape.tokens, dModel], { seed: 41 });
    const g = Tensor.randn([shape.tokens, dModel], { seed: 42 });
    const auxLosses = router.kind === 'noisyTopK' ? (['load', 'zLoss'] as const) : (['switch', 'zLoss'] as const);
    for (const async of [false, true]) {
      const result = async ? await layer.forward(x, { training: true, auxLosses }) : layer.forwardSync(x, { training: true, auxLosses });
      const grads = async ? await layer.backwardAsync(x, result, g) : layer.backward(x, result, g);
      const gate = result.routing.gate!;
      const b = gating.backward(gate, grads.gate.gradWeights!);
      const gradLogits = Float64Array.from(b.gradLogits);
      for (const aux of Object.values(result.auxLosses!)) aux.gradLogits.forEach((v, i) => (gradLogits[i] += v));
      expect(maxError(grads.gate.gradLogits, gradLogits)).toBeLessThan(1e-12);
      const gradRouter = gating.routerWeightGradient(gradLogits, x);
      expect(maxError(grads.gate.gradRouter, gradRouter)).toBeLessThan(1e-12);
      if (router.kind === 'noisyTopK') {
        const noise = Float64Array.from(b.gradNoiseLogits!);
        result.auxLosses!.load!.gradNoiseLogits!.forEach((v, i) => (noise[i] += v));
        expect(maxError(grads.gate.gradNoiseLogits!, noise)).toBeLessThan(1e-12);
      }
    }
    layer.dispose();
  });
});
