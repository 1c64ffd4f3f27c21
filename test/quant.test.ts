/**
 * quant.quantize / quant.dequantize against the documented formulas (lib/quant.ts: llama.cpp's Q8_0 and Q4_0),
 * computed here independently in float32 arithmetic (Math.fround), on awkward values: all zeros, one huge outlier
 * per group, subnormal scales, values on rounding ties. Then the layouts (GGUF's nibble order), QuantizedTensors
 * handed to MoELayer / PackedExperts as they are, and bad input.
 */
import { MoELayer, QuantizedTensor, Tensor, halfToFloat, kernels, quant } from '../lib';
import { Case, expectError, randomWeights } from './helpers';

const f = Math.fround;

/** float32 -> float16 bits, round to nearest even (the scale's storage). */
function toHalf(x: number): number {
  const a = Math.abs(x);
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  if (a === 0) return sign;
  if (a >= 65520) return sign | 0x7c00;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (e < -14) e = -14;
  const step = 2 ** (e - 10);
  const q = a / step;
  const r = Math.abs(q % 1) === 0.5 ? 2 * Math.round(q / 2) : Math.round(q); // q < 2^11: exact in float64
  const value = r * step;
  if (value >= 2 ** -14) {
    const exp = Math.floor(Math.log2(value));
    return sign | ((exp + 15) << 10) | (value / 2 ** (exp - 10) - 1024);
  }
  return sign | (value / 2 ** -24);
}

/** Q8_0: d = max|w| / 127, stored as float16; q = roundf(w * (1 / d)), ties away from zero; 0 where the stored d is 0. */
function q8(group: Float32Array): { codes: number[]; scale: number } {
  const amax = group.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const d = f(amax / 127);
  const scale = toHalf(d);
  const id = halfToFloat(scale) !== 0 ? f(1 / d) : 0;
  return { codes: Array.from(group, (v) => Math.sign(f(v * id)) * Math.round(Math.abs(f(v * id))) || 0), scale };
}

/** Q4_0: d = m / -8 (m: the first w of largest magnitude); u = min(15, trunc(w * (1 / d) + 8.5)). */
function q4(group: Float32Array): { codes: number[]; scale: number } {
  let amax = 0;
  let m = 0;
  for (const v of group)
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      m = v;
    }
  const d = f(m / -8);
  const scale = toHalf(d);
  const id = halfToFloat(scale) !== 0 ? f(1 / d) : 0;
  return { codes: Array.from(group, (v) => Math.min(15, Math.trunc(f(f(v * id) + 8.5)))), scale };
}

/** The int4 codes of a row in natural order, from GGUF's nibble order (byte j: input j low, j + g/2 high). */
function unpackInt4(bytes: Uint8Array, k: number, g: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < k; i++) {
    const group = Math.floor(i / g);
    const j = i % g;
    const byte = bytes[group * (g / 2) + (j % (g / 2))];
    out.push(j < g / 2 ? byte & 15 : byte >> 4);
  }
  return out;
}

function awkwardRows(g: number): Float32Array[] {
  const ties = new Float32Array(g).map((_, i) => (i === 0 ? 127 : i % 2 ? i + 0.5 : -(i + 0.5) / 2)); // d = 1: x.5 ties
  const outlier = new Float32Array(g).map((_, i) => (i === 3 ? 4e5 : Math.sin(i) * 1e-3));
  const zeros = new Float32Array(g);
  const subnormal = new Float32Array(g).map((_, i) => (i + 1) * 1e-9); // d rounds to a float16 subnormal or 0
  const tiny = new Float32Array(g).map((_, i) => (i % 3 ? 1e-42 : -2e-41)); // float32 subnormals: d stores 0
  const negative = new Float32Array(g).map((_, i) => -1 - i / g);
  const int4Ties = new Float32Array(g).map((_, i) => (i === 0 ? -8 : (i % 16) - 7.5)); // d = 1: w + 8.5 on .0
  const random = Tensor.randn([g], { seed: g }).data as Float32Array;
  return [ties, outlier, zeros, subnormal, tiny, negative, int4Ties, random];
}

