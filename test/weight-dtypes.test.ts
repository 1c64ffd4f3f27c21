/**
 * Expert weights stored as bfloat16, float16, int8 or int4 (config.weightDtype). Where the kernels keep the
 * activations in float32 (every ISA for float16; roundsActivations below says where for the others), the weights are widened
 * or dequantized exactly in registers and summed like float32 ones, so such a layer must be bitwise the float32
 * layer built on the stored weights (rounded, or quant.dequantize of the codes), and within the float32 tolerance
 * of the float64 reference on them. Where the dot-product kernels round the activations (bfloat16) or quantize them
 * (int8 per group), the output must stay within the bound docs/precision.md documents.
 * isa.test.ts runs this file on every ISA path.
 */
import { ACTIVATIONS, GroupSize, MoELayer, MoEWeights, Tensor, WeightDtype, backendInfo, kernels, quant, setThreads } from '../lib';
import { Case, expectError, randomWeights, referenceFor, relativeError } from './helpers';

const TOLERANCE = 1e-5;
/**
 * The documented bounds (docs/precision.md) where activations are rounded, max error / max |output|: bfloat16
 * rounding, int8 / int4 quantizing activations per weight group (per row with groupSize 'row': coarser).
 */
const ROUNDED_BOUND: Record<string, number> = { bfloat16: 1e-2, int8: 3e-2, int4: 3e-2, row: 6e-2 };
const roundedBound = (dtype: string, groupSize: GroupSize = 32) => ROUNDED_BOUND[groupSize === 'row' ? 'row' : dtype];

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

type StoredDtype = Exclude<WeightDtype, 'float32'>;

/** A tensor's weights as `dtype` stores them, as float32. */
function stored(dtype: StoredDtype, t: Tensor, groupSize: GroupSize): Tensor {
  if (dtype === 'bfloat16') return Tensor.from(roundToBf16(t.data as Float32Array), t.shape);
  if (dtype === 'float16') return Tensor.from(roundToF16(t.data as Float32Array), t.shape);
  return quant.dequantize(quant.quantize(t, { dtype, groupSize }));
}

/** The same weights with every expert matrix (not the router, not the biases) as `dtype` stores it. */
function storedWeights(dtype: StoredDtype, w: MoEWeights, groupSize: GroupSize = 32): MoEWeights {
  const r = (t: Tensor | undefined) => (t ? stored(dtype, t, groupSize) : undefined);
  return { ...w, w1: r(w.w1)!, w3: r(w.w3), w2: r(w.w2)! };
}

/** Whether this process's kernels round the activations for `dtype` (the dot-product kernels of avx512_bf16, and
 * the integer ones of avx512, avx2 and neon_dotprod: docs/precision.md). */
function roundsActivations(dtype: WeightDtype): boolean {
  const isa = backendInfo().isa;
  if (isa === 'avx512') return dtype === 'int4';
  if (isa === 'avx2' || isa === 'neon_dotprod') return dtype === 'int8' || dtype === 'int4';
  return isa === 'avx512_bf16' && (dtype === 'bfloat16' || dtype === 'int8' || dtype === 'int4');
}

