import { Tensor, kernels } from '../lib';
import { referenceExpert, referenceRouterLogits, referenceTopK } from '../lib/reference';
import { Case, randomWeights, relativeError } from './helpers';

describe('kernels, one by one', () => {
  const c: Case = { tokens: 29, dModel: 33, dHidden: 50, numExperts: 8, topK: 3, activation: 'swiglu', bias: true };
  const w = randomWeights(c, 31);
  const x = Tensor.randn([c.tokens, c.dModel], { seed: 32 });

  it('routerLogits matches the reference', () => {
    const logits = kernels.routerLogits(x, w.router);
    expect(logits.shape).toEqual([c.tokens, c.numExperts]);
    const ref = referenceRouterLogits(x.data as Float32Array, c.tokens, c.dModel, w.router.data as Float32Array, c.numExperts);
    expect(relativeError(logits.data, ref)).toBeLessThan(1e-6);
  });

  it('topK matches the reference, normalised or not, for every k', () => {
    const logits = Tensor.randn([40, 8], { seed: 3, std: 2 });
    for (const normalize of [true, false])
      for (let k = 1; k <= 8; k++) {
        const r = kernels.topK(logits, k, { normalize });
        const ref = referenceTopK(logits.data, 40, 8, k, normalize);
        expect(Array.from(r.experts)).toEqual(Array.from(ref.experts));
        expect(relativeError(r.weights, ref.weights)).toBeLessThan(1e-6);
      }
  });

  it('dispatch: histogram, offsets, stable order, dropped slots skipped', () => {
    const experts = Int32Array.from([2, 0, 2, -1, 1, 2, 0, -1]);
    const plan = kernels.dispatch(experts, 4);
    expect(Array.from(plan.tokensPerExpert)).toEqual([2, 1, 3, 0]);
    expect(Array.from(plan.expertOffsets)).toEqual([0, 2, 3, 6, 6]);
    expect(Array.from(plan.order)).toEqual([1, 6, 4, 0, 2, 5, -1, -1]);
    expect(experts).toEqual(Int32Array.from([2, 0, 2, -1, 1, 2, 0, -1])); // input untouched
  });

  it('expertFFN + combine = the layer, built from the blocks', async () => {
    const packed = new kernels.PackedExperts(w, { activation: c.activation });
    const logits = kernels.routerLogits(x, w.router);
    const routing = kernels.topK(logits, c.topK);
    const plan = kernels.dispatch(routing.experts, c.numExperts);
    const slots = kernels.expertFFN(x, packed, plan, c.topK);
    expect(slots.shape).toEqual([c.tokens * c.topK, c.dModel]);
    const ref = { router: w.router.data, w1: w.w1.data, w3: w.w3!.data, w2: w.w2.data, b1: w.b1!.data, b3: w.b3!.data, b2: w.b2!.data };
    const refConfig = { ...c, normalizeTopK: true };
    for (let s = 0; s < c.tokens * c.topK; s += 7) {
      const t = Math.floor(s / c.topK);
      const y = referenceExpert(x.data as Float32Array, t * c.dModel, routing.experts[s], ref as never, refConfig);
      expect(relativeError(slots.data.subarray(s * c.dModel, (s + 1) * c.dModel), y)).toBeLessThan(1e-5);
    }
    const asyncSlots = await kernels.expertFFNAsync(x, packed, plan, c.topK);
    expect(Array.from(asyncSlots.data)).toEqual(Array.from(slots.data));
    const out = kernels.combine(slots, routing.weights, c.topK);
    expect(out.shape).toEqual([c.tokens, c.dModel]);
    for (let t = 0; t < c.tokens; t++)
      for (let i = 0; i < c.dModel; i++) {
        let s = 0;
        for (let j = 0; j < c.topK; j++) s += routing.weights[t * c.topK + j] * slots.data[(t * c.topK + j) * c.dModel + i];
        expect(out.data[t * c.dModel + i]).toBeCloseTo(s, 5);
      }
    packed.dispose();
    expect(packed.disposed).toBe(true);
  });

  it('expertFFN gives zero rows for dropped slots and skips empty experts', () => {
    const packed = new kernels.PackedExperts(w, { activation: c.activation });
    const experts = new Int32Array(c.tokens * c.topK).fill(-1);
    experts[4] = 5; // one routed slot, everything else dropped
    const plan = kernels.dispatch(experts, c.numExperts);
    const slots = kernels.expertFFN(x, packed, plan, c.topK);
    for (let s = 0; s < c.tokens * c.topK; s++) {
      const row = slots.data.subarray(s * c.dModel, (s + 1) * c.dModel);
      if (s === 4) expect(row.some((v) => v !== 0)).toBe(true);
      else expect(row.every((v) => v === 0)).toBe(true);
    }
  });
});
