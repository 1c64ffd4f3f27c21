/**
 * Expert weights stored as bfloat16 or float16 (config.weightDtype): rounded to nearest even when packed, widened
 * exactly in registers, activations and sums in float32. So such a layer must be bitwise the float32 layer built on
 * the weights rounded first, and within the float32 tolerance of the float64 reference on those rounded weights.
 * isa.test.ts runs this file on every ISA path.
 */
import { ACTIVATIONS, MoELayer, MoEWeights, Tensor, backendInfo, kernels, setThreads } from '../lib';
import { Case, expectError, randomWeights, referenceFor, relativeError } from './helpers';

const TOLERANCE = 1e-5;

/** float32 -> bfloat16 -> float32, round to nearest, ties to even (what packing does). */
function roundToBf16(values: Float32Array): Float32Array {
  const out = Float32Array.from(values);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) bits[i] = ((bits[i] + 0x7fff + ((bits[i] >>> 16) & 1)) & 0xffff0000) >>> 0;
  return out;
}

/** float32 -> float16 -> float32, round to nearest, ties to even (float64 arithmetic on powers of two is exact). */
function roundToF16(values: Float32Array): Float32Array {
  const evenRound = (q: number) => (Math.abs(q % 1) === 0.5 ? 2 * Math.round(q / 2) : Math.round(q));
  return values.map((v) => {
    const a = Math.abs(v);
    if (a === 0) return v;
    let e = Math.max(-14, Math.floor(Math.log2(a)));
    if (2 ** e > a) e--; // log2 rounded up just below a power of two
    if (e < -14) e = -14; // subnormals share the smallest normal's step
    const step = 2 ** (e - 10);
    return Math.sign(v) * evenRound(a / step) * step;
  });
}

type HalfDtype = 'bfloat16' | 'float16';
const ROUND: Record<HalfDtype, (v: Float32Array) => Float32Array> = { bfloat16: roundToBf16, float16: roundToF16 };

/** The same weights with every expert matrix (not the router, not the biases) rounded to `dtype`. */
function roundedTo(dtype: HalfDtype, w: MoEWeights): MoEWeights {
  const r = (t: Tensor | undefined) => (t ? Tensor.from(ROUND[dtype](t.data as Float32Array), t.shape) : undefined);
  return { ...w, w1: r(w.w1)!, w3: r(w.w3), w2: r(w.w2)! };
}

