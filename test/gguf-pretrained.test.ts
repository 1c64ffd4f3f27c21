/**
 * MoELayer.fromPretrained on GGUF files: every family's fixture written with llama.cpp's names and metadata gives the
 * same layer as its safetensors checkpoint; Q8_0 / Q4_0 experts become int8 / int4 groups as they are; K-quants and
 * the other block types are widened exactly (or converted, reported); malformed files are refused by name.
 */
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ExpertCache, MoELayer, QuantizedTensor, Tensor, backendInfo, gguf, pretrained, quant } from '../lib';
import type { LoadProgress } from '../lib/pretrained/load';
import { expectRejection, relativeError } from './helpers';
import { writeGgufFixture } from './gguf/from-fixture';
import { D, FIXTURES } from './pretrained/fixtures';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'moe-gguf-layer-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const same = (a: Float32Array, b: Float32Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

const FAMILIES = ['mixtral', 'mixtral-stacked', 'qwen2-moe', 'qwen3-moe', 'deepseek-v2', 'deepseek-v3', 'olmoe', 'gpt-oss'];

test.each(FAMILIES)('%s: the GGUF file gives the layer its safetensors checkpoint gives (float32, bitwise)', async (name) => {
  const f = FIXTURES[name];
  const st = path.join(dir, name);
  const fx = await f.make(st, 77);
  const file = path.join(dir, `${name}.gguf`);
  // the Mixtral fixture in the older one-tensor-per-expert layout (blk.N.ffn_gate.E.weight)
  await writeGgufFixture(fx, name, f.layer, file, name === 'mixtral');
  const info = await pretrained.inspect(file);
  expect(info.moeLayers).toContain(f.layer);
  let done: LoadProgress | undefined;
  const fromGguf = await MoELayer.fromPretrained(file, {
    layer: f.layer,
    weightDtype: 'float32',
    onProgress: (p) => (p.phase === 'done' ? (done = p) : 0),
  });
  expect(done?.conversions?.length).toBeGreaterThan(0);
  expect(done!.conversions!.every((c) => c.from === 'F32' && c.to === 'float32' && c.exact)).toBe(true);
  const loaded = await pretrained.load(st, { layer: f.layer, weightDtype: 'float32' });
  // llama.cpp's gpt-oss clamps at 7 (a constant there); the fixture's config.json asks for 0.75
  const fromSt = new MoELayer(name === 'gpt-oss' ? { ...loaded.config, swigluLimit: 7 } : loaded.config, loaded.weights);
  try {
    for (const tokens of [1, 19]) {
      const x = Tensor.randn([tokens, D], { seed: tokens + 5 });
      const a = fromGguf.forwardSync(x);
      const b = fromSt.forwardSync(x);
      expect(Array.from(a.routing.experts)).toEqual(Array.from(b.routing.experts));
      expect(same(a.output.data, b.output.data)).toBe(true);
    }
  } finally {
    fromGguf.dispose();
    fromSt.dispose();
  }
});

/** A Qwen3-MoE-shaped GGUF layer whose experts are `make(projection)` tensors; 256-wide so K-quant blocks fit. */
const K = { d: 256, h: 256, e: 4, k: 2 };
async function qwenFile(
  name: string,
  experts: (proj: 'gate' | 'up' | 'down', rows: number, cols: number) => gguf.GgufBlocks | QuantizedTensor | Tensor,
) {
  const file = path.join(dir, name);
  await gguf.save(file, {
    metadata: {
      'general.architecture': 'qwen3moe',
      'qwen3moe.block_count': 1,
      'qwen3moe.embedding_length': K.d,
      'qwen3moe.expert_feed_forward_length': K.h,
      'qwen3moe.expert_count': K.e,
      'qwen3moe.expert_used_count': K.k,
    },
    tensors: {
      'blk.0.ffn_gate_inp.weight': Tensor.randn([K.e, K.d], { seed: 3 }),
      'blk.0.ffn_gate_exps.weight': experts('gate', K.h, K.d),
      'blk.0.ffn_up_exps.weight': experts('up', K.h, K.d),
      'blk.0.ffn_down_exps.weight': experts('down', K.d, K.h),
    },
  });
  return file;
}
const config = { dModel: K.d, dHidden: K.h, numExperts: K.e, topK: K.k, router: { kind: 'topK' as const, normalize: true } };

