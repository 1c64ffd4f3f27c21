/**
 * The balance losses a forward computes (`auxLosses`) run in the core (native/src/core/losses/, float64), with the
 * forward, off the event loop. Here each is compared with its TypeScript reference (lib/losses through
 * referenceAuxLosses, on the forward's own gate and ranked logits), for every rule they apply to, on awkward sizes,
 * sync and async; and the list's checks refuse what cannot be computed before the forward runs.
 */
import { MoELayer, RouterConfig, Tensor } from '../lib';
import { AUX_LOSS_KINDS, AuxLossSpec, referenceAuxLosses, resolveAuxLosses } from '../lib/aux-losses';
import { expectError, expectRejection } from './helpers';

function maxError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return m;
}

const everyLoss = (router: string, sequenceLength: number): AuxLossSpec[] => [
  { kind: 'importance', coefficient: 0.5, variance: 'sample' },
  'importance',
  ...(router === 'noisyTopK' ? (['load', { kind: 'load', variance: 'sample', coefficient: 2 }] as AuxLossSpec[]) : []),
  { kind: 'switch', alpha: 0.1 },
  { kind: 'gshard', scale: 'paper', coefficient: 3 },
  'gshard',
  { kind: 'mixtral', coefficient: 0.25 },
  { kind: 'zLoss', coefficient: 1e-3 },
  { kind: 'sequence', sequenceLength, alpha: 0.01 },
];

const cases: [RouterConfig, { tokens: number; numExperts: number; topK?: number; sequenceLength: number }][] = [
  [{ kind: 'topK' }, { tokens: 12, numExperts: 5, topK: 2, sequenceLength: 4 }], // the fused path
  [
    { kind: 'topK', capacityFactor: 0.5, explorationNoise: 0.3, seed: 2 },
    { tokens: 9, numExperts: 7, topK: 3, sequenceLength: 3 },
  ],
  [{ kind: 'soft' }, { tokens: 1, numExperts: 3, sequenceLength: 1 }],
  [
    { kind: 'switch', capacityFactor: 1 },
    { tokens: 16, numExperts: 4, sequenceLength: 8 },
  ],
  [
    { kind: 'noisyTopK', seed: 4 },
    { tokens: 10, numExperts: 6, topK: 2, sequenceLength: 5 },
  ],
  [
    { kind: 'gshardTop2', seed: 5 },
    { tokens: 14, numExperts: 4, sequenceLength: 7 },
  ],
  [{ kind: 'expertChoice' }, { tokens: 6, numExperts: 5, sequenceLength: 2 }],
  [
    { kind: 'sigmoidBias', numGroups: 2, topKGroups: 1, routeScale: 2 },
    { tokens: 8, numExperts: 6, topK: 2, sequenceLength: 4 },
  ],
];

describe('the core computes the balance losses as lib/losses does', () => {
  it.each(cases.map(([r, s]) => [r.kind, r, s] as const))('%s, training, sync and async', async (_kind, router, s) => {
    const dModel = 9;
    const layer = MoELayer.random({ dModel, dHidden: 5, numExperts: s.numExperts, topK: s.topK, router }, { seed: 3 });
    const x = Tensor.randn([s.tokens, dModel], { seed: 4 });
    const specs = everyLoss(router.kind, s.sequenceLength);
    const c = layer.config;
    const resolved = resolveAuxLosses(specs, {
      router: router.kind,
      training: true,
      tokens: s.tokens,
      numExperts: c.numExperts,
      topK: c.topK,
    });
    for (const async of [false, true]) {
      const r = async
        ? await layer.forward(x, { training: true, auxLosses: specs })
        : layer.forwardSync(x, { training: true, auxLosses: specs });
      const gate = r.routing.gate!;
      const ranked = (gate as { clean?: Float64Array }).clean ?? r.routing.logits.data;
      // (exploration noise: the ranked logits are the logits plus the seeded noise; the noisy rule keeps them as clean)
      const want = referenceAuxLosses(resolved, gate, router.explorationNoise ? rankedOf(layer, r) : ranked);
      expect(Object.keys(r.auxLosses!).sort()).toEqual(Object.keys(want).sort());
      for (const kind of Object.keys(want) as (keyof typeof want)[]) {
        const got = r.auxLosses![kind]!;
        const ref = want[kind]!;
        expect(Math.abs(got.value - ref.value)).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(ref.value)));
        expect(maxError(got.gradLogits, ref.gradLogits)).toBeLessThan(1e-12);
        if (ref.gradNoiseLogits) expect(maxError(got.gradNoiseLogits!, ref.gradNoiseLogits)).toBeLessThan(1e-12);
        else expect(got.gradNoiseLogits).toBeUndefined();
      }
    }
    layer.dispose();
  });
  it('the core computes every loss the TypeScript list names (an unknown name is refused)', () => {
    const layer = MoELayer.random({ dModel: 4, dHidden: 4, numExperts: 3, topK: 1 }, { seed: 1 });
    const x = Tensor.randn([2, 4], { seed: 2 });
    for (const kind of AUX_LOSS_KINDS.filter((k) => k !== 'load' && k !== 'sequence'))
      expect(layer.forwardSync(x, { auxLosses: [kind] }).auxLosses![kind]).toBeDefined();
    expectError(() => layer.forwardSync(x, { auxLosses: ['nope' as never] }), 'RangeError', /auxLosses\[\]\.kind to be one of/);
  });
  it('what cannot be computed is refused before the forward runs', async () => {
    const layer = MoELayer.random({ dModel: 4, dHidden: 4, numExperts: 3, topK: 1 }, { seed: 1 });
    const noisy = MoELayer.random({ dModel: 4, dHidden: 4, numExperts: 3, topK: 3, router: { kind: 'noisyTopK' } }, { seed: 1 });
    const x = Tensor.randn([6, 4], { seed: 2 });
    expectError(() => layer.forwardSync(x, { auxLosses: ['load'] }), 'RangeError', /the 'load' loss with router 'noisyTopK'/);
    expectError(() => noisy.forwardSync(x, { training: true, auxLosses: ['load'] }), 'RangeError', /k < numExperts = 3/);
    expectError(() => noisy.forwardSync(x, { auxLosses: ['load'] }), 'RangeError', /in a training forward/);
    expectError(
      () => layer.forwardSync(x, { auxLosses: [{ kind: 'sequence', sequenceLength: 4 }] }),
      'RangeError',
      /multiple of sequenceLength/,
    );
    expectError(
      () => layer.forwardSync(x, { auxLosses: [{ kind: 'zLoss', coefficient: -1 }] }),
      'RangeError',
      /coefficient to be a finite number >= 0/,
    );
    expectError(
      () => layer.forwardSync(x, { auxLosses: [{ kind: 'switch', alpha: NaN }] }),
      'RangeError',
      /alpha to be a finite number >= 0/,
    );
    await expectRejection(
      (async () => layer.forward(x, { auxLosses: 'zLoss' as never }))(),
      'TypeError',
      /options\.auxLosses to be an array/,
    );
  });
});

/** The logits a forward with exploration noise ranked: its logits plus U[0, scale) from the exploration seed. */
function rankedOf(layer: MoELayer, r: ReturnType<MoELayer['forwardSync']>): Float64Array {
  const { Random } = require('../lib/random') as typeof import('../lib/random');
  const record = (require('../lib/forward-record') as typeof import('../lib/forward-record')).forwardRecordOf(r)!;
  const scale = (layer.config.router as { explorationNoise?: number }).explorationNoise!;
  const rng = new Random(record.draws.exploration);
  return Float64Array.from(r.routing.logits.data, (v) => v + scale * rng.uniform());
}