describe('quant.quantize: the documented formulas', () => {
  for (const dtype of ['int8', 'int4'] as const)
    for (const g of [8, 32, 64])
      it(`${dtype}, groups of ${g}: codes and scales as Q8_0 / Q4_0 compute them`, () => {
        const rows = awkwardRows(g);
        const data = new Float32Array(rows.length * 2 * g);
        rows.forEach((r, i) => {
          data.set(r, 2 * i * g); // two groups per row: the awkward one, then its reverse
          data.set(Float32Array.from(r).reverse(), (2 * i + 1) * g);
        });
        const q = quant.quantize(Tensor.from(data, [rows.length, 2 * g]), { dtype, groupSize: g });
        expect(q.dtype).toBe(dtype);
        expect(q.groupSize).toBe(g);
        expect(q.scales.length).toBe(rows.length * 2);
        expect(Object.prototype.toString.call(q.codes)).toBe(dtype === 'int8' ? '[object Int8Array]' : '[object Uint8Array]');
        for (let r = 0; r < rows.length; r++) {
          const got =
            dtype === 'int8'
              ? Array.from(q.codes.subarray(r * 2 * g, (r + 1) * 2 * g))
              : unpackInt4(q.codes.subarray(r * g, (r + 1) * g) as Uint8Array, 2 * g, g);
          for (let h = 0; h < 2; h++) {
            const group = data.subarray((2 * r + h) * g, (2 * r + h + 1) * g);
            const want = dtype === 'int8' ? q8(group) : q4(group);
            expect(q.scales[2 * r + h]).toBe(want.scale);
            expect(got.slice(h * g, (h + 1) * g)).toEqual(want.codes);
          }
        }
        // dequantize: code times scale, exactly.
        const back = quant.dequantize(q).data as Float32Array;
        for (let i = 0; i < data.length; i++) {
          const row = Math.floor(i / (2 * g));
          const codes =
            dtype === 'int8'
              ? Array.from(q.codes.subarray(row * 2 * g, (row + 1) * 2 * g))
              : unpackInt4(q.codes.subarray(row * g, (row + 1) * g) as Uint8Array, 2 * g, g);
          const code = codes[i % (2 * g)];
          const scale = halfToFloat(q.scales[Math.floor(i / g)]);
          expect(back[i]).toBe(f((dtype === 'int8' ? code : code - 8) * scale));
        }
      });

  it('the quantization error is within half a step (int4: a step) plus the scale rounding; zero groups stay zero', () => {
    const w = Tensor.randn([64, 96], { seed: 3, std: 0.05 });
    for (const dtype of ['int8', 'int4'] as const) {
      const q = quant.quantize(w, { dtype, groupSize: 32 });
      const back = quant.dequantize(q).data;
      const data = w.data as Float32Array;
      for (let i = 0; i < data.length; i++) {
        const d = Math.abs(halfToFloat(q.scales[Math.floor(i / 32)]));
        // int4 clamps the side opposite the largest magnitude at +7 d: up to a whole step there.
        expect(Math.abs(back[i] - data[i])).toBeLessThanOrEqual(
          d * (dtype === 'int8' ? 0.5 : 1) + d * (dtype === 'int8' ? 127 : 8) * 2 ** -11 + 1e-12,
        );
      }
    }
    const zeros = quant.quantize(Tensor.zeros([2, 16]), { dtype: 'int4', groupSize: 8 });
    expect(Array.from(zeros.codes)).toEqual(new Array(16).fill(0x88));
    // (d = 0 / -8 is -0 in float32, as in llama.cpp: the weights come back as zeros of either sign)
    expect(Array.from(quant.dequantize(zeros).data, (v) => v + 0)).toEqual(new Array(32).fill(0));
  });

  it("groupSize 'row': one scale per row (any row length for int8, even ones for int4)", () => {
    const w = Tensor.randn([5, 33], { seed: 4 });
    const q = quant.quantize(w, { dtype: 'int8', groupSize: 'row' });
    expect(q.groupSize).toBe(33);
    expect(q.scales.length).toBe(5);
    const rows = quant.quantize(Tensor.randn([3, 10], { seed: 5 }), { dtype: 'int4', groupSize: 'row' });
    expect(rows.codes.length).toBe(15);
  });

  it('float16 and bfloat16 tensors are quantized from their exact float32 values; the input is not modified', () => {
    const w = Tensor.randn([4, 32], { seed: 6 });
    const before = Float32Array.from(w.data as Float32Array);
    const half = Tensor.from(
      Uint16Array.from(w.data as Float32Array, (v) => toHalf(v)),
      w.shape,
      'float16',
    );
    const q = quant.quantize(half, { dtype: 'int8' });
    expect(Array.from(q.codes)).toEqual(Array.from(quant.quantize(half.toFloat32(), { dtype: 'int8' }).codes));
    expect(Array.from(w.data)).toEqual(Array.from(before));
  });
});

