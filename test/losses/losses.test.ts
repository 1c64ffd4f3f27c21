/** Balance losses: against the float64 reference, values worked by hand, and gradients by finite differences. */
import { Tensor, gating, losses } from '../../lib';
import { referenceCvSquared, referenceLoad, referenceMixtralLoss, referenceSwitchLoss, referenceZLoss, rowsOf } from '../../lib/reference';
import { expectError, finiteDifferenceError as fdError } from '../helpers';

const rand = (n: number, seed: number, std = 1) => Float64Array.from(Tensor.randn([n], { seed, std }).data);

describe('cvSquared', () => {
  it('matches the references, both variances, with gradients', () => {
    for (const n of [1, 2, 4, 9]) {
      const x = Float64Array.from(rand(n, n), (v) => Math.abs(v) + 0.1);
      for (const variance of ['population', 'sample'] as const) {
        const r = losses.cvSquared(x, { variance });
        expect(r.value).toBeCloseTo(referenceCvSquared(Array.from(x), variance), 12);
        expect(fdError((v) => losses.cvSquared(v, { variance }).value, x, r.grad)).toBeLessThan(1e-6);
      }
    }
  });
  it('by hand: balanced is 0, one-hot over 4 is 3 (population) and 4 (sample, n/(n-1) times)', () => {
    expect(losses.cvSquared([2, 2, 2, 2]).value).toBeCloseTo(0, 12);
    expect(losses.cvSquared([4, 0, 0, 0]).value).toBeCloseTo(3, 8);
    expect(losses.cvSquared([4, 0, 0, 0], { variance: 'sample' }).value).toBeCloseTo(4, 8);
    expect(losses.cvSquared([5], { variance: 'sample' }).value).toBe(0);
  });
});

describe('importance and load losses (Shazeer et al.)', () => {
  const T = 24;
  const E = 6;
  const shape = [T, E];
  const clean = rand(T * E, 1);
  const raw = rand(T * E, 2);
  const noise = { data: rand(T * E, 3), shape };
  for (const k of [1, 2, 5]) {
    const route = (c: Float64Array, r: Float64Array = raw) =>
      gating.noisyTopK({ data: c, shape }, { data: r, shape }, { k, training: true, noise });
    it(`importance: value and gradient through the router, k=${k}`, () => {
      const gate = route(clean);
      const imp = losses.importanceLoss(gate);
      const importance = new Array(E).fill(0);
      gate.experts.forEach((e, s) => (importance[e] += gate.weights[s]));
      expect(imp.value).toBeCloseTo(referenceCvSquared(importance), 12);
      const gradLogits = gating.noisyTopKBackward(gate, imp.grad).gradCleanLogits;
      expect(fdError((c) => losses.importanceLoss(route(c)).value, clean, gradLogits)).toBeLessThan(1e-6);
      const dense = new Float64Array(T * E);
      gate.experts.forEach((e, s) => (dense[Math.floor(s / k) * E + e] = gate.weights[s]));
      expect(losses.importanceLoss({ data: dense, shape }).value).toBeCloseTo(imp.value, 12);
    });
    if (k < E)
      it(`load: the two-threshold estimator equals kth_excluding (eq. 9); gradients to clean logits and noise, k=${k}`, () => {
        const gate = route(clean);
        const load = losses.loadLoss(gate);
        const ref = referenceLoad(rowsOf(gate.clean, T, E), rowsOf(gate.noisy, T, E), rowsOf(gate.noiseStd, T, E), k);
        ref.forEach((v, i) => expect(load.load[i]).toBeCloseTo(v, 12));
        expect(load.value).toBeCloseTo(referenceCvSquared(ref), 12);
        expect(fdError((c) => losses.loadLoss(route(c)).value, clean, load.gradCleanLogits)).toBeLessThan(1e-5);
        expect(fdError((r) => losses.loadLoss(route(clean, r)).value, raw, load.gradNoiseLogits)).toBeLessThan(1e-5);
        expect(losses.loadLoss(gate, { variance: 'sample' }).value).toBeCloseTo((load.value * E) / (E - 1), 6);
      });
  }
  it('Phi stays accurate in the far tail', () => {
    // std = softplus(raw) + 0.01 = 0.1 and a gap of 3 to the threshold: z = -30, Phi(-30) = 4.9067e-198
    const raw = Math.log(Math.exp(0.09) - 1);
    const gate = gating.noisyTopK(
      { data: [3, 0, 0], shape: [1, 3] },
      { data: [raw, raw, raw], shape: [1, 3] },
      { k: 1, training: true, noise: { data: [0, 0, 0], shape: [1, 3] } },
    );
    const { prob } = losses.loadLoss(gate);
    expect(prob[1] / 4.906713927148187e-198).toBeCloseTo(1, 8); // 1 + erf(z) would round to 0 here
    expect(prob[0]).toBe(1 - 4.906713927148187e-198); // = 1 in float64
  });
});

