/**
 * The second hostile probe (issue 34): each finding as a test. What crashed or hung the process runs in a child
 * process of its own (the built package, dist/), so that a regression fails this test instead of killing Jest.
 */
import { spawnSync } from 'child_process';
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  MoELayer,
  Tensor,
  activeWeightBytes,
  clipGradNorm,
  layerFlops,
  losses,
  measureFmaPeak,
  memoryLimit,
  pretrained,
  safetensors,
  setMemoryLimit,
} from '../lib';
import { rankTop } from '../lib/gating/common';
import { FIXTURES } from './pretrained/fixtures';
import { expectError, expectRejection } from './helpers';

const root = path.resolve(__dirname, '..');

/** Runs `script` (CommonJS, `moe` bound to the package) in a child process; its stdout's last line as JSON. */
function inChild(script: string, timeoutMs = 60_000): { status: number | null; signal: string | null; out: unknown; stderr: string } {
  const r = spawnSync(
    process.execPath,
    [
      '-e',
      `const moe = require(${JSON.stringify(root)});\n(async () => {\n${script}\n})().then(() => process.exit(0), (e) => { console.error(e); process.exit(3); });`,
    ],
    {
      encoding: 'utf8',
      timeout: timeoutMs,
    },
  );
  const lines = (r.stdout || '').trim().split('\n');
  let out: unknown;
  try {
    out = JSON.parse(lines[lines.length - 1]);
  } catch {
    out = undefined;
  }
  return { status: r.status, signal: r.signal, out, stderr: (r.stderr || '').slice(-2000) };
}

/** A temporary directory for the tests of one describe block, removed after them. */
function scratchDir(prefix: string): () => string {
  let dir = '';
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });
  return () => dir;
}