test('Q8_0 and Q4_0 experts become int8 / int4 groups as they are (no requantization), and compute as such', async () => {
  for (const dtype of ['int8', 'int4'] as const) {
    const q: Record<string, QuantizedTensor> = {};
    const file = await qwenFile(
      `q-${dtype}.gguf`,
      (p, rows, cols) => (q[p] = quant.quantize(Tensor.randn([K.e, rows, cols], { seed: rows + p.length }), { dtype })),
    );
    let done: LoadProgress | undefined;
    const layer = await MoELayer.fromPretrained(file, { onProgress: (p) => (p.phase === 'done' ? (done = p) : 0) });
    expect(done!.conversions!.map((c) => [c.from, c.to, c.exact])).toEqual(
      Array(3).fill([dtype === 'int8' ? 'Q8_0' : 'Q4_0', dtype, true]),
    );
    const loaded = await pretrained.load(file);
    const w1 = loaded.weights.w1 as QuantizedTensor;
    expect(Buffer.from(w1.codes.buffer, w1.codes.byteOffset, w1.codes.byteLength).equals(Buffer.from(q.gate.codes.buffer))).toBe(true);
    expect(Array.from(w1.scales)).toEqual(Array.from(q.gate.scales));
    const ref = new MoELayer(config, { router: loaded.weights.router, w1: q.gate, w3: q.up, w2: q.down });
    const x = Tensor.randn([7, K.d], { seed: 9 });
    expect(same(layer.forwardSync(x).output.data, ref.forwardSync(x).output.data)).toBe(true);
    layer.dispose();
    ref.dispose();
  }
});

/** Random K-quant blocks with sane float16 scales (d, dmin in [2^-9, 2^-7)), so that values stay finite. */
function kBlocks(type: 'Q4_K' | 'Q5_K' | 'Q6_K', rows: number, cols: number, seed: number): gguf.GgufBlocks {
  const t = gguf.ggmlType(type)!;
  const n = (K.e * rows * cols) / 256;
  let s = seed;
  const data = new Uint8Array(n * t.typeSize).map(() => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24) & 0xff);
  const scale = (at: number) => ((data[at] = s & 0xff), (data[at + 1] = 0x18 | ((s >> 8) & 3))); // exponent 6-7: 2^-9..
  for (let b = 0; b < n; b++) {
    const at = b * t.typeSize;
    if (type === 'Q6_K') scale(at + 208);
    else {
      scale(at);
      scale(at + 2);
    }
  }
  return { type, shape: [K.e, rows, cols], data };
}

