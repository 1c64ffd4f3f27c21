/**
 * Models larger than memory (issue 32): fromPretrained with an ExpertCache, against the same layer holding its
 * experts, on the tiny checkpoints of test/pretrained/fixtures.ts. The C++ tests (native/tests/expert_cache_tests.cpp)
 * cover every weight dtype, damaged and truncated stores and concurrent forwards at the core.
 */
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ExpertCache, MoELayer, Tensor } from '../lib';
import { FIXTURES, Fixture, D } from './pretrained/fixtures';
import { expectRejection } from './helpers';

let root: string;
const made = new Map<string, Fixture>();
const NAMES = ['mixtral', 'qwen2-moe', 'deepseek-v3', 'gpt-oss'];

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'moe-cache-'));
  let seed = 41;
  for (const name of NAMES) made.set(name, await FIXTURES[name].make(path.join(root, name), seed++));
});

afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

const input = (tokens: number, seed: number) => Tensor.randn([tokens, D], { seed, std: 1 });
const bits = (t: Tensor) => Buffer.from((t.data as Float32Array).buffer);

describe.each(NAMES)('%s', (name) => {
  test.each(['float32', 'int4'] as const)(
    '%s: outputs bitwise equal to the resident layer at any budget, sync and async',
    async (weightDtype) => {
      const f = made.get(name)!;
      const layer = FIXTURES[name].layer;
      const resident = await MoELayer.fromPretrained(f.dir, { layer, weightDtype });
      for (const bytes of [1, 64 << 10, 1 << 30]) {
        const cache = new ExpertCache({ bytes, policy: bytes === 1 ? 'lru' : 'lfru' });
        const cached = await MoELayer.fromPretrained(f.dir, { layer, weightDtype, cache, storeDir: path.join(root, 'stores') });
        try {
          expect(cached.packedBytes).toBeLessThan(resident.packedBytes);
          for (const tokens of [1, 5, 33]) {
            const x = input(tokens, tokens);
            const want = resident.forwardSync(x).output;
            expect(bits(cached.forwardSync(x).output).equals(bits(want))).toBe(true);
            expect(bits((await cached.forward(x)).output).equals(bits(want))).toBe(true);
          }
          const s = cache.stats();
          expect(s.hits + s.misses).toBeGreaterThan(0);
          expect(s.readErrors).toBe(0);
          expect(s.layers).toHaveLength(1);
          expect(s.layers[0].label).toBe(`${name} layer ${layer}`);
          if (bytes === 1 << 30) expect(s.hitRate).toBeGreaterThan(0.5); // (each expert read once, then resident)
          if (bytes === 1) expect(s.evictions).toBeGreaterThan(0);
        } finally {
          cached.dispose();
          cache.dispose();
        }
      }
      resident.dispose();
    },
  );
});

test('the store is written once, reused while the checkpoint is unchanged, rebuilt when it changes', async () => {
  const f = made.get('mixtral')!;
  const storeDir = path.join(root, 'reuse');
  const load = async () => {
    const cache = new ExpertCache({ bytes: 1 << 20 });
    const layer = await MoELayer.fromPretrained(f.dir, { layer: FIXTURES.mixtral.layer, weightDtype: 'int8', cache, storeDir });
    const y = layer.forwardSync(input(3, 9)).output;
    layer.dispose();
    cache.dispose();
    return y;
  };
  const first = await load();
  const [file] = await fs.readdir(storeDir);
  expect(file).toMatch(/^mixtral\.layer1\.int8\.moestore$/);
  const written = (await fs.stat(path.join(storeDir, file))).mtimeMs;
  await new Promise((r) => setTimeout(r, 20));
  expect(bits(await load()).equals(bits(first))).toBe(true);
  expect((await fs.stat(path.join(storeDir, file))).mtimeMs).toBe(written); // reused
  const config = path.join(f.dir, 'config.json');
  const later = new Date(Date.now() + 5000);
  await fs.utimes(config, later, later); // (the source changed: its fingerprint is another)
  expect(bits(await load()).equals(bits(first))).toBe(true);
  expect((await fs.stat(path.join(storeDir, file))).mtimeMs).not.toBe(written); // rebuilt
});

