/**
 * layer.exportWeights(): the packed weights read back in the [out, in] layout, for every weight dtype, with biases,
 * shared experts and their gate, a noise router and a router bias; and a layer built from them computes the same.
 */
import { MoELayer, Tensor, WEIGHT_DTYPES, quant, safetensors } from '../lib';
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Case, randomWeights } from './helpers';

const small: Case = { tokens: 9, dModel: 40, dHidden: 24, numExperts: 5, topK: 2, activation: 'swiglu', bias: true };
const c = small;
const bits = (t: { data: ArrayBufferView }) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
const bf16 = (t: Tensor) =>
  Tensor.from(
    Uint16Array.from(t.data as Float32Array, (v) => bf16bits(v)),
    t.shape,
    'bfloat16',
  ).toFloat32();
function bf16bits(v: number) {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer)[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

test.each(WEIGHT_DTYPES)(
  '%s: the weights as the kernels compute with them, and a float32 layer from them computes the same',
  (weightDtype) => {
    // The K-quants' rows are super-blocks of 256.
    const kQuant = weightDtype === 'q4_k' || weightDtype === 'q5_k' || weightDtype === 'q6_k';
    const c = kQuant ? { ...small, dModel: 256, dHidden: 256 } : small;
    const sharedHidden = kQuant ? 256 : 16;
    const w = randomWeights(c, 3);
    const shared = randomWeights({ ...c, numExperts: 2, dHidden: sharedHidden }, 4);
    const sharedGate = Tensor.randn([2, c.dModel], { seed: 5 });
    const quantized = weightDtype === 'int8' || weightDtype === 'int4';
    const config = { ...c, weightDtype, sharedExperts: 2, sharedHidden, ...(quantized ? { groupSize: 8 } : {}) };
    const layer = new MoELayer(config, { ...w, shared, sharedGate });
    const out = layer.exportWeights();
    const expected = (t: Tensor) =>
      weightDtype === 'float32' || weightDtype === 'float16'
        ? weightDtype === 'float32'
          ? t
          : Tensor.from(t.data as Float32Array, t.shape) // float16: checked against the round trip below
        : weightDtype === 'bfloat16'
          ? bf16(t)
          : quant.dequantize(quant.quantize(t, { dtype: weightDtype, ...(kQuant ? {} : { groupSize: 8 }) }));
    for (const key of ['w1', 'w3', 'w2'] as const) {
      expect(out[key]!.shape).toEqual(w[key]!.shape);
      if (weightDtype !== 'float16') expect(bits(out[key]!).equals(bits(expected(w[key]!)))).toBe(true);
      else
        expect(Math.max(...(out[key]!.data as Float32Array).map((v, i) => Math.abs(v - (w[key]!.data[i] as number))))).toBeLessThan(1e-3);
    }
    for (const key of ['b1', 'b3', 'b2', 'router'] as const) expect(bits(out[key]!).equals(bits(w[key]!))).toBe(true);
    expect(bits(out.sharedGate!).equals(bits(sharedGate))).toBe(true);
    expect(out.shared!.w1.shape).toEqual([2, sharedHidden, c.dModel]);
    // A float32 layer from the exported weights computes what the layer computes (the kernels' own arithmetic:
    // bitwise for float32, and for the others where the ISA widens the weights instead of rounding activations).
    const again = new MoELayer({ ...config, weightDtype: 'float32', groupSize: undefined }, out);
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 6 });
    const a = layer.forwardSync(x).output.data;
    const b = again.forwardSync(x).output.data;
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < a.length; i++) {
      diff = Math.max(diff, Math.abs(a[i] - b[i]));
      scale = Math.max(scale, Math.abs(b[i]));
    }
    expect(diff / scale).toBeLessThan(weightDtype === 'float32' ? 1e-7 : 3e-2);
    if (weightDtype === 'float32') expect(bits(layer.forwardSync(x).output).equals(bits(again.forwardSync(x).output))).toBe(true);
    layer.dispose();
    again.dispose();
  },
);

test('no biases, no shared experts: absent keys; a noise router and a router bias come back', () => {
  const w = randomWeights({ ...c, bias: false }, 7);
  const noiseRouter = Tensor.randn([c.numExperts, c.dModel], { seed: 8 });
  const routerBias = Tensor.randn([c.numExperts], { seed: 9 });
  const layer = new MoELayer({ ...c, router: { kind: 'noisyTopK' } }, { ...w, noiseRouter, routerBias });
  const out = layer.exportWeights();
  expect(Object.keys(out).sort()).toEqual(['noiseRouter', 'router', 'routerBias', 'w1', 'w2', 'w3']);
  expect(bits(out.noiseRouter!).equals(bits(noiseRouter))).toBe(true);
  expect(bits(out.routerBias!).equals(bits(routerBias))).toBe(true);
  layer.dispose();
  expect(() => layer.exportWeights()).toThrow(/a layer that is not disposed/);
});

test('a loaded or trained layer saves with safetensors.save and loads back the same', async () => {
  const w = randomWeights(c, 10);
  const layer = new MoELayer(c, w);
  const out = layer.exportWeights();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'moe-export-'));
  const file = path.join(dir, 'layer.safetensors');
  await safetensors.save(file, out as unknown as Record<string, Tensor>);
  const r = await safetensors.open(file);
  const back = new MoELayer(c, {
    router: await r.tensor('router'),
    w1: await r.tensor('w1'),
    w3: await r.tensor('w3'),
    w2: await r.tensor('w2'),
    b1: await r.tensor('b1'),
    b3: await r.tensor('b3'),
    b2: await r.tensor('b2'),
  });
  await r.close();
  await fs.rm(dir, { recursive: true, force: true });
  const x = Tensor.randn([3, c.dModel], { seed: 11 });
  expect(bits(back.forwardSync(x).output).equals(bits(layer.forwardSync(x).output))).toBe(true);
  layer.dispose();
  back.dispose();
});