test.each(['Q4_K', 'Q5_K', 'Q6_K'] as const)(
  '%s experts stay K-quant blocks, or widen exactly to float32, or convert as asked',
  async (type) => {
    const blocks: Record<string, gguf.GgufBlocks> = {};
    const file = await qwenFile(`${type}.gguf`, (p, rows, cols) => (blocks[p] = kBlocks(type, rows, cols, rows * 7 + p.length)));
    const dtype = type.toLowerCase() as 'q4_k' | 'q5_k' | 'q6_k';
    // By default the blocks themselves: the layer's codes are the file's bytes.
    let done: LoadProgress | undefined;
    const kept = await MoELayer.fromPretrained(file, { onProgress: (p) => (p.phase === 'done' ? (done = p) : 0) });
    expect(done!.conversions!.every((c) => c.from === type && c.to === dtype && c.exact)).toBe(true);
    const loadedK = await pretrained.load(file);
    const w1 = loadedK.weights.w1 as QuantizedTensor;
    expect(w1.dtype).toBe(dtype);
    expect(Buffer.from(w1.codes.buffer, w1.codes.byteOffset, w1.codes.byteLength).equals(Buffer.from(blocks.gate.data))).toBe(true);
    // Widened to float32: exact, and the same layer as one built from ggml's dequantized weights.
    const layer = await MoELayer.fromPretrained(file, { weightDtype: 'float32', onProgress: (p) => (p.phase === 'done' ? (done = p) : 0) });
    expect(done!.conversions!.every((c) => c.from === type && c.to === 'float32' && c.exact)).toBe(true);
    const widen = (b: gguf.GgufBlocks) =>
      Tensor.from(
        gguf.dequantizeBlocks(
          gguf.ggmlType(type)!,
          b.data,
          b.shape.reduce((a, c) => a * c, 1),
          type,
        ),
        b.shape,
      );
    const router = (await pretrained.load(file)).weights.router;
    const ref = new MoELayer(config, { router, w1: widen(blocks.gate), w3: widen(blocks.up), w2: widen(blocks.down) });
    const x = Tensor.randn([5, K.d], { seed: 11 });
    const y = layer.forwardSync(x).output.data;
    expect(y.every(Number.isFinite)).toBe(true);
    const want = ref.forwardSync(x).output.data;
    expect(same(y, want)).toBe(true);
    // The K-quant layer computes with the same weights (each scale * code - min, rounded once or twice); on AVX-512
    // VNNI with its activations quantized to int8 per sub-block (docs/precision.md's bound for that path)
    const dot = ['avx512_bf16', 'avx512', 'avx2', 'neon_dotprod'].includes(backendInfo().isa); // (the K-quants' integer dot products)
    expect(relativeError(kept.forwardSync(x).output.data, want)).toBeLessThan(dot ? 3e-2 : 1e-5);
    layer.dispose();
    ref.dispose();
    kept.dispose();
    const asBf16 = await pretrained.load(file, { weightDtype: 'bfloat16' });
    expect(asBf16.conversions!.every((c) => c.to === 'bfloat16' && !c.exact)).toBe(true);
  },
);

test.each([
  ['Q3_K', 'q6_k', 108],
  ['Q5_0', 'int8', 0],
] as const)('%s experts are rewritten without loss as %s (the same weights in fewer bytes than float32)', async (type, dtype, dAt) => {
  const t = gguf.ggmlType(type)!;
  const blocks: Record<string, gguf.GgufBlocks> = {};
  const file = await qwenFile(`${type}.gguf`, (p, rows, cols) => {
    let s = rows * 5 + p.length;
    const data = new Uint8Array(((K.e * rows * cols) / t.blockSize) * t.typeSize).map(
      () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24) & 0xff,
    );
    for (let at = dAt; at < data.length; at += t.typeSize) data[at + 1] = 0x18 | (data[at + 1] & 3); // d in [2^-9, 2^-7)
    return (blocks[p] = { type, shape: [K.e, rows, cols], data });
  });
  let done: LoadProgress | undefined;
  const layer = await MoELayer.fromPretrained(file, { onProgress: (p) => (p.phase === 'done' ? (done = p) : 0) });
  expect(done!.conversions!.map((c) => [c.from, c.to, c.exact])).toEqual(Array(3).fill([type, dtype, true]));
  expect(layer.config.weightDtype).toBe(dtype);
  const loaded = await pretrained.load(file);
  const widen = (b: gguf.GgufBlocks) =>
    Tensor.from(
      gguf.dequantizeBlocks(
        t,
        b.data,
        b.shape.reduce((a, c) => a * c, 1),
        type,
      ),
      b.shape,
    );
  // the layer's own weights, read back, are ggml's dequantized ones bit for bit
  const w1 = loaded.weights.w1 as QuantizedTensor;
  expect(w1.dtype).toBe(dtype);
  expect(same(quant.dequantize(w1).data, widen(blocks.gate).data)).toBe(true);
  const ref = new MoELayer(config, { router: loaded.weights.router, w1: widen(blocks.gate), w3: widen(blocks.up), w2: widen(blocks.down) });
  const x = Tensor.randn([6, K.d], { seed: 13 });
  const y = layer.forwardSync(x).output.data;
  expect(y.every(Number.isFinite)).toBe(true);
  // (activations quantized to int8 -- int8 weights on avx512_bf16, avx2 and neon_dotprod, the K-quants on every x86
  // ISA and neon_dotprod: docs/precision.md's bound)
  const isa = backendInfo().isa;
  const dot =
    dtype === 'int8'
      ? ['avx512_bf16', 'avx2', 'neon_dotprod'].includes(isa)
      : ['avx512_bf16', 'avx512', 'avx2', 'neon_dotprod'].includes(isa);
  expect(relativeError(y, ref.forwardSync(x).output.data)).toBeLessThan(dot ? 3e-2 : 1e-5);
  layer.dispose();
  ref.dispose();
});