test('stats count hits, misses, bytes and waits per layer; prefetch reads what the next forward uses', async () => {
  const f = made.get('qwen2-moe')!;
  const cache = new ExpertCache({ bytes: 1 << 30, ioThreads: 2 });
  const layer = await MoELayer.fromPretrained(f.dir, {
    layer: FIXTURES['qwen2-moe'].layer,
    weightDtype: 'int4',
    cache,
    storeDir: path.join(root, 'stats'),
  });
  try {
    const x = input(2, 3);
    const started = layer.prefetch(x);
    expect(started).toBeGreaterThan(0);
    layer.forwardSync(x);
    let s = cache.stats();
    expect(s.prefetches).toBe(started);
    expect(s.prefetchHits).toBeGreaterThan(0);
    expect(s.bytesRead).toBeGreaterThan(0);
    expect(s.residentBytes).toBe(s.layers[0].residentBytes);
    layer.forwardSync(x);
    s = cache.stats();
    expect(s.misses).toBe(s.reads - s.prefetches);
    cache.resetStats();
    expect(cache.stats().hits).toBe(0);
    cache.clear();
    expect(cache.stats().residentBytes).toBe(0);
    layer.forwardSync(x); // (read again after clear)
    expect(cache.stats().misses).toBeGreaterThan(0);
  } finally {
    layer.dispose();
    cache.dispose();
  }
});

test('bad options and calls a cached layer does not offer are clear errors', async () => {
  const f = made.get('mixtral')!;
  const layer = FIXTURES.mixtral.layer;
  expect(() => new ExpertCache({ bytes: 0 })).toThrow(RangeError);
  expect(() => new ExpertCache({} as never)).toThrow(/options.bytes/);
  expect(() => new ExpertCache({ bytes: 10, policy: 'fifo' as never })).toThrow(/options.policy/);
  await expectRejection(MoELayer.fromPretrained(f.dir, { layer, cache: {} as never }), 'TypeError', /options.cache to be an ExpertCache/);
  const disposed = new ExpertCache({ bytes: 10 });
  disposed.dispose();
  await expectRejection(MoELayer.fromPretrained(f.dir, { layer, cache: disposed }), 'TypeError', /disposed ExpertCache/);
  const cache = new ExpertCache({ bytes: 1 << 20 });
  const cached = await MoELayer.fromPretrained(f.dir, { layer, cache, weightDtype: 'float32', storeDir: path.join(root, 'errors') });
  try {
    const x = input(4, 1);
    const out = cached.forwardSync(x, { training: true });
    expect(() => cached.backward(x, out, Tensor.zeros([4, D]))).toThrow(/expert store/);
    // The weights read back from the store are the checkpoint's (float32: as they are).
    const resident = await MoELayer.fromPretrained(f.dir, { layer, weightDtype: 'float32' });
    const a = cached.exportWeights(),
      b = resident.exportWeights();
    expect(Buffer.from(a.w2.data.buffer).equals(Buffer.from(b.w2.data.buffer))).toBe(true);
    resident.dispose();
    // The cache outlives its handle while a layer uses it.
    cache.dispose();
    expect(cached.forwardSync(x).output.shape).toEqual([4, D]);
  } finally {
    cached.dispose();
  }
});

test('concurrent forwards of several layers on one small cache stay bitwise those of the resident layers', async () => {
  const names = ['mixtral', 'qwen2-moe', 'gpt-oss'];
  const cache = new ExpertCache({ bytes: 96 << 10, ioThreads: 3 });
  const pairs = await Promise.all(
    names.map(async (name) => {
      const f = made.get(name)!;
      const layer = FIXTURES[name].layer;
      return [
        await MoELayer.fromPretrained(f.dir, { layer, weightDtype: 'int8' }),
        await MoELayer.fromPretrained(f.dir, { layer, weightDtype: 'int8', cache, storeDir: path.join(root, 'concurrent') }),
      ] as const;
    }),
  );
  try {
    const x = input(6, 4);
    const want = pairs.map(([resident]) => bits(resident.forwardSync(x).output));
    for (let round = 0; round < 5; round++) {
      const got = await Promise.all(pairs.map(([, cached]) => cached.forward(x)));
      got.forEach((r, i) => expect(bits(r.output).equals(want[i])).toBe(true));
    }
    expect(
      cache
        .stats()
        .layers.map((l) => l.label)
        .sort(),
    ).toEqual(names.map((n) => `${n} layer ${FIXTURES[n].layer}`).sort());
  } finally {
    for (const [a, b] of pairs) {
      a.dispose();
      b.dispose();
    }
    cache.dispose();
  }
});
