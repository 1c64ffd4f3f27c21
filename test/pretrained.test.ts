/**
 * fromPretrained on tiny seeded checkpoints of every family and layout (test/pretrained/fixtures.ts), against each
 * family's MoE block in float64 written from its modeling code (test/pretrained/hf-reference.ts).
 */
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MoELayer, Tensor, pretrained } from '../lib';
import { FIXTURES, Fixture, D } from './pretrained/fixtures';
import { referenceBlock } from './pretrained/hf-reference';
import { expectRejection, relativeError } from './helpers';

let root: string;
const made = new Map<string, Fixture>();

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'moe-pretrained-'));
  let seed = 11;
  for (const [name, f] of Object.entries(FIXTURES)) made.set(name, await f.make(path.join(root, name), seed++));
});

afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

const input = (tokens: number, seed: number) => Tensor.randn([tokens, D], { seed, std: 1 });

describe.each(Object.keys(FIXTURES))('%s', (name) => {
  test('float32 weights match the float64 block of its modeling code (1, 5 and 33 tokens)', async () => {
    const f = made.get(name)!;
    const layer = await MoELayer.fromPretrained(f.dir, { layer: FIXTURES[name].layer, weightDtype: 'float32' });
    try {
      for (const tokens of [1, 5, 33]) {
        const x = input(tokens, tokens);
        const y = layer.forwardSync(x).output;
        const want = referenceBlock(f.tensors, f.config, FIXTURES[name].layer, x.data as Float32Array, tokens);
        expect(relativeError(y.data, want)).toBeLessThan(2e-5);
      }
    } finally {
      layer.dispose();
    }
  });

  test('bfloat16, int8 and int4 loads are the float32 weights converted as packing would (bitwise), bf16 within 2e-2', async () => {
    const f = made.get(name)!;
    const layer = FIXTURES[name].layer;
    const x = input(17, 5);
    const loaded = await pretrained.load(f.dir, { layer, weightDtype: 'float32' });
    for (const weightDtype of ['bfloat16', 'int8', 'int4'] as const) {
      const fromCheckpoint = await MoELayer.fromPretrained(f.dir, { layer, weightDtype });
      const packed = new MoELayer({ ...loaded.config, weightDtype }, loaded.weights);
      try {
        const y = (await fromCheckpoint.forward(x)).output;
        expect(Buffer.from(y.data.buffer).equals(Buffer.from(packed.forwardSync(x).output.data.buffer))).toBe(true);
        expect(fromCheckpoint.packedBytes).toBe(packed.packedBytes);
        if (weightDtype === 'bfloat16')
          expect(relativeError(y.data, referenceBlock(f.tensors, f.config, layer, x.data as Float32Array, 17))).toBeLessThan(2e-2);
      } finally {
        fromCheckpoint.dispose();
        packed.dispose();
      }
    }
  });
});

test('inspect names the family and its MoE layers', async () => {
  expect(await pretrained.inspect(made.get('qwen2-moe')!.dir)).toEqual({
    family: 'qwen2-moe',
    modelType: 'qwen2_moe',
    numLayers: 2,
    moeLayers: [1],
  });
  expect((await pretrained.inspect(made.get('deepseek-v3')!.dir)).moeLayers).toEqual([2]);
  expect((await pretrained.inspect(made.get('qwen3-moe')!.dir)).moeLayers).toEqual([1]);
});

/** A copy of fixture `name` with config.json edited, or with tensors removed from its single file. */
async function variant(name: string, tag: string, edit: (config: Record<string, unknown>) => void): Promise<string> {
  const src = made.get(name)!.dir;
  const dst = path.join(root, `${name}-${tag}`);
  await fs.cp(src, dst, { recursive: true });
  const config = JSON.parse(await fs.readFile(path.join(dst, 'config.json'), 'utf8'));
  edit(config);
  await fs.writeFile(path.join(dst, 'config.json'), JSON.stringify(config));
  return dst;
}