function same(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

/**
 * Stored bytes per float32 byte of expert weights, with slack for padded panels: half for 16-bit weights,
 * (8 + 16 / g) / 32 for int8 and (4 + 16 / g) / 32 for int4 (a float16 scale per group of g).
 */
function byteRatio(dtype: StoredDtype, groupSize: GroupSize = 32): number {
  const g = groupSize === 'row' ? 24 : groupSize;
  return (dtype === 'int8' ? (8 + 16 / g) / 32 : dtype === 'int4' ? (4 + 16 / g) / 32 : 0.5) * 1.1;
}

/** packedBytes within byteRatio of the float32 layer's, counting the float32 router and biases once. */
function expectFewerBytes(bytes: number, f32Bytes: number, w: { w1: Tensor; w3?: Tensor; w2: Tensor }, ratio: number) {
  const weightBytes = 4 * (w.w1.size + (w.w3?.size ?? 0) + w.w2.size);
  expect(bytes).toBeLessThan(f32Bytes - weightBytes + weightBytes * ratio);
}

function check(dtype: StoredDtype, c: Case, seed: number, groupSize: GroupSize = 32) {
  const w = randomWeights(c, seed);
  const x = Tensor.randn([c.tokens, c.dModel], { seed: seed + 1 });
  const quantized = dtype === 'int8' || dtype === 'int4';
  const layer = new MoELayer({ ...c, weightDtype: dtype, ...(quantized ? { groupSize } : {}) }, w);
  const sw = storedWeights(dtype, w, groupSize);
  const f32 = new MoELayer(c, sw);
  const got = layer.forwardSync(x);
  const ref = referenceFor(c, sw, x);
  expect(Array.from(got.routing.experts)).toEqual(Array.from(ref.experts));
  if (roundsActivations(dtype)) {
    expect(relativeError(got.output.data, ref.output)).toBeLessThan(roundedBound(dtype, groupSize));
  } else {
    expect(same(got.output.data, f32.forwardSync(x).output.data)).toBe(true);
    expect(relativeError(got.output.data, ref.output)).toBeLessThan(TOLERANCE);
  }
  expectFewerBytes(layer.packedBytes, f32.packedBytes, w, byteRatio(dtype, groupSize));
  layer.dispose();
  f32.dispose();
}

for (const dtype of ['bfloat16', 'float16', 'int8', 'int4'] as const)
  describe(`${dtype} expert weights (isa ${backendInfo().isa})`, () => {
    const quantized = dtype === 'int8' || dtype === 'int4';
    const g = (groupSize: GroupSize) => (quantized ? { groupSize } : {});
    const rounded = (w: MoEWeights) => storedWeights(dtype, w, quantized ? 8 : 32);
    let seed = 700;
    // tokens, dModel, dHidden, numExperts, topK, groupSize (int8 / int4 only; 'row': one scale per row)
    const shapes: Array<[number, number, number, number, number, GroupSize]> = quantized
      ? [
          [1, 64, 96, 4, 2, 32],
          [1, 96, 40, 64, 6, 8],
          [64, 24, 40, 8, 8, 'row'],
          [513, 32, 64, 64, 1, 32],
          [200, 64, 48, 4, 4, 16],
          ...(dtype === 'int8' ? ([[7, 33, 101, 4, 2, 'row']] as Array<[number, number, number, number, number, GroupSize]>) : []),
        ]
      : [
          [1, 33, 100, 4, 2, 32],
          [1, 100, 33, 64, 6, 32],
          [64, 17, 40, 8, 8, 32],
          [513, 24, 36, 64, 1, 32],
          [200, 64, 48, 4, 4, 32],
        ];
    for (const [tokens, dModel, dHidden, numExperts, topK, groupSize] of shapes)
      for (const bias of [false, true])
        it(`T=${tokens} d=${dModel} h=${dHidden} E=${numExperts} k=${topK}${quantized ? ` g=${groupSize}` : ''} bias=${bias}`, () =>
          check(dtype, { tokens, dModel, dHidden, numExperts, topK, activation: 'swiglu', bias }, seed++, groupSize));

    for (const activation of ACTIVATIONS)
      it(`activation ${activation}`, () =>
        check(dtype, { tokens: 37, dModel: 32, dHidden: 104, numExperts: 4, topK: 2, activation, bias: true }, seed++, 8));

    it('shared experts and a routed rule (switch with capacity) follow weightDtype', () => {
      const c: Case = { tokens: 41, dModel: 24, dHidden: 32, numExperts: 8, topK: 1, activation: 'swiglu', bias: true };
      const shared = randomWeights({ ...c, numExperts: 2, dHidden: 16 }, 13);
      const w: MoEWeights = { ...randomWeights(c, 14), shared: { w1: shared.w1, w3: shared.w3, w2: shared.w2, b2: shared.b2 } };
      const config = {
        dModel: 24,
        dHidden: 32,
        numExperts: 8,
        router: { kind: 'switch' as const, capacityFactor: 1 },
        sharedExperts: 2,
        sharedHidden: 16,
      };
      const x = Tensor.randn([c.tokens, c.dModel], { seed: 15 });
      const layer = new MoELayer({ ...config, weightDtype: dtype, ...g(8) }, w);
      const f32 = new MoELayer(config, { ...rounded(w), shared: rounded(w.shared as MoEWeights) });
      const out = layer.forwardSync(x);
      expect(out.routing.dropped).toBeGreaterThan(0);
      const want = f32.forwardSync(x).output.data;
      if (roundsActivations(dtype)) expect(relativeError(out.output.data, want)).toBeLessThan(roundedBound(dtype));
      else expect(same(out.output.data, want)).toBe(true);
      expect(layer.packedBytes).toBeLessThan(f32.packedBytes * (byteRatio(dtype, 8) + 0.1));
    });

    it('bitwise identical for any thread count, sync and async', async () => {
      const c: Case = { tokens: 300, dModel: 64, dHidden: 96, numExperts: 8, topK: 2, activation: 'swiglu', bias: true };
      const layer = new MoELayer({ ...c, weightDtype: dtype }, randomWeights(c, 9));
      // (groupSize 32 divides both dimensions)
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

    it(`kernels.PackedExperts with weightDtype ${dtype}: the grouped FFN on the stored weights, fewer bytes`, () => {
      const c: Case = { tokens: 19, dModel: 40, dHidden: 56, numExperts: 4, topK: 2, activation: 'geglu', bias: true };
      const w = randomWeights(c, 11);
      const x = Tensor.randn([c.tokens, c.dModel], { seed: 12 });
      const plan = kernels.dispatch(kernels.topK(kernels.routerLogits(x, w.router), c.topK).experts, c.numExperts);
      const packed = new kernels.PackedExperts(w, { activation: c.activation, weightDtype: dtype, ...g(8) });
      const f32 = new kernels.PackedExperts(rounded(w), { activation: c.activation });
      expect(packed.weightDtype).toBe(dtype);
      expectFewerBytes(packed.packedBytes, f32.packedBytes, w, byteRatio(dtype, 8));
      const got = kernels.expertFFN(x, packed, plan, c.topK).data;
      const want = kernels.expertFFN(x, f32, plan, c.topK).data;
      if (roundsActivations(dtype)) expect(relativeError(got, want)).toBeLessThan(roundedBound(dtype));
      else expect(same(got, want)).toBe(true);
      packed.dispose();
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

// llama.cpp's K-quants: rows of whole super-blocks (256), so their own shapes. The layer computes with the weights
// quant.dequantize gives (ggml's), widened (1e-5: a weight may be one fused rounding instead of two, so not
// bitwise) or, on the x86 ISAs (avx512_bf16, avx512, avx2), with int8 activations per super-block (the dot-product bound).
for (const dtype of ['q4_k', 'q5_k', 'q6_k'] as const)
  describe(`${dtype} expert weights (isa ${backendInfo().isa})`, () => {
    const dot = ['avx512_bf16', 'avx512', 'avx2', 'neon_dotprod'].includes(backendInfo().isa); // (the K-quants' integer dot products)
    const bytesPerWeight = { q4_k: 148 / 256, q5_k: 276 / 256, q6_k: 274 / 256 }[dtype];
    let seed = 900;
    const shapes: Array<[number, number, number, number, number]> = [
      // (llama.cpp's reference quantizer searches each sub-block: about a million weights a second, so small layers)
      [1, 256, 512, 3, 2],
      [37, 512, 256, 3, 3],
      [130, 256, 256, 4, 4],
    ];
    for (const [tokens, dModel, dHidden, numExperts, topK] of shapes)
      it(`T=${tokens} d=${dModel} h=${dHidden} E=${numExperts} k=${topK}`, () => {
        const c: Case = { tokens, dModel, dHidden, numExperts, topK, activation: 'swiglu', bias: true };
        const w = randomWeights(c, seed++);
        const x = Tensor.randn([tokens, dModel], { seed: seed++ });
        const layer = new MoELayer({ ...c, weightDtype: dtype }, w);
        // The stored weights, read back from the packed layer (export-weights.test.ts checks that they are
        // quant.dequantize(quant.quantize(w)) bitwise: quantizing again here would double the suite's slowest part)
        const stored = layer.exportWeights();
        const sw: MoEWeights = { ...w, w1: stored.w1, w3: stored.w3, w2: stored.w2 };
        const got = layer.forwardSync(x);
        const ref = referenceFor(c, sw, x);
        expect(Array.from(got.routing.experts)).toEqual(Array.from(ref.experts));
        expect(relativeError(got.output.data, ref.output)).toBeLessThan(dot ? 3e-2 : TOLERANCE);
        const f32 = new MoELayer(c, sw);
        expectFewerBytes(layer.packedBytes, f32.packedBytes, w, (bytesPerWeight / 4) * 1.1);
        layer.dispose();
        f32.dispose();
      });

    it('QuantizedTensors of its blocks are taken as they are; bitwise identical for any thread count', async () => {
      const c: Case = { tokens: 50, dModel: 256, dHidden: 256, numExperts: 4, topK: 2, activation: 'swiglu', bias: false };
      const w = randomWeights(c, 31);
      const q = (t: Tensor) => quant.quantize(t, { dtype });
      const fromFloats = new MoELayer({ ...c, weightDtype: dtype }, w);
      const fromBlocks = new MoELayer(c, { ...w, w1: q(w.w1), w3: q(w.w3!), w2: q(w.w2) });
      expect(fromBlocks.config.weightDtype).toBe(dtype);
      const x = Tensor.randn([c.tokens, c.dModel], { seed: 32 });
      const threads = backendInfo().threads;
      try {
        setThreads(1);
        const one = fromFloats.forwardSync(x).output.data;
        expect(same(fromBlocks.forwardSync(x).output.data, one)).toBe(true);
        setThreads(Math.max(2, threads));
        expect(same(fromFloats.forwardSync(x).output.data, one)).toBe(true);
        expect(same((await fromBlocks.forward(x)).output.data, one)).toBe(true);
      } finally {
        setThreads(threads);
        fromFloats.dispose();
        fromBlocks.dispose();
      }
    });

    it('refuses rows that are not whole super-blocks, and a groupSize', () => {
      const c = { dModel: 200, dHidden: 256, numExperts: 2, topK: 1 };
      expectError(
        () => MoELayer.random({ ...c, weightDtype: dtype }),
        'RangeError',
        /a row length that is a multiple of 256 for .* \(config\.groupSize \(dModel = 200\)\) but got 200/,
      );
      expectError(
        () => MoELayer.random({ ...c, dModel: 256, weightDtype: dtype, groupSize: 32 }),
        'RangeError',
        /config\.groupSize .* to be 256 for /,
      );
    });
  });