describe('quantized weights handed over as they are', () => {
  const c: Case = { tokens: 9, dModel: 64, dHidden: 32, numExperts: 4, topK: 2, activation: 'swiglu', bias: true };
  for (const dtype of ['int8', 'int4'] as const)
    it(`${dtype}: MoELayer and PackedExperts take QuantizedTensors, bitwise the layer that quantized the floats`, () => {
      const w = randomWeights(c, 21);
      const x = Tensor.randn([c.tokens, c.dModel], { seed: 22 });
      const q = (t: Tensor | undefined) => (t ? quant.quantize(t, { dtype, groupSize: 16 }) : undefined);
      const fromFloats = new MoELayer({ ...c, weightDtype: dtype, groupSize: 16 }, w);
      // No weightDtype or groupSize: the QuantizedTensors imply them.
      const handed = new MoELayer(c, { ...w, w1: q(w.w1)!, w3: q(w.w3), w2: q(w.w2)! });
      expect(handed.config.weightDtype).toBe(dtype);
      expect(handed.config.groupSize).toBe(16);
      expect(Array.from(handed.forwardSync(x).output.data)).toEqual(Array.from(fromFloats.forwardSync(x).output.data));
      expect(handed.packedBytes).toBe(fromFloats.packedBytes);
      const plan = kernels.dispatch(kernels.topK(kernels.routerLogits(x, w.router), c.topK).experts, c.numExperts);
      const packed = new kernels.PackedExperts({ w1: q(w.w1)!, w3: q(w.w3), w2: q(w.w2)!, b1: w.b1, b3: w.b3, b2: w.b2 });
      expect(packed.weightDtype).toBe(dtype);
      const packedFloats = new kernels.PackedExperts(w, { weightDtype: dtype, groupSize: 16 });
      expect(Array.from(kernels.expertFFN(x, packed, plan, c.topK).data)).toEqual(
        Array.from(kernels.expertFFN(x, packedFloats, plan, c.topK).data),
      );
      for (const l of [fromFloats, handed, packed, packedFloats]) l.dispose();
    });

  it("per-row QuantizedTensors of different row lengths imply groupSize 'row'", () => {
    const w = randomWeights(c, 23);
    const q = (t: Tensor | undefined) => (t ? quant.quantize(t, { dtype: 'int8', groupSize: 'row' }) : undefined);
    const layer = new MoELayer(c, { ...w, w1: q(w.w1)!, w3: q(w.w3), w2: q(w.w2)! });
    expect(layer.config.groupSize).toBe('row');
    layer.dispose();
  });

  it('a QuantizedTensor built from codes and scales (a GGUF block, say) is checked field by field', () => {
    const codes = new Int8Array(64).map((_, i) => i - 32);
    const scales = new Uint16Array([0x3c00, 0x3800]); // 1, 0.5
    const t = new QuantizedTensor({ dtype: 'int8', shape: [2, 32], groupSize: 32, codes, scales });
    expect(Array.from(quant.dequantize(t).data).slice(30, 34)).toEqual([-2, -1, 0, 0.5]);
    expect(t.bytes).toBe(68);
  });
});