/** Writes a safetensors file: the 8-byte length of `header`, the header, then `dataBytes` zero bytes. */
async function writeSafetensors(file: string, header: string, dataBytes: number): Promise<string> {
  const json = Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  await fs.writeFile(file, Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
  return file;
}

/** A child's report of one call: { name, message } of what it threw, or { ok: true }. */
const REPORT = `const report = async (f) => { try { await f(); return { ok: true }; } catch (e) { return { name: e.name, message: e.message }; } };`;

describe('crash: results over 4 GiB (SIGSEGV in the result pool once)', () => {
  it('routerLogits of 65536 x 32768 and a forward with 2^22 experts: RangeErrors before computing, in a child', () => {
    const r = inChild(`${REPORT}
      const { kernels, Tensor, MoELayer } = moe;
      const a = await report(() => kernels.routerLogits(Tensor.randn([65536, 1]), Tensor.randn([32768, 1])));
      const layer = MoELayer.random({ dModel: 1, dHidden: 1, numExperts: 2 ** 22, topK: 1, activation: 'relu' });
      const t = Date.now();
      const b = await report(() => layer.forwardSync(Tensor.randn([257, 1])));
      const c = await report(() => layer.forward(Tensor.randn([257, 1])));
      console.log(JSON.stringify({ a, b, c, ms: Date.now() - t }));`);
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    const out = r.out as Record<string, { name: string; message: string }> & { ms: number };
    for (const key of ['a', 'b', 'c']) {
      expect(out[key].name).toBe('RangeError');
      expect(out[key].message).toMatch(/^moe-kernels: expected a result of at most 4294967296 bytes \(4 GiB\) but got \d+ elements/);
    }
    expect(out.ms).toBeLessThan(2000); // refused before the work, not after it
  });
});

describe('silent wrong results', () => {
  const config = { dModel: 12, dHidden: 20, numExperts: 5, topK: 2 };
  const x0 = () => Tensor.randn([9, 12], { seed: 3 });
  const g = Tensor.randn([9, 12], { seed: 4 });
  const same = (a: Tensor, b: Tensor) =>
    Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(
      Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength),
    );

  it('backwardAsync: writing to x before it settles changes nothing (the router gradient once differed)', async () => {
    for (const router of [undefined, { kind: 'noisyTopK' as const }]) {
      const layer = MoELayer.random({ ...config, ...(router ? { router } : {}) }, { seed: 1 });
      const x = x0();
      const r = layer.forwardSync(x);
      const want = layer.backward(x, r, g, { fresh: true });
      const pending = layer.backwardAsync(x, r, g);
      (x.data as Float32Array).fill(7);
      const got = await pending;
      for (const key of ['dx', 'router', 'w1', 'w2'] as const) expect([key, same(got[key]!, want[key]!)]).toEqual([key, true]);
      layer.dispose();
    }
  });

  it('a refilled x buffer between forward and backward is refused (once gradients of neither batch)', () => {
    const layer = MoELayer.random(config, { seed: 1 });
    const x = x0();
    const r = layer.forwardSync(x);
    (x.data as Float32Array).set(Tensor.randn([9, 12], { seed: 99 }).data as Float32Array);
    expectError(() => layer.backward(x, r, g), 'RangeError', /x to hold the values its forward read but got an x whose values changed/);
    expect(r.routing.routerInput).not.toBe(x.data); // what the router read, kept
    layer.dispose();
  });

  it('step while a backwardAsync (or forward) is in flight is refused; after it settles, it runs', async () => {
    const layer = MoELayer.random(config, { seed: 1 });
    const x = x0();
    const r = layer.forwardSync(x);
    const grads = layer.backward(x, r, g, { fresh: true }); // (the async one's default destination: the layer's own)
    const pending = layer.backwardAsync(x, r, g);
    expectError(
      () => layer.step(grads, { kind: 'sgd', lr: 0.1 }),
      'RangeError',
      /no forward or backwardAsync of this layer in flight during step.* but got 1 in flight/,
    );
    const forward = layer.forward(x);
    expectError(() => layer.step(grads, { kind: 'sgd', lr: 0.1 }), 'RangeError', /but got 2 in flight/);
    const got = await pending;
    await forward;
    expect(same(got.dx, grads.dx)).toBe(true); // the pre-step weights, every time
    layer.step(grads, { kind: 'sgd', lr: 0.1 });
    layer.dispose();
  });

  it("backward refuses another layer's result, a reordered routing, and into: {}", () => {
    const a = MoELayer.random(config, { seed: 1 });
    const b = MoELayer.random(config, { seed: 1 });
    const x = x0();
    const ra = a.forwardSync(x);
    expectError(() => b.backward(x, ra, g), 'RangeError', /result to be the result of this layer's forward/);
    expectError(() => a.backward(x, { ...ra }, g), 'RangeError', /result to be the result of this layer's forward/);
    const experts = ra.routing.experts;
    const saved = Int32Array.from(experts);
    [experts[0], experts[1]] = [experts[1], experts[0]];
    expectError(() => a.backward(x, ra, g), 'RangeError', /result.routing as its forward returned it/);
    experts.set(saved);
    const grads = a.backward(x, ra, g);
    expectError(
      () => a.backward(x, ra, g, { into: {} as never }),
      'TypeError',
      /options.into to be the gradients of an earlier backward of this layer/,
    );
    expectError(() => b.backward(x, b.forwardSync(x), g, { into: grads }), 'TypeError', /options.into to be the gradients/);
    expect(a.backward(x, ra, g, { into: { ...grads } }).w1.data).toBe(grads.w1.data); // a copy of them is them
    a.dispose();
    b.dispose();
  });

  it('clipGradNorm refuses NaN and Infinity (once NaN returned / every gradient zeroed), leaving the gradients as they were', () => {
    const layer = MoELayer.random(config, { seed: 1 });
    const x = x0();
    const grads = layer.backward(x, layer.forwardSync(x), g);
    for (const bad of [NaN, Infinity]) {
      (grads.w2.data as Float32Array)[3] = bad;
      const before = Float32Array.from(grads.w1.data as Float32Array);
      expectError(
        () => clipGradNorm(grads, 1e-3),
        'RangeError',
        new RegExp(`finite gradients to clip \\(grads.w2\\[3\\]\\) but got ${bad}`),
      );
      expect(Buffer.from((grads.w1.data as Float32Array).buffer).equals(Buffer.from(before.buffer))).toBe(true);
    }
    expectError(() => clipGradNorm({ router: 5 } as never, 1), 'TypeError', /grads.router to be a Tensor/);
    layer.dispose();
  });

  it('forward with out: { data: number[] } is refused (it once succeeded without writing out)', () => {
    const layer = MoELayer.random(config, { seed: 1 });
    const out = { dtype: 'float32', shape: [9, 12], data: new Array(108).fill(0) };
    expectError(() => layer.forwardSync(x0(), { out: out as never }), 'TypeError', /options.out.data to be a Float32Array/);
    const typed = { dtype: 'float32', shape: [9, 12], data: new Float32Array(108) };
    expect(layer.forwardSync(x0(), { out: typed as never }).output.data).toBe(typed.data);
    layer.dispose();
  });
});

describe('lost data: safetensors files', () => {
  const scratch = scratchDir('moe-probe-');

  it('two concurrent saves to one file: both resolve and the file is one of them, whole (20 of 20 once unparseable)', async () => {
    const f = path.join(scratch(), 'race.safetensors');
    const A = { a: Tensor.randn([64, 64], { seed: 1 }) };
    const B = { b: Tensor.randn([32, 8], { seed: 2 }) };
    for (let i = 0; i < 10; i++) {
      await Promise.all([safetensors.save(f, A), safetensors.save(f, B)]);
      const file = await safetensors.open(f);
      expect([['a'], ['b']]).toContainEqual(file.names());
      await file.tensor(file.names()[0]);
      await file.close();
    }
    expect((await fs.readdir(scratch())).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('a tensor named __proto__ is saved and read back; duplicate names and a duplicate __metadata__ are refused', async () => {
    const f = path.join(scratch(), 'proto.safetensors');
    const t = Tensor.randn([2, 3], { seed: 1 });
    await safetensors.save(f, { ['__proto__']: t, x: t }, { ['__proto__']: 'm' });
    const file = await safetensors.open(f);
    expect(file.names().sort()).toEqual(['__proto__', 'x']);
    expect(Array.from((await file.tensor('__proto__')).data)).toEqual(Array.from(t.data));
    expect(file.metadata['__proto__']).toBe('m');
    await file.close();
    const write = (name: string, header: string, data: number) => writeSafetensors(path.join(scratch(), name), header, data);
    const dup = await write(
      'dup.safetensors',
      '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}',
      4,
    );
    await expectRejection(safetensors.open(dup), 'RangeError', /header to name each key of an object once but got 't' twice/);
    const meta = await write('meta.safetensors', '{"__metadata__":{},"__metadata__":{"a":"b"}}', 0);
    await expectRejection(safetensors.open(meta), 'RangeError', /'__metadata__' twice/);
    const deep = await write('deep.safetensors', '{"t":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}', 0);
    await expectRejection(safetensors.open(deep), 'RangeError', /header to nest objects and arrays at most 128 deep/);
  });
});

describe('a checkpoint that can take the process down', () => {
  const scratch = scratchDir('moe-probe-ckpt-');
  const mixtral = async (name: string, edit: (config: Record<string, unknown>) => void) => {
    const target = path.join(scratch(), name);
    await FIXTURES.mixtral.make(target, 5);
    const file = path.join(target, 'config.json');
    const config = JSON.parse(await fs.readFile(file, 'utf8'));
    edit(config);
    await fs.writeFile(file, JSON.stringify(config));
    return target;
  };

  it('num_hidden_layers 1e9 (once V8 out of memory) and num_local_experts 1e9 / 2^53 / 1e300 (once 40 s at 4 GB): refused at once', async () => {
    const layers = await mixtral('layers', (c) => (c.num_hidden_layers = 1e9));
    let t = Date.now();
    await expectRejection(
      pretrained.inspect(layers),
      'RangeError',
      /"num_hidden_layers" to be an integer in \[1, 65536\] but got 1000000000/,
    );
    await expectRejection(MoELayer.fromPretrained(layers), 'RangeError', /"num_hidden_layers"/);
    expect(Date.now() - t).toBeLessThan(2000);
    for (const experts of [1e9, 2 ** 53, 1e300, 9]) {
      const d = await mixtral(`experts-${experts}`, (c) => (c.num_local_experts = experts));
      t = Date.now();
      await expectRejection(MoELayer.fromPretrained(d), 'RangeError', /num_local_experts|numExperts|router|experts\.8/);
      expect(Date.now() - t).toBeLessThan(2000);
    }
  });

  it('num_experts_per_tok past the experts is refused before any tensor is read', async () => {
    const d = await mixtral('topk', (c) => (c.num_experts_per_tok = 9));
    let progress = 0;
    await expectRejection(
      MoELayer.fromPretrained(d, { onProgress: () => progress++ }),
      'RangeError',
      /config.topK \(numExperts = 8\) to be an integer in \[1, 8\] but got 9/,
    );
    expect(progress).toBe(0);
  });

  it('a model.safetensors or a config.json that links out of the directory is refused', async () => {
    const d = await mixtral('link', () => undefined);
    const shard = path.join(d, 'model-00002-of-00002.safetensors');
    const outside = path.join(scratch(), 'outside.safetensors');
    await fs.rename(shard, outside);
    await fs.symlink(outside, shard);
    await expectRejection(
      MoELayer.fromPretrained(d, { layer: 1 }),
      'RangeError',
      /model-00002-of-00002.safetensors .* to be a file inside .* but got a link to/,
    );
    await fs.rm(shard);
    await fs.rename(outside, path.join(d, 'weights.bin'));
    await fs.symlink('weights.bin', shard); // a link inside it is fine
    (await MoELayer.fromPretrained(d, { layer: 1, weightDtype: 'float32' })).dispose();
    const config = path.join(d, 'config.json');
    await fs.rename(config, path.join(scratch(), 'config.json'));
    await fs.symlink(path.join(scratch(), 'config.json'), config);
    await expectRejection(pretrained.inspect(d), 'RangeError', /config.json .* to be a file inside .* but got a link to/);
  });

  it('a FIFO as safetensors file or shard is refused at once (once it never settled and held the process), in a child', async () => {
    const fifo = path.join(scratch(), 'pipe.safetensors');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const d = await mixtral('fifo', () => undefined);
    await fs.rm(path.join(d, 'model-00002-of-00002.safetensors'));
    expect(spawnSync('mkfifo', [path.join(d, 'model-00002-of-00002.safetensors')]).status).toBe(0);
    const r = inChild(
      `${REPORT}
      const a = await report(() => moe.safetensors.open(${JSON.stringify(fifo)}));
      const b = await report(() => moe.MoELayer.fromPretrained(${JSON.stringify(d)}, { layer: 1, signal: AbortSignal.timeout(5000) }));
      console.log(JSON.stringify({ a, b }));`,
      20_000,
    );
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    const out = r.out as Record<string, { name: string; message: string }>;
    for (const key of ['a', 'b']) {
      expect(out[key].name).toBe('RangeError');
      expect(out[key].message).toMatch(/to be a regular file .* but got a FIFO \(named pipe\)/);
    }
  });
});

describe('resources', () => {
  it("a backward's and an AdamW step's memory is told to V8 (once 3.4x unreported)", async () => {
    const config = { dModel: 256, dHidden: 512, numExperts: 8, topK: 2 };
    const weightBytes = 3 * 8 * 512 * 256 * 4;
    const layer = MoELayer.random(config, { seed: 1 });
    const handle = (layer as unknown as { handle: { memoryBytes(): { bytes: number; reported: number } } }).handle;
    const told = () => handle.memoryBytes();
    expect(told().reported).toBe(told().bytes);
    const packed = layer.memoryBytes;
    const x = Tensor.randn([64, 256], { seed: 2 });
    const grads = layer.backward(x, layer.forwardSync(x), Tensor.randn([64, 256], { seed: 3 }));
    expect(told().reported).toBe(told().bytes);
    expect(told().bytes - packed).toBeGreaterThan(weightBytes); // the transposed panels and the workspace
    const afterBackward = layer.memoryBytes;
    layer.step(grads, { kind: 'adamw', lr: 1e-3 });
    expect(told().reported).toBe(told().bytes);
    expect(layer.memoryBytes - afterBackward).toBeGreaterThanOrEqual(2 * weightBytes); // the two moments
    await layer.backwardAsync(x, layer.forwardSync(x), Tensor.randn([64, 256], { seed: 4 }));
    expect(told().reported).toBe(told().bytes);
    layer.dispose();
  });
});

describe('requests inside the shape limits that would take the machine (once 12-48 GiB, or minutes)', () => {
  const quickly = (fn: () => unknown, re: RegExp) => {
    const t = Date.now();
    expectError(fn, 'RangeError', re);
    expect(Date.now() - t).toBeLessThan(1000);
  };
  afterEach(() => setMemoryLimit(undefined));

  it('layers and tensors past the memory limit are refused at once; the limit can be lowered and raised', () => {
    const limited =
      /to need at most .* \(the memory limit: half of this machine's .*; raise it with setMemoryLimit\(bytes\) or MOE_KERNELS_MEMORY_LIMIT\) but got an estimate of/;
    if (os.totalmem() < 2 ** 37) {
      quickly(() => MoELayer.random({ dModel: 32768, dHidden: 65536, numExperts: 2, topK: 1 }), limited);
      quickly(() => MoELayer.random({ dModel: 8, dHidden: 8, numExperts: 2 ** 24, topK: 1 }), limited);
      quickly(() => Tensor.randn([2 ** 30, 4]), limited);
    }
    setMemoryLimit(2 ** 20);
    expect(memoryLimit()).toBe(2 ** 20);
    quickly(() => Tensor.zeros([1024, 1024]), /a tensor of shape \[1024, 1024\] to need at most 1.0 MiB \(the memory limit: as set/);
    quickly(() => MoELayer.random({ dModel: 64, dHidden: 256, numExperts: 8, topK: 2 }), /MoELayer.random's float32 weights/);
    setMemoryLimit(Infinity);
    expect(Tensor.zeros([1024, 1024]).data.length).toBe(2 ** 20);
    expectError(() => setMemoryLimit(-1), 'RangeError', /bytes to be > 0/);
  });

  it('soft routing over 65,536 experts: a forward in well under a second (once 15 s a token: top-k by k scans)', () => {
    const layer = MoELayer.random({ dModel: 4, dHidden: 4, numExperts: 65536, router: { kind: 'soft' } }, { seed: 1 });
    const t = Date.now();
    const r = layer.forwardSync(Tensor.randn([2, 4], { seed: 2 }));
    expect(Date.now() - t).toBeLessThan(5000);
    expect(r.routing.tokensPerExpert.every((n) => n === 2)).toBe(true);
    layer.dispose();
  });

  it('rankTop by sorting picks what the scans pick: ties, tie-break, masks, strides', () => {
    let seed = 1;
    const next = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let trial = 0; trial < 200; trial++) {
      const count = 65 + Math.floor(next() * 200);
      const stride = 1 + Math.floor(next() * 3);
      const values = Float64Array.from({ length: count * stride + 3 }, () => Math.floor(next() * 6) - 3);
      const k = 9 + Math.floor(next() * count);
      const tie = next() < 0.5 ? 'lower' : 'higher';
      const mask = next() < 0.5 ? undefined : (i: number) => i % 3 !== 1;
      const scans = rankTop(values, 3, count, 1, tie, mask, stride); // k <= 8: the scans
      const picked: number[] = [];
      // the scans' answer for k, built pick by pick with the picked masked out
      for (let j = 0; j < Math.min(k, count); j++) {
        const next1 = rankTop(values, 3, count, 1, tie, (i) => (!mask || mask(i)) && !picked.includes(i), stride);
        if (next1.length === 0) break;
        picked.push(next1[0]);
      }
      expect(scans[0]).toBe(picked[0]);
      expect(rankTop(values, 3, count, k, tie, mask, stride)).toEqual(picked);
    }
  });
});

describe('unclear errors, now in the format', () => {
  const scratch = scratchDir('moe-probe-errors-');

  it('paths: a directory, nothing there, a NUL byte (safetensors.open, save, fromPretrained, inspect)', async () => {
    const t = { a: Tensor.zeros([2]) };
    await expectRejection(safetensors.open(scratch()), 'RangeError', /to be a regular file \(a safetensors file\) but got a directory/);
    await expectRejection(
      safetensors.open(path.join(scratch(), 'none')),
      'RangeError',
      /to be a readable file \(a safetensors file\) but got no such file or directory \(ENOENT\)/,
    );
    await expectRejection(safetensors.open('a\0b'), 'RangeError', /path to be a path without NUL bytes/);
    await expectRejection(
      safetensors.save(scratch(), t),
      'RangeError',
      /to be a path a file can be renamed to but got a directory \(EISDIR\)/,
    );
    await expectRejection(
      safetensors.save(path.join(scratch(), 'no', 'such', 'f'), t),
      'RangeError',
      /no such file or directory \(ENOENT\)/,
    );
    await expectRejection(safetensors.save('x\0y', t), 'RangeError', /file to be a path without NUL bytes/);
    await expectRejection(
      MoELayer.fromPretrained('m\0'),
      'RangeError',
      /a checkpoint directory or GGUF file to be a path without NUL bytes/,
    );
    await expectRejection(pretrained.inspect(scratch()), 'RangeError', /config.json \(the model's config\) but got no such file/);
    expect((await fs.readdir(scratch())).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('a tensor over 4 GiB (once "Invalid typed array length: undefined"), and close() during a read', async () => {
    const f = path.join(scratch(), 'big.safetensors');
    const n = 2 ** 30 + 16;
    const header = JSON.stringify({ t: { dtype: 'F32', shape: [n], data_offsets: [0, n * 4] } });
    await writeSafetensors(f, header, 0);
    await fs.truncate(f, 8 + Buffer.byteLength(header) + n * 4); // sparse: no disk used
    const file = await safetensors.open(f);
    await expectRejection(
      file.tensor('t'),
      'RangeError',
      /to be at most 4294967296 bytes to read as one array \(read it in parts with range/,
    );
    expect((await file.range('t', 0, 64)).length).toBe(64);
    const reading = file.range('t', 0, 256 * 2 ** 20); // four chunks
    await file.close();
    await expectRejection(reading, 'TypeError', /to stay open while tensor 't' was read but got close\(\) during the read/);
    await fs.rm(f);
  });

  it('decoders given plain { dtype, shape, data } objects, slotOutputs without a routing, flops of bad shapes, loss alpha -1, measureFmaPeak NaN', () => {
    const codes = { dtype: 'uint8', shape: [2, 2], data: new Uint8Array([0x38, 0x40, 0, 0xb8]) };
    expect(Array.from(safetensors.fp8ToFloat32(codes as never).data)).toEqual([1, 2, 0, -1]);
    const scale = { dtype: 'float32', shape: [1, 1], data: new Float32Array([2]) };
    expect(Array.from(safetensors.dequantizeBlockFp8(codes as never, scale as never).data)).toEqual([2, 4, 0, -2]);
    expectError(() => safetensors.dequantizeBlockFp8(codes as never, { shape: [1, 1] } as never), 'TypeError', /scaleInv to be a Tensor/);
    const layer = MoELayer.random({ dModel: 4, dHidden: 4, numExperts: 2, topK: 1 });
    expectError(() => layer.slotOutputs(Tensor.zeros([1, 4]), undefined as never), 'TypeError', /routing to be a forward's routing/);
    layer.dispose();
    expectError(() => layerFlops(null as never, 1), 'TypeError', /config to be an object but got null/);
    for (const bad of [-1, NaN, Infinity]) {
      expectError(() => layerFlops({ dModel: bad, dHidden: 4, numExperts: 2, topK: 1 }, 1), 'RangeError', /config.dModel to be an integer/);
      expectError(() => activeWeightBytes({ dModel: 4, dHidden: bad }, 1), 'RangeError', /config.dHidden to be an integer/);
      expectError(() => activeWeightBytes({ dModel: 4, dHidden: 4 }, bad), 'RangeError', /activeExperts to be a finite number/);
    }
    const probs = { data: new Float64Array([0.5, 0.5]), shape: [1, 2] };
    expectError(
      () => losses.switchLoss(probs, new Int32Array([0]), { alpha: -1 }),
      'RangeError',
      /options.alpha to be a finite number >= 0 but got -1/,
    );
    expectError(() => measureFmaPeak(1, NaN), 'RangeError', /seconds to be in \[0.01, 10\] but got NaN/);
    expectError(() => measureFmaPeak(1, Infinity), 'RangeError', /seconds to be in \[0.01, 10\] but got Infinity/);
  });
});