describe('what fromPretrained refuses, naming the field, file or tensor', () => {
  test('an unknown family', async () => {
    const dir = await variant('olmoe', 'llama', (c) => (c.model_type = 'llama'));
    await expectRejection(MoELayer.fromPretrained(dir), 'RangeError', /config\.json "model_type" to be one of mixtral, .* but got "llama"/);
  });
  test('a dense layer, or one past the end', async () => {
    const dir = made.get('deepseek-v3')!.dir;
    await expectRejection(
      MoELayer.fromPretrained(dir, { layer: 0 }),
      'RangeError',
      /options\.layer to be an MoE layer of this deepseek-v3 model \(layers 2\) but got 0 \(a dense layer\)/,
    );
    await expectRejection(MoELayer.fromPretrained(dir, { layer: 7 }), 'RangeError', /but got 7$/);
  });
  test('hyper-parameters the layer cannot represent', async () => {
    await expectRejection(
      MoELayer.fromPretrained(await variant('qwen3-moe', 'act', (c) => (c.hidden_act = 'relu2'))),
      'RangeError',
      /config\.json "hidden_act" to be 'silu' or 'gelu'.* but got 'relu2'/,
    );
    await expectRejection(
      MoELayer.fromPretrained(await variant('deepseek-v3', 'softmax', (c) => (c.scoring_func = 'softmax'))),
      'RangeError',
      /"scoring_func" to be 'sigmoid' for DeepSeek-V3/,
    );
    await expectRejection(
      MoELayer.fromPretrained(await variant('deepseek-v2', 'method', (c) => (c.topk_method = 'noaux_tc'))),
      'RangeError',
      /"topk_method" to be 'greedy' or 'group_limited_greedy'/,
    );
    await expectRejection(
      MoELayer.fromPretrained(await variant('mixtral', 'k', (c) => (c.num_experts_per_tok = 2.5))),
      'RangeError',
      /"num_experts_per_tok" to be an integer/,
    );
    await expectRejection(
      MoELayer.fromPretrained(await variant('olmoe', 'noe', (c) => delete c.num_experts)),
      'RangeError',
      /"num_experts" to be an integer in \[1, 2147483647\] but got none/,
    );
  });
  test('a missing expert tensor or shard, before anything large is read', async () => {
    const dir = await variant('mixtral', 'shard', () => undefined);
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(await fs.readFile(indexFile, 'utf8'));
    await fs.writeFile(
      indexFile,
      JSON.stringify({ ...index, weight_map: { ...index.weight_map, 'model.layers.1.block_sparse_moe.experts.5.w3.weight': undefined } }),
    );
    const phases: string[] = [];
    await expectRejection(
      MoELayer.fromPretrained(dir, { layer: 1, onProgress: (p) => phases.push(p.phase) }),
      'RangeError',
      /to hold a tensor 'model\.layers\.1\.block_sparse_moe\.experts\.5\.w3\.weight'/,
    );
    expect(phases).toEqual([]); // refused while planning: nothing read
    await fs.writeFile(indexFile, JSON.stringify(index));
    await fs.rm(path.join(dir, 'model-00002-of-00002.safetensors'));
    await expectRejection(
      MoELayer.fromPretrained(dir, { layer: 1 }),
      'RangeError',
      /the shard .*model-00002-of-00002\.safetensors \(listed for tensor 'model\.layers\.1\./,
    );
  });
  test('a tensor of the wrong shape or dtype', async () => {
    const dir = path.join(root, 'olmoe-shape');
    const f = made.get('olmoe')!;
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({ ...f.config, num_experts_per_tok: 2 }));
    const r = await (await import('../lib')).safetensors.open(path.join(f.dir, 'model.safetensors'));
    const tensors: Record<string, Tensor> = {};
    for (const n of r.names()) tensors[n] = await r.tensor(n);
    await r.close();
    const { safetensors } = await import('../lib');
    await safetensors.save(path.join(dir, 'model.safetensors'), {
      ...tensors,
      'model.layers.0.mlp.experts.3.up_proj.weight': Tensor.zeros([D, D]),
    });
    await expectRejection(
      MoELayer.fromPretrained(dir),
      'RangeError',
      /tensor 'model\.layers\.0\.mlp\.experts\.3\.up_proj\.weight' \(expert 3 up_proj\) to have shape \[96, 64\] but got \[64, 64\]/,
    );
    await safetensors.save(path.join(dir, 'model.safetensors'), {
      ...tensors,
      'model.layers.0.mlp.gate.weight': Tensor.zeros([8, D], 'int32'),
    });
    await expectRejection(
      MoELayer.fromPretrained(dir),
      'RangeError',
      /tensor 'model\.layers\.0\.mlp\.gate\.weight' \(router\) to be F32 or F16 or BF16 but got I32/,
    );
  });
  test('bad options', async () => {
    const dir = made.get('olmoe')!.dir;
    await expectRejection(MoELayer.fromPretrained(dir, { layer: -1 }), 'RangeError', /options\.layer/);
    await expectRejection(MoELayer.fromPretrained(dir, { onProgress: 3 as never }), 'TypeError', /options\.onProgress to be a function/);
    await expectRejection(MoELayer.fromPretrained(dir, { signal: {} as never }), 'TypeError', /options\.signal to be an AbortSignal/);
    await expectRejection(MoELayer.fromPretrained(dir, { weightDtype: 'int3' as never }), 'RangeError', /weightDtype/);
    await expectRejection(
      MoELayer.fromPretrained(path.join(root, 'absent')),
      'RangeError',
      /a checkpoint directory at .*absent but got nothing there/,
    );
  });
});