describe('quantization: bad input is a clear error in the one format', () => {
  const c: Case = { tokens: 1, dModel: 64, dHidden: 32, numExperts: 2, topK: 1, activation: 'swiglu', bias: false };
  const config = { dModel: 64, dHidden: 32, numExperts: 2, topK: 1 };

  it('unknown dtypes and group sizes that do not fit', () => {
    const w = Tensor.randn([4, 48], { seed: 1 });
    expectError(() => quant.quantize(w, { dtype: 'int3' as never }), 'RangeError', /options.dtype to be one of 'int8', 'int4'/);
    expectError(() => quant.quantize(w, { dtype: 'int4', groupSize: 32 }), 'RangeError', /groupSize to be a multiple of 8 that divides 48/);
    expectError(() => quant.quantize(w, { dtype: 'int8', groupSize: 12 }), 'RangeError', /multiple of 8/);
    expectError(
      () => quant.quantize(Tensor.randn([2, 9]), { dtype: 'int4', groupSize: 'row' }),
      'RangeError',
      /a row length divisible by 2 for options.groupSize 'row' with int4/,
    );
    expectError(() => quant.quantize(Tensor.from(new Int32Array(8), [8]), { dtype: 'int8', groupSize: 8 }), 'TypeError', /tensor.dtype/);
    expectError(
      () => MoELayer.random({ ...config, weightDtype: 'int4', groupSize: 48 }),
      'RangeError',
      /config.groupSize \(dModel = 64\) to be a multiple of 8 that divides 64/,
    );
    expectError(() => MoELayer.random({ ...config, dHidden: 36, weightDtype: 'int8' }), 'RangeError', /config.groupSize \(dHidden = 36\)/);
    expectError(() => MoELayer.random({ ...config, groupSize: 32 }), 'RangeError', /no config.groupSize \(weightDtype 'float32'/);
  });

  it('weights whose scale would overflow float16, and non-finite weights', () => {
    const big = Tensor.from(
      new Float32Array(32).fill(1).map((v, i) => (i === 7 ? 5e6 : v)),
      [1, 32],
    );
    expectError(() => quant.quantize(big, { dtype: 'int4' }), 'RangeError', /tensor within \|w\| <= 524032.*at tensor\[7\]/);
    expect(quant.quantize(big, { dtype: 'int8' }).dtype).toBe('int8'); // 5e6 / 127 fits a float16 (65504 * 127 = 8319008)
    const nan = Tensor.from(new Float32Array(32).fill(NaN), [1, 32]);
    expectError(() => quant.quantize(nan, { dtype: 'int8' }), 'RangeError', /finite/);
    const w = randomWeights(c, 2);
    const w2 = Float32Array.from(w.w2.data as Float32Array);
    w2[3] = 1e9;
    expectError(
      () => new MoELayer({ ...config, weightDtype: 'int8' }, { ...w, w2: Tensor.from(w2, w.w2.shape) }),
      'RangeError',
      /w2 within int8's range.* at w2\[3\]/,
    );
  });

  it('QuantizedTensors with the wrong dtype, shape, group, codes or scales', () => {
    const w = randomWeights(c, 3);
    const q = (t: Tensor, dtype: 'int8' | 'int4' = 'int8', groupSize: number | 'row' = 32) => quant.quantize(t, { dtype, groupSize });
    const withW1 =
      (w1: unknown, extra = {}) =>
      () =>
        new MoELayer({ ...config, weightDtype: 'int8', ...extra }, { ...w, w1: w1 as Tensor, w3: q(w.w3!), w2: q(w.w2) });
    expectError(withW1(q(w.w1, 'int4')), 'RangeError', /weights.w1.dtype = 'int8'/);
    expectError(withW1(q(w.w1, 'int8', 16)), 'RangeError', /weights.w1.groupSize = 32/);
    expectError(withW1(q(Tensor.randn([2, 32, 32]))), 'RangeError', /weights.w1.shape = \[2, 32, 64\]/);
    // A float w3 beside a quantized w1 is quantized at packing: mixing is allowed.
    expect(() => new MoELayer(config, { ...w, w1: q(w.w1) }).dispose()).not.toThrow();
    expectError(
      () => new MoELayer({ ...config, weightDtype: 'float32' }, { ...w, w1: q(w.w1) }),
      'TypeError',
      /weights.w1 to be a Tensor \(weightDtype 'float32'/,
    );
    const good = q(w.w1);
    expectError(() => new QuantizedTensor({ ...good, scales: new Uint16Array(3) }), 'RangeError', /init.scales to have 128 elements/);
    expectError(
      () => new QuantizedTensor({ ...good, scales: new Float32Array(128) as never }),
      'TypeError',
      /init.scales to be a Uint16Array/,
    );
    expectError(
      () => new QuantizedTensor({ ...good, codes: new Uint8Array(good.codes.length) }),
      'TypeError',
      /init.codes to be a Int8Array/,
    );
    expectError(() => new QuantizedTensor({ ...good, codes: new Int8Array(5) }), 'RangeError', /init.codes to have 4096 elements/);
    expectError(() => new QuantizedTensor({ ...good, scales: new Uint16Array(128).fill(0x7c00) }), 'RangeError', /finite float16/);
    expectError(() => new QuantizedTensor({ ...good, groupSize: 12 }), 'RangeError', /init.groupSize to be a multiple of 8/);
    expectError(() => quant.dequantize({} as QuantizedTensor), 'TypeError', /q to be a QuantizedTensor/);
  });
});