function same(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

function check(dtype: HalfDtype, c: Case, seed: number) {
  const rounded = (w: MoEWeights) => roundedTo(dtype, w);
  const w = randomWeights(c, seed);
  const x = Tensor.randn([c.tokens, c.dModel], { seed: seed + 1 });
  const bf16 = new MoELayer({ ...c, weightDtype: dtype }, w);
  const f32 = new MoELayer(c, rounded(w));
  const got = bf16.forwardSync(x);
  expect(same(got.output.data, f32.forwardSync(x).output.data)).toBe(true);
  const ref = referenceFor(c, rounded(w), x);
  expect(Array.from(got.routing.experts)).toEqual(Array.from(ref.experts));
  expect(relativeError(got.output.data, ref.output)).toBeLessThan(TOLERANCE);
  expect(bf16.packedBytes).toBeLessThan(f32.packedBytes * 0.6);
  bf16.dispose();
  f32.dispose();
}

for (const dtype of ['bfloat16', 'float16'] as const)
  describe(`${dtype} expert weights (isa ${backendInfo().isa})`, () => {
    const rounded = (w: MoEWeights) => roundedTo(dtype, w);
    let seed = 700;
    const shapes: Array<[number, number, number, number, number]> = [
      // tokens, dModel, dHidden, numExperts, topK
      [1, 33, 100, 4, 2],
      [1, 100, 33, 64, 6],
      [64, 17, 40, 8, 8],
      [513, 24, 36, 64, 1],
      [200, 64, 48, 4, 4],
    ];
    for (const [tokens, dModel, dHidden, numExperts, topK] of shapes)
      for (const bias of [false, true])
        it(`T=${tokens} d=${dModel} h=${dHidden} E=${numExperts} k=${topK} bias=${bias}`, () =>
          check(dtype, { tokens, dModel, dHidden, numExperts, topK, activation: 'swiglu', bias }, seed++));

    for (const activation of ACTIVATIONS)
      it(`activation ${activation}`, () =>
        check(dtype, { tokens: 37, dModel: 33, dHidden: 100, numExperts: 4, topK: 2, activation, bias: true }, seed++));

    it('shared experts and a routed rule (switch with capacity) follow weightDtype', () => {
      const c: Case = { tokens: 41, dModel: 20, dHidden: 24, numExperts: 8, topK: 1, activation: 'swiglu', bias: true };
      const shared = randomWeights({ ...c, numExperts: 2, dHidden: 12 }, 13);
      const w: MoEWeights = { ...randomWeights(c, 14), shared: { w1: shared.w1, w3: shared.w3, w2: shared.w2, b2: shared.b2 } };
      const config = {
        dModel: 20,
        dHidden: 24,
        numExperts: 8,
        router: { kind: 'switch' as const, capacityFactor: 1 },
        sharedExperts: 2,
        sharedHidden: 12,
      };
      const x = Tensor.randn([c.tokens, c.dModel], { seed: 15 });
      const bf16 = new MoELayer({ ...config, weightDtype: dtype }, w);
      const f32 = new MoELayer(config, { ...rounded(w), shared: rounded(w.shared as MoEWeights) });
      const out = bf16.forwardSync(x);
      expect(out.routing.dropped).toBeGreaterThan(0);
      expect(same(out.output.data, f32.forwardSync(x).output.data)).toBe(true);
      expect(bf16.packedBytes).toBeLessThan(f32.packedBytes * 0.6);
    });

    it('bitwise identical for any thread count, sync and async', async () => {
      const c: Case = { tokens: 300, dModel: 64, dHidden: 96, numExperts: 8, topK: 2, activation: 'swiglu', bias: true };
      const layer = new MoELayer({ ...c, weightDtype: dtype }, randomWeights(c, 9));
      const x = Tensor.randn([c.tokens, c.dModel], { seed: 10 });
      const threads = backendInfo().threads;
      try {
        setThreads(1);
        const one = layer.forwardSync(x).output.data;
        setThreads(Math.max(2, threads));
        expect(same(layer.forwardSync(x).output.data, one)).toBe(true);
        expect(same((await layer.forward(x)).output.data, one)).toBe(true);
      } finally {
        setThreads(threads);
      }
    });

    it(`kernels.PackedExperts with weightDtype ${dtype}: the grouped FFN on the rounded weights, half the bytes`, () => {
      const c: Case = { tokens: 19, dModel: 40, dHidden: 56, numExperts: 4, topK: 2, activation: 'geglu', bias: true };
      const w = randomWeights(c, 11);
      const x = Tensor.randn([c.tokens, c.dModel], { seed: 12 });
      const plan = kernels.dispatch(kernels.topK(kernels.routerLogits(x, w.router), c.topK).experts, c.numExperts);
      const bf16 = new kernels.PackedExperts(w, { activation: c.activation, weightDtype: dtype });
      const f32 = new kernels.PackedExperts(rounded(w), { activation: c.activation });
      expect(bf16.weightDtype).toBe(dtype);
      expect(bf16.packedBytes).toBeLessThan(f32.packedBytes * 0.6);
      expect(same(kernels.expertFFN(x, bf16, plan, c.topK).data, kernels.expertFFN(x, f32, plan, c.topK).data)).toBe(true);
      bf16.dispose();
      f32.dispose();
    });

    it('an unknown weight dtype is a RangeError in the one format', () => {
      const config = { dModel: 8, dHidden: 8, numExperts: 2, topK: 1 };
      expectError(() => MoELayer.random({ ...config, weightDtype: 'int3' as never }), 'RangeError', /config.weightDtype to be one of/);
      const w = randomWeights({ ...config, tokens: 1, activation: 'swiglu', bias: false }, 1);
      expectError(
        () => new kernels.PackedExperts(w, { weightDtype: 'float64' as never }),
        'RangeError',
        /options.weightDtype to be one of/,
      );
      if (dtype === 'float16') {
        const big = {
          ...w,
          w2: Tensor.from(
            Float32Array.from(w.w2.data as Float32Array, (v, i) => (i === 5 ? 70000 : v)),
            w.w2.shape,
          ),
        };
        expectError(
          () => new MoELayer({ ...config, weightDtype: 'float16' }, big),
          'RangeError',
          /w2 within float16's range.*70000.* at w2\[5\]/,
        );
        expect(() => new MoELayer({ ...config, weightDtype: 'bfloat16' }, big).dispose()).not.toThrow();
      }
    });
  });