test('malformed or unsupported GGUF layers are RangeErrors naming the file and tensor', async () => {
  const base = (extra: Record<string, unknown>, tensors: Record<string, Tensor | gguf.GgufBlocks>) =>
    gguf.save(path.join(dir, 'bad.gguf'), {
      metadata: {
        'general.architecture': 'qwen3moe',
        'qwen3moe.block_count': 1,
        'qwen3moe.embedding_length': 32,
        'qwen3moe.expert_feed_forward_length': 32,
        'qwen3moe.expert_count': 2,
        'qwen3moe.expert_used_count': 1,
        ...(extra as Record<string, string>),
      },
      tensors,
    });
  const bad = path.join(dir, 'bad.gguf');
  const router = Tensor.randn([2, 32], { seed: 1 });
  const w = (rows: number, cols: number) => Tensor.randn([2, rows, cols], { seed: rows });
  await base({}, { 'blk.0.ffn_gate_inp.weight': router, 'blk.0.ffn_gate_exps.weight': w(32, 32), 'blk.0.ffn_up_exps.weight': w(32, 32) });
  await expectRejection(
    MoELayer.fromPretrained(bad),
    'RangeError',
    /bad\.gguf to hold tensor 'blk\.0\.ffn_down_exps\.weight' \(expert down projections\)/,
  );
  await base(
    {},
    {
      'blk.0.ffn_gate_inp.weight': router,
      'blk.0.ffn_gate_exps.weight': w(32, 32),
      'blk.0.ffn_up_exps.weight': w(32, 32),
      'blk.0.ffn_down_exps.weight': w(16, 32),
    },
  );
  await expectRejection(
    MoELayer.fromPretrained(bad),
    'RangeError',
    /tensor 'blk\.0\.ffn_down_exps\.weight' \(expert down projections\) of .*bad\.gguf to have shape \[2, 32, 32\] but got \[2, 16, 32\]/,
  );
  await base({ 'general.architecture': 'llama4' }, {});
  await expectRejection(MoELayer.fromPretrained(bad), 'RangeError', /of an MoE architecture moe-kernels reads .* but got 'llama4'/);
  const iq = { type: 'IQ2_XXS', shape: [2, 32, 256], data: new Uint8Array(2 * 32 * 66) };
  await gguf.save(bad, {
    metadata: {
      'general.architecture': 'qwen3moe',
      'qwen3moe.block_count': 1,
      'qwen3moe.embedding_length': 256,
      'qwen3moe.expert_feed_forward_length': 32,
      'qwen3moe.expert_count': 2,
      'qwen3moe.expert_used_count': 1,
    },
    tensors: {
      'blk.0.ffn_gate_inp.weight': Tensor.randn([2, 256]),
      'blk.0.ffn_gate_exps.weight': iq,
      'blk.0.ffn_up_exps.weight': iq,
      'blk.0.ffn_down_exps.weight': { type: 'F32', shape: [2, 256, 32], data: new Uint8Array(2 * 256 * 32 * 4) },
    },
  });
  await expectRejection(
    MoELayer.fromPretrained(bad),
    'RangeError',
    /tensor 'blk\.0\.ffn_gate_exps\.weight' of .*bad\.gguf to be of a type moe-kernels can widen .* but got IQ2_XXS/,
  );
  await expectRejection(MoELayer.fromPretrained(bad, { layer: 1 }), 'RangeError', /options\.layer to be an MoE layer/);
});

