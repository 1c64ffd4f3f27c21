/** Each router against the independent float64 reference and against small cases worked by hand. */
import { Tensor, gating } from '../../lib';
import {
  ReferenceRouting,
  referenceCapacity,
  referenceExpertChoice,
  referenceNoisyTopK,
  referenceSigmoidBias,
  referenceTopKRouting,
  rowsOf,
} from '../../lib/reference';

function logits(tokens: number, experts: number, seed: number, std = 1.5) {
  return { data: Float64Array.from(Tensor.randn([tokens, experts], { seed, std }).data), shape: [tokens, experts] };
}

function expectSame(gate: gating.GateResult, ref: ReferenceRouting) {
  const k = gate.topK;
  ref.experts.forEach((row, t) => {
    for (let j = 0; j < k; j++) {
      expect(gate.experts[t * k + j]).toBe(j < row.length ? row[j] : -1);
      expect(gate.weights[t * k + j]).toBeCloseTo(j < row.length ? ref.weights[t][j] : 0, 12);
    }
  });
}

const SHAPES: Array<[number, number]> = [
  [1, 1],
  [1, 4],
  [3, 8],
  [64, 8],
  [33, 64],
  [257, 5],
];

describe('routers match the float64 reference', () => {
  for (const [T, E] of SHAPES) {
    const l = logits(T, E, T * 100 + E);
    const rows = rowsOf(l.data, T, E);
    it(`topK, both orders, normalised or not, both tie rules, every k: T=${T} E=${E}`, () => {
      for (let k = 1; k <= E; k += Math.max(1, Math.floor(E / 4))) {
        for (const tieBreak of ['lower', 'higher'] as const) {
          expectSame(gating.topK(l, { k, tieBreak }), referenceTopKRouting(rows, k, { tieBreak }));
          expectSame(gating.topK(l, { k, normalize: false, tieBreak }), referenceTopKRouting(rows, k, { normalize: false, tieBreak }));
          expectSame(
            gating.topK(l, { k, order: 'topk-softmax', tieBreak }),
            referenceTopKRouting(rows, k, { order: 'topk-softmax', tieBreak }),
          );
        }
      }
    });
    it(`soft and switch: T=${T} E=${E}`, () => {
      expectSame(gating.soft(l), referenceTopKRouting(rows, E, { normalize: false }));
      expectSame(gating.switchTop1(l), referenceTopKRouting(rows, 1, { normalize: false }));
    });
    it(`capacity, both drop policies: T=${T} E=${E}`, () => {
      for (const dropPolicy of ['position', 'score'] as const)
        for (const capacityFactor of [0.5, 1, 1.25]) {
          const k = Math.min(2, E);
          const gate = gating.topK(l, { k, capacityFactor, dropPolicy });
          const ref = referenceTopKRouting(rows, k);
          const dropped = referenceCapacity(ref, E, gating.expertCapacity(T, E, k, capacityFactor), dropPolicy);
          expectSame(gate, ref);
          expect(gate.dropped).toBe(dropped);
          const sw = gating.switchTop1(l, { capacityFactor, dropPolicy });
          const swRef = referenceTopKRouting(rows, 1, { normalize: false });
          referenceCapacity(swRef, E, gating.expertCapacity(T, E, 1, capacityFactor), dropPolicy);
          expectSame(sw, swRef);
        }
    });
    it(`expert choice: T=${T} E=${E}`, () => {
      for (const capacityFactor of [0.5, 1, 2]) {
        const gate = gating.expertChoice(l, { capacityFactor });
        expectSame(gate, referenceExpertChoice(rows, gate.capacity));
        expect(gate.capacity).toBe(Math.min(T, gating.expertCapacity(T, E, 1, capacityFactor)));
        expect(Array.from(gate.tokensPerExpert).every((c) => c === gate.capacity)).toBe(true);
      }
    });
    it(`noisy top-k with the noise held fixed: T=${T} E=${E}`, () => {
      const raw = logits(T, E, 7 + T);
      const noise = logits(T, E, 9 + T, 1);
      for (let k = 1; k <= E; k += Math.max(1, Math.floor(E / 3))) {
        const gate = gating.noisyTopK(l, raw, { k, training: true, noise });
        expectSame(gate, referenceNoisyTopK(rows, rowsOf(raw.data, T, E), rowsOf(noise.data, T, E), k, 1e-2));
        // Not training: no noise, the clean top-k.
        expectSame(gating.noisyTopK(l, raw, { k }), referenceTopKRouting(rows, k, { order: 'topk-softmax' }));
      }
    });
  }
  it('sigmoid + bias with group-limited selection', () => {
    const l = logits(40, 16, 3);
    const rows = rowsOf(l.data, 40, 16);
    const bias = Array.from(Tensor.randn([16], { seed: 4, std: 0.3 }).data);
    for (const o of [
      { numGroups: 1 },
      { numGroups: 4, topKGroups: 2 },
      { numGroups: 8, topKGroups: 3, routeScale: 2.5 },
      { numGroups: 16, topKGroups: 5, normalize: false },
    ])
      for (const k of [1, 4]) expectSame(gating.sigmoidBias(l, { k, bias, ...o }), referenceSigmoidBias(rows, k, { bias, ...o }));
  });
});

