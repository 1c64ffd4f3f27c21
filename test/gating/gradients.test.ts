/** Every router's backward against central finite differences in float64, on random inputs. */
import { Tensor, gating } from '../../lib';
import { finiteDifferenceError } from '../helpers';

type Route = (logits: Float64Array) => gating.GateResult;

function random(n: number, seed: number, std = 1.5): Float64Array {
  return Float64Array.from(Tensor.randn([n], { seed, std }).data);
}

/** The finite-difference error of `backward` for L = sum_s g_s w_s(logits), with the choices unchanged. */
function gradientError(route: Route, backward: (gate: never, g: Float64Array) => Float64Array, logits: Float64Array, seed: number): number {
  const gate = route(logits);
  const upstream = random(gate.weights.length, seed, 1);
  const loss = (l: Float64Array) => {
    const g = route(l);
    expect(Array.from(g.experts)).toEqual(Array.from(gate.experts)); // the step must not change any choice
    return g.weights.reduce((s, w, i) => s + w * upstream[i], 0);
  };
  return finiteDifferenceError(loss, logits, backward(gate as never, upstream));
}

const TOL = 1e-6;

describe('router gradients by central finite differences', () => {
  const shapes: Array<[number, number]> = [
    [1, 2],
    [5, 4],
    [12, 8],
    [7, 16],
  ];
  for (const [T, E] of shapes) {
    const shape = [T, E];
    const l0 = random(T * E, T * 31 + E);
    const m = (data: Float64Array) => ({ data, shape });
    it(`topK (normalised, raw, topk-softmax, with capacity): T=${T} E=${E}`, () => {
      for (let k = 1; k <= E; k = k * 2 + 1) {
        expect(gradientError((l) => gating.topK(m(l), { k }), gating.topKBackward, l0, 1)).toBeLessThan(TOL);
        expect(gradientError((l) => gating.topK(m(l), { k, normalize: false }), gating.topKBackward, l0, 2)).toBeLessThan(TOL);
        expect(gradientError((l) => gating.topK(m(l), { k, order: 'topk-softmax' }), gating.topKBackward, l0, 3)).toBeLessThan(TOL);
        expect(gradientError((l) => gating.topK(m(l), { k, capacityFactor: 0.6 }), gating.topKBackward, l0, 4)).toBeLessThan(TOL);
        expect(
          gradientError(
            (l) => gating.topK(m(l), { k, normalize: false, capacityFactor: 0.6, dropPolicy: 'score' }),
            gating.topKBackward,
            l0,
            5,
          ),
        ).toBeLessThan(TOL);
      }
    });
    it(`soft, switch (with capacity), expert choice: T=${T} E=${E}`, () => {
      expect(gradientError((l) => gating.soft(m(l)), gating.softBackward, l0, 6)).toBeLessThan(TOL);
      expect(gradientError((l) => gating.switchTop1(m(l)), gating.switchTop1Backward, l0, 7)).toBeLessThan(TOL);
      expect(gradientError((l) => gating.switchTop1(m(l), { capacityFactor: 0.5 }), gating.switchTop1Backward, l0, 8)).toBeLessThan(TOL);
      expect(gradientError((l) => gating.expertChoice(m(l), { capacityFactor: 1.5 }), gating.expertChoiceBackward, l0, 9)).toBeLessThan(
        TOL,
      );
    });
    it(`GShard top-2 with capacity and random routing held fixed: T=${T} E=${E}`, () => {
      expect(
        gradientError((l) => gating.gshardTop2(m(l), { capacityFactor: 0.75, seed: 4 }), gating.gshardTop2Backward, l0, 10),
      ).toBeLessThan(TOL);
    });
    it(`sigmoid + bias, groups, normalised or not: T=${T} E=${E}`, () => {
      const bias = random(E, 5, 0.2);
      const groups = E >= 4 ? { numGroups: E / 2, topKGroups: Math.max(1, E / 4) } : {};
      expect(
        gradientError(
          (l) => gating.sigmoidBias(m(l), { k: Math.min(2, E), bias, routeScale: 2.5, ...groups }),
          gating.sigmoidBiasBackward,
          l0,
          11,
        ),
      ).toBeLessThan(TOL);
      expect(
        gradientError((l) => gating.sigmoidBias(m(l), { k: 1, bias, normalize: false }), gating.sigmoidBiasBackward, l0, 12),
      ).toBeLessThan(TOL);
    });
    it(`noisy top-k: clean logits, noise logits and noise std, noise held fixed: T=${T} E=${E}`, () => {
      const raw = random(T * E, 13);
      const noise = m(random(T * E, 14, 1));
      for (let k = 1; k <= E; k = k * 2 + 1) {
        const viaClean = (l: Float64Array) => gating.noisyTopK(m(l), m(raw), { k, training: true, noise });
        const viaNoise = (r: Float64Array) => gating.noisyTopK(m(l0), m(r), { k, training: true, noise });
        const back = (key: 'gradCleanLogits' | 'gradNoiseLogits') => (g: never, up: Float64Array) => gating.noisyTopKBackward(g, up)[key];
        expect(gradientError(viaClean, back('gradCleanLogits'), l0, 15)).toBeLessThan(TOL);
        expect(gradientError(viaNoise, back('gradNoiseLogits'), raw, 16)).toBeLessThan(TOL);
        // dL/dstd = dL/dH * noise: checked through H = clean + noise * std with a finite difference on std
        const gate = viaClean(l0);
        const up = random(gate.weights.length, 17, 1);
        const { gradNoiseStd, gradCleanLogits } = gating.noisyTopKBackward(gate as never, up);
        gradNoiseStd.forEach((g, i) => expect(g).toBeCloseTo(gradCleanLogits[i] * gate.noise[i], 14));
      }
    });
  }

  it('dropped and non-selected entries get zero gradient where the rule has no normaliser over them', () => {
    const l = { data: Float64Array.from([3, 0, 0, 0, 2, 0, 0, 0]), shape: [2, 4] };
    const g = gating.topK(l, { k: 1, capacityFactor: 0.5 }); // capacity 1: token 1 drops
    expect(Array.from(g.experts)).toEqual([0, -1]);
    const grad = gating.topKBackward(g, [1, 1]);
    expect(Array.from(grad)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]); // a single normalised weight is constant 1
    const sig = gating.sigmoidBias(l, { k: 1, normalize: false });
    const gs = gating.sigmoidBiasBackward(sig, [1, 1]);
    expect(gs[1]).toBe(0);
    expect(gs[0]).toBeGreaterThan(0);
  });

  it('routerWeightGradient chains dL/dlogits to dL/dW for logits = x W^T', () => {
    const x = { data: random(3 * 5, 20), shape: [3, 5] };
    const w = random(4 * 5, 21);
    const logitsOf = (wm: Float64Array) => {
      const out = new Float64Array(12);
      for (let t = 0; t < 3; t++)
        for (let e = 0; e < 4; e++) for (let i = 0; i < 5; i++) out[t * 4 + e] += x.data[t * 5 + i] * wm[e * 5 + i];
      return out;
    };
    const up = random(3 * 2, 22, 1);
    const route = (wm: Float64Array) => gating.topK({ data: logitsOf(wm), shape: [3, 4] }, { k: 2 });
    const dW = gating.routerWeightGradient(gating.topKBackward(route(w), up), x);
    const h = 1e-6;
    for (let i = 0; i < w.length; i++) {
      const p = w.slice();
      const q = w.slice();
      p[i] += h;
      q[i] -= h;
      const f = (wm: Float64Array) => route(wm).weights.reduce((s, v, j) => s + v * up[j], 0);
      expect(dW[i]).toBeCloseTo((f(p) - f(q)) / (2 * h), 7);
    }
  });
});
