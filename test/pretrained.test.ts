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
import { relativeError } from './helpers';

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