describe('small cases worked by hand', () => {
  it('a zero router without noise: every logit ties, so the tie rule decides', () => {
    const zero = { data: new Float64Array(3 * 4), shape: [3, 4] };
    expect(Array.from(gating.topK(zero, { k: 2 }).experts)).toEqual([0, 1, 0, 1, 0, 1]);
    expect(Array.from(gating.topK(zero, { k: 2, tieBreak: 'higher' }).experts)).toEqual([3, 2, 3, 2, 3, 2]); // onnxruntime
    expect(Array.from(gating.topK(zero, { k: 2 }).weights)).toEqual([0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
    expect(Array.from(gating.topK(zero, { k: 2, normalize: false }).weights)).toEqual([0.25, 0.25, 0.25, 0.25, 0.25, 0.25]);
    expect(Array.from(gating.noisyTopK(zero, zero, { k: 1 }).experts)).toEqual([0, 0, 0]);
  });

  it('capacity 1 and four tokens on one expert: three drop', () => {
    const l = { data: Float64Array.from([3, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0]), shape: [4, 4] };
    expect(gating.expertCapacity(4, 4, 1, 1)).toBe(1);
    const byPosition = gating.switchTop1(l, { capacityFactor: 1 });
    expect(Array.from(byPosition.experts)).toEqual([0, -1, -1, -1]);
    expect(byPosition.dropped).toBe(3);
    expect(Array.from(byPosition.weights.slice(1))).toEqual([0, 0, 0]);
    expect(Array.from(byPosition.tokensPerExpert)).toEqual([1, 0, 0, 0]);
    const byScore = gating.switchTop1(l, { capacityFactor: 1, dropPolicy: 'score' });
    expect(Array.from(byScore.experts)).toEqual([-1, -1, 0, -1]); // token 2 has the highest probability
  });

  it('Switch weights are the raw probability; uniform logits give 1/E', () => {
    const g = gating.switchTop1({ data: [0, 0, 0, 0, 0], shape: [1, 5] });
    expect(g.weights[0]).toBeCloseTo(0.2, 15);
  });

  it('GShard top-2: first choices before second choices, capacity 2S/E, random routing by 2 g2', () => {
    // 4 tokens, 2 experts, capacity factor 0.5: C = 2 * 4 / 2 * 0.5 = 2. Every token prefers expert 0.
    const l = { data: Float64Array.from([2, 1, 3, 1, 1, 0.5, 4, 1]), shape: [4, 2] };
    const g = gating.gshardTop2(l, { capacityFactor: 0.5, randomRouting: false });
    expect(g.capacity).toBe(2);
    // first choices: tokens 0 and 1 get expert 0, tokens 2 and 3 drop; second choices (expert 1): tokens 0, 1 fit
    expect(Array.from(g.experts)).toEqual([0, 1, 0, 1, -1, -1, -1, -1]);
    expect(g.dropped).toBe(4);
    const p = 1 / (1 + Math.exp(-1));
    expect(g.weights[0]).toBeCloseTo(p, 12); // renormalised over the pair: sigmoid(l0 - l1)
    expect(g.weights[1]).toBeCloseTo(1 - p, 12);
    // With random routing a second expert with g2 = 0.02 survives a U(0,1) coin with probability 0.04.
    const skewed = { data: Float64Array.from(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? 4 : 0.1))), shape: [100, 2] };
    const r = gating.gshardTop2(skewed, { capacityFactor: 2, seed: 5 });
    const kept = Array.from({ length: 100 }, (_, t) => r.experts[2 * t + 1]).filter((e) => e >= 0).length;
    expect(kept).toBeLessThan(15);
    expect(gating.gshardTop2(skewed, { capacityFactor: 2, seed: 5 }).experts).toEqual(r.experts); // seeded
  });

  it('expert choice: a token may get several experts or none', () => {
    // 3 tokens, 2 experts, capacity factor 2/3 -> C = 1: each expert takes one token.
    const l = { data: Float64Array.from([5, 0, 4, 1, 0, 0]), shape: [3, 2] };
    const g = gating.expertChoice(l, { capacityFactor: 2 / 3 });
    expect(g.capacity).toBe(1);
    // expert 0's best token is 0 (p = 0.993); expert 1's best is token 2 (p = 0.5 > 0.27 of token 1)
    expect(g.topK).toBe(1);
    expect(Array.from(g.experts)).toEqual([0, -1, 1]);
    expect(g.droppedTokens).toBe(1);
  });

  it('DeepSeek-V3: the bias changes the selection, not the weights', () => {
    const l = { data: Float64Array.from([2, 1, 0, -1]), shape: [1, 4] };
    const plain = gating.sigmoidBias(l, { k: 1 });
    const biased = gating.sigmoidBias(l, { k: 1, bias: [0, 0, 0, 5] });
    expect(plain.experts[0]).toBe(0);
    expect(biased.experts[0]).toBe(3);
    expect(biased.weights[0]).toBeCloseTo(1, 15); // normalised over one expert
    const unnorm = gating.sigmoidBias(l, { k: 1, bias: [0, 0, 0, 5], normalize: false, routeScale: 2.5 });
    expect(unnorm.weights[0]).toBeCloseTo(2.5 / (1 + Math.exp(1)), 15);
  });

  it('exploration noise and jitter are seeded and bounded', () => {
    const zero = { data: new Float64Array(6), shape: [2, 3] };
    const a = gating.explorationNoise(zero, { seed: 3 });
    expect(Array.from(a).every((v) => v >= 0 && v < 1)).toBe(true);
    expect(Array.from(gating.explorationNoise(zero, { seed: 3 }))).toEqual(Array.from(a));
    const x = new Float32Array(1000).fill(2);
    const j = gating.multiplicativeJitter(x, 0.01, 1);
    expect(Array.from(j).every((v) => v >= 1.98 - 1e-6 && v <= 2.02 + 1e-6)).toBe(true);
    expect(x[0]).toBe(2);
  });

  it('the noisy top-k std is softplus(x W_noise^T) + epsilon and the k-th, (k+1)-th values are reported', () => {
    const clean = { data: [0, 0, 0], shape: [1, 3] };
    const raw = { data: [0, 1, -1], shape: [1, 3] };
    const noise = { data: [1, -1, 0.5], shape: [1, 3] };
    const g = gating.noisyTopK(clean, raw, { k: 1, training: true, noise, noiseEpsilon: 0.01 });
    const std = [Math.log(2) + 0.01, Math.log(1 + Math.E) + 0.01, Math.log(1 + 1 / Math.E) + 0.01];
    std.forEach((s, i) => expect(g.noiseStd[i]).toBeCloseTo(s, 14));
    expect(g.experts[0]).toBe(0);
    expect(g.kthNoisy[0]).toBeCloseTo(std[0], 14);
    expect(g.kPlus1Noisy[0]).toBeCloseTo(0.5 * std[2], 14);
  });
});