describe('switch, GShard, Mixtral and z losses', () => {
  const T = 30;
  const E = 8;
  const shape = [T, E];
  const logits = rand(T * E, 4, 2);
  const probsOf = (l: Float64Array) => ({ data: gating.soft({ data: l, shape }).probs, shape });
  const top1 = (l: Float64Array) => gating.switchTop1({ data: l, shape }).experts;

  it('switch loss: reference, gradient (top-1 held), alpha under uniform routing, alpha N when collapsed', () => {
    const r = losses.switchLoss(probsOf(logits), top1(logits));
    expect(r.value).toBeCloseTo(referenceSwitchLoss(rowsOf(logits, T, E), 1e-2), 12);
    const viaLogits = losses.softmaxBackward(probsOf(logits).data, r.gradProbs, E);
    const fixed = top1(logits);
    expect(fdError((l) => losses.switchLoss(probsOf(l), fixed).value, logits, viaLogits)).toBeLessThan(1e-6);
    const uniform = { data: new Float64Array(E * E).fill(1 / E), shape: [E, E] };
    expect(
      losses.switchLoss(
        uniform,
        Int32Array.from({ length: E }, (_, i) => i),
      ).value,
    ).toBeCloseTo(1e-2, 12);
    const collapsed = { data: Float64Array.from({ length: 4 * E }, (_, i) => (i % E === 0 ? 1 : 0)), shape: [4, E] };
    expect(losses.switchLoss(collapsed, new Int32Array(4)).value).toBeCloseTo(1e-2 * E, 12);
  });
  it('GShard loss: DeepSpeed scale is 1 under uniform routing; the paper scale is 1/E^2 of it', () => {
    const uniform = { data: new Float64Array(E * E).fill(1 / E), shape: [E, E] };
    const first = Int32Array.from({ length: E }, (_, i) => i);
    expect(losses.gshardLoss(uniform, first).value).toBeCloseTo(1, 12);
    expect(losses.gshardLoss(uniform, first, { scale: 'paper' }).value).toBeCloseTo(1 / E ** 2, 12);
    const r = losses.gshardLoss(probsOf(logits), top1(logits));
    expect(r.value).toBeCloseTo(referenceSwitchLoss(rowsOf(logits, T, E), 1), 12); // the same formula as Switch with alpha 1
    const fixed = top1(logits);
    expect(
      fdError((l) => losses.gshardLoss(probsOf(l), fixed).value, logits, losses.softmaxBackward(probsOf(logits).data, r.gradProbs, E)),
    ).toBeLessThan(1e-6);
  });
  it('Mixtral (HF): reference over pooled layers, topK under uniform routing, mask, gradient', () => {
    const layers = [logits, rand(T * E, 5, 2), rand(T * E, 6, 2)];
    for (const k of [1, 2, 8]) {
      const r = losses.mixtralLoss(
        layers.map((data) => ({ data, shape })),
        E,
        k,
      );
      expect(r.value).toBeCloseTo(
        referenceMixtralLoss(
          layers.map((l) => rowsOf(l, T, E)),
          k,
        ),
        12,
      );
      const zero = [{ data: new Float64Array(E * E), shape: [E, E] }];
      if (k === E) expect(losses.mixtralLoss(zero, E, k).value).toBeCloseTo(k, 12);
      for (let i = 0; i < layers.length; i++) {
        const f = (l: Float64Array) =>
          losses.mixtralLoss(
            layers.map((d, j) => ({ data: j === i ? l : d, shape })),
            E,
            k,
          ).value;
        expect(fdError(f, layers[i], r.gradLogits[i])).toBeLessThan(1e-6);
      }
    }
    // uniform routing: each expert gets T/E of every slot with equal probabilities -> topK
    const balanced = Float64Array.from({ length: E * E }, (_, i) => (Math.floor(i / E) === i % E ? 1e-9 : 0));
    expect(losses.mixtralLoss([{ data: balanced, shape: [E, E] }], E, 2).value).toBeCloseTo(2, 6);
    const mask = Float64Array.from({ length: T }, (_, t) => (t < 20 ? 1 : 0));
    const masked = losses.mixtralLoss([{ data: logits, shape }], E, 2, mask);
    expect(masked.value).toBeCloseTo(referenceMixtralLoss([rowsOf(logits, T, E).slice(0, 20)], 2), 12);
    expect(Array.from(masked.gradLogits[0].subarray(20 * E)).every((v) => v === 0)).toBe(true);
  });
  it('z-loss: reference, stable for huge logits, gradient', () => {
    const r = losses.zLoss({ data: logits, shape });
    expect(r.value).toBeCloseTo(referenceZLoss(rowsOf(logits, T, E)), 10);
    expect(fdError((l) => losses.zLoss({ data: l, shape }).value, logits, r.gradLogits)).toBeLessThan(1e-6);
    expect(losses.zLoss({ data: [1000, 1000], shape: [1, 2] }).value).toBeCloseTo((1000 + Math.log(2)) ** 2, 6);
  });
});