test("a Q4_K_M layer (Q4_K gate / up, Q6_K down) keeps both types: downWeightDtype 'q6_k', nothing converted", async () => {
  const blocks: Record<string, gguf.GgufBlocks> = {};
  const file = await qwenFile(
    'q4_k_m.gguf',
    (p, rows, cols) => (blocks[p] = kBlocks(p === 'down' ? 'Q6_K' : 'Q4_K', rows, cols, rows * 3 + p.length)),
  );
  let done: LoadProgress | undefined;
  const layer = await MoELayer.fromPretrained(file, { onProgress: (p) => (p.phase === 'done' ? (done = p) : 0) });
  expect(done!.conversions!.map((c) => [c.tensor.split('.')[2], c.from, c.to, c.exact])).toEqual([
    ['ffn_gate_exps', 'Q4_K', 'q4_k', true],
    ['ffn_up_exps', 'Q4_K', 'q4_k', true],
    ['ffn_down_exps', 'Q6_K', 'q6_k', true],
  ]);
  expect(layer.config.weightDtype).toBe('q4_k');
  expect(layer.config.downWeightDtype).toBe('q6_k');
  const loaded = await pretrained.load(file);
  const w2 = loaded.weights.w2 as QuantizedTensor;
  expect(w2.dtype).toBe('q6_k');
  expect(Buffer.from(w2.codes.buffer, w2.codes.byteOffset, w2.codes.byteLength).equals(Buffer.from(blocks.down.data))).toBe(true);
  const widen = (b: gguf.GgufBlocks) =>
    Tensor.from(
      gguf.dequantizeBlocks(
        gguf.ggmlType(b.type)!,
        b.data,
        b.shape.reduce((a, c) => a * c, 1),
        b.type,
      ),
      b.shape,
    );
  const ref = new MoELayer(config, { router: loaded.weights.router, w1: widen(blocks.gate), w3: widen(blocks.up), w2: widen(blocks.down) });
  const x = Tensor.randn([9, K.d], { seed: 12 });
  const dot = ['avx512_bf16', 'avx512', 'avx2', 'neon_dotprod'].includes(backendInfo().isa); // (the K-quants' integer dot products)
  expect(relativeError(layer.forwardSync(x).output.data, ref.forwardSync(x).output.data)).toBeLessThan(dot ? 3e-2 : 1e-5);
  // QuantizedTensors of the two types imply both dtypes; other mixes are refused by name
  const again = new MoELayer(config, loaded.weights);
  expect(again.config.downWeightDtype).toBe('q6_k');
  expect(same(again.forwardSync(x).output.data, layer.forwardSync(x).output.data)).toBe(true);
  expect(() => MoELayer.random({ ...config, weightDtype: 'int8', downWeightDtype: 'q6_k' })).toThrow(
    /config\.downWeightDtype to differ from weightDtype only among the K-quants .* but got weightDtype 'int8' and downWeightDtype 'q6_k'/,
  );
  layer.dispose();
  ref.dispose();
  again.dispose();
});

test('a Q4_K_M file served through an ExpertCache gives the resident layer bitwise (K-quant stores, a budget of one expert)', async () => {
  const file = await qwenFile('cached-q4_k_m.gguf', (p, rows, cols) =>
    kBlocks(p === 'down' ? 'Q6_K' : 'Q4_K', rows, cols, rows * 5 + p.length),
  );
  const cache = new ExpertCache({ bytes: 1 });
  const resident = await MoELayer.fromPretrained(file);
  const cached = await MoELayer.fromPretrained(file, { cache, storeDir: path.join(dir, 'stores') });
  try {
    expect(cached.config.downWeightDtype).toBe('q6_k');
    for (const tokens of [1, 9]) {
      const x = Tensor.randn([tokens, K.d], { seed: tokens });
      expect(same((await cached.forward(x)).output.data, resident.forwardSync(x).output.data)).toBe(true);
    }
    expect(cache.stats().misses).toBeGreaterThan(0);
    expect(await fs.readdir(path.join(dir, 'stores'))).toEqual(['cached-q4_k_m.layer0.q4_k.moestore']);
  } finally {
    cached.dispose();
    resident.dispose();
    cache.dispose();
  }
});