test('progress: read then pack then done, bytes counted up to the total', async () => {
  const seen: { phase: string; bytesRead: number; totalBytes: number }[] = [];
  const layer = await MoELayer.fromPretrained(made.get('deepseek-v3')!.dir, { onProgress: (p) => seen.push({ ...p }) });
  layer.dispose();
  const phases = seen.map((p) => p.phase).filter((p, i, a) => p !== a[i - 1]);
  expect(phases).toEqual(['read', 'pack', 'done']);
  const total = seen[0].totalBytes;
  for (let i = 1; i < seen.length; i++) expect(seen[i].bytesRead).toBeGreaterThanOrEqual(seen[i - 1].bytesRead);
  expect(seen.find((p) => p.phase === 'pack')!.bytesRead).toBe(total);
  // the FP8 experts, their block scales, the shared expert, the router and the bias
  expect(total).toBe(8 * 3 * 96 * 64 + 8 * 3 * 2 * 3 * 4 + 3 * 96 * 64 + 3 * 6 * 4 + 8 * 64 * 2 + 8 * 4);
});

test('an AbortSignal stops the load between reads, with its reason, and leaves no layer behind', async () => {
  const dir = made.get('mixtral')!.dir;
  const before = new AbortController();
  before.abort(new Error('not wanted'));
  await expect(MoELayer.fromPretrained(dir, { layer: 1, signal: before.signal })).rejects.toThrow('not wanted');
  const during = new AbortController();
  let reads = 0;
  const p = MoELayer.fromPretrained(dir, {
    layer: 1,
    signal: during.signal,
    onProgress: () => {
      if (++reads === 3) during.abort();
    },
  });
  await expect(p).rejects.toMatchObject({ name: 'AbortError' });
  expect(reads).toBeLessThan(10);
});

test('memory: one layer of a 300 MB checkpoint reads that layer only and holds about twice its size', async () => {
  const { writeSyntheticCheckpoint } = await import('../tools/synthetic-checkpoint');
  const dir = path.join(root, 'synthetic');
  const layerBytes = await writeSyntheticCheckpoint(dir, {
    dModel: 512,
    dHidden: 1024,
    experts: 8,
    topK: 2,
    layers: 12,
    shardBytes: 64 << 20,
  });
  const files = await fs.readdir(dir);
  let onDisk = 0;
  for (const f of files) onDisk += (await fs.stat(path.join(dir, f))).size;
  expect(onDisk).toBeGreaterThan(12 * layerBytes);
  const { execFileSync } = await import('child_process');
  const out = execFileSync(process.execPath, [path.join(__dirname, 'pretrained', 'rss-child.js'), dir, '7', 'bfloat16'], {
    encoding: 'utf8',
  });
  const r = JSON.parse(out.trim().split('\n').pop()!);
  expect(r.bytesRead).toBe(layerBytes);
  expect(r.totalBytes).toBe(layerBytes);
  // The assembled bf16 weights plus the packed ones, plus a reused read buffer of one tensor: ~2.1x the layer.
  // (Not under a sanitizer: ASan's shadow memory and quarantine make RSS say nothing about the library.)
  if (process.env.MOE_SANITIZER) return;
  const grew = r.peak - r.before;
  expect(grew).toBeLessThan(2.5 * layerBytes + (48 << 20));
  expect(grew).toBeLessThan(onDisk / 4);
}, 60_000);