describe('DeepSeek-V3 sequence-wise loss and loss-free bias update', () => {
  const T = 12;
  const E = 6;
  const scores = Float64Array.from(rand(T * E, 7), (v) => 1 / (1 + Math.exp(-v)));
  it('per sequence, value by hand under uniform scores, gradient', () => {
    const r = losses.sequenceBalanceLoss({ data: scores, shape: [T, E] }, 2, 4, 1e-4);
    expect(r.perSequence.length).toBe(3);
    const fixed = gating.topK({ data: scores, shape: [T, E] }, { k: 2 }).experts;
    const f = (s: Float64Array) => losses.sequenceBalanceLoss({ data: s, shape: [T, E] }, 2, 4, 1e-4, { experts: fixed }).value;
    expect(f(scores)).toBeCloseTo(r.value, 15);
    expect(fdError(f, scores, r.gradScores)).toBeLessThan(1e-6);
    // uniform scores and an even spread of choices: f_i = 1, P_i = 1/E -> alpha
    const even = Int32Array.from({ length: 6 * 2 }, (_, i) => i % E);
    expect(
      losses.sequenceBalanceLoss({ data: new Float64Array(6 * E).fill(0.5), shape: [6, E] }, 2, 3, 1e-4, { experts: even }).value,
    ).toBeCloseTo(1e-4, 15);
  });
  it('updateBalanceBias: minus gamma when overloaded, plus when underloaded, unchanged at the mean', () => {
    const bias = Float64Array.from([0, 0.5, -0.5, 0]);
    const out = losses.updateBalanceBias(bias, Int32Array.from([10, 2, 4, 4]), 0.001); // mean load 5
    expect(Array.from(out)).toEqual([-0.001, 0.501, -0.499, 0.001]);
    expect(Array.from(losses.updateBalanceBias(bias, [6, 4, 5, 5], 0.01))).toEqual([-0.01, 0.51, -0.5, 0]); // at the mean: unchanged
    expect(Array.from(bias)).toEqual([0, 0.5, -0.5, 0]); // input untouched
    expectError(() => losses.updateBalanceBias(bias, [1, 2, 3, 4], -1), 'RangeError', /gamma to be a finite number >= 0/);
  });
});

describe('routingStats', () => {
  it('uniform, collapsed, with drops', () => {
    const even = gating.topK({ data: new Float64Array(8 * 4), shape: [8, 4] }, { k: 1, tieBreak: 'lower' });
    const s = losses.routingStats(even);
    expect(s.expertsUsed).toBe(1);
    expect(s.loadCV).toBeCloseTo(Math.sqrt(3), 12);
    const spread = {
      experts: Int32Array.from([0, 1, 2, 3]),
      weights: [1, 1, 1, 1],
      topK: 1,
      tokensPerExpert: Int32Array.from([1, 1, 1, 1]),
      dropped: 4,
    };
    const st = losses.routingStats(spread);
    expect(st.loadCV).toBe(0);
    expect(st.loadEntropy).toBeCloseTo(Math.log(4), 12);
    expect(st.dropRate).toBe(0.5);
    expect(st.weightEntropy).toBe(0);
  });
});

describe('losses refuse bad input', () => {
  it('shape mismatches, empty batches, NaN', () => {
    expectError(() => losses.cvSquared([]), 'RangeError', /v to be non-empty/);
    expectError(() => losses.cvSquared([1, NaN]), 'RangeError', /v to contain only finite values but got NaN at v\[1\]/);
    expectError(() => losses.switchLoss({ data: [0.5, 0.5], shape: [1, 2] }, Int32Array.from([0, 1])), 'RangeError', /experts\.length = 1/);
    expectError(() => losses.zLoss({ data: [], shape: [0, 2] }), 'RangeError', /logits to be at least \[1, 1\]/);
    expectError(() => losses.mixtralLoss([], 4, 2), 'TypeError', /logitsPerLayer to be a non-empty array/);
    expectError(
      () => losses.mixtralLoss([{ data: new Float64Array(8), shape: [2, 4] }], 4, 5),
      'RangeError',
      /topK to be an integer in \[1, 4\]/,
    );
    expectError(
      () => losses.sequenceBalanceLoss({ data: new Float64Array(12), shape: [3, 4] }, 2, 2, 1),
      'RangeError',
      /multiple of sequenceLength/,
    );
    const clean = gating.noisyTopK({ data: [1, 2], shape: [1, 2] }, { data: [0, 0], shape: [1, 2] }, { k: 1 });
    expectError(() => losses.loadLoss(clean), 'RangeError', /training: true/);
  });
});
