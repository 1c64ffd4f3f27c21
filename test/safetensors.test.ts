/** The safetensors reader, writer and decoders: round trips, the format's rules, and every malformed file refused. */
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tensor, safetensors } from '../lib';
import { expectRejection } from './helpers';
import { decodeE4M3 } from './pretrained/fixtures';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'moe-safetensors-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** A file from a header object (JSON) and data bytes, with an optional header-length override. */
async function rawFile(name: string, header: unknown, data: Uint8Array, lengthOverride?: bigint): Promise<string> {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const file = path.join(dir, name);
  await fs.writeFile(file, Buffer.concat([prefix, json, Buffer.from(data)]));
  return file;
}

test('round trip of every dtype, metadata and the reference layout (8-byte aligned header, data back to back)', async () => {
  const file = path.join(dir, 'all.safetensors');
  const f32 = Tensor.randn([3, 5], { seed: 1 });
  const bf16 = Tensor.from(Uint16Array.from([0x3f80, 0xbf80, 0x4000, 0]), [2, 2], 'bfloat16');
  const f16 = Tensor.from(Uint16Array.from([0x3c00, 0xc000, 0x7bff]), [3], 'float16');
  const i8 = Tensor.from(Int8Array.from([-128, 0, 127]), [3]);
  const u8 = Tensor.from(Uint8Array.from([0, 255]), [2]);
  const i32 = Tensor.from(Int32Array.from([-5, 7, 2 ** 31 - 1]), [1, 3]);
  const fp8 = { dtype: 'F8_E4M3', shape: [2, 2], data: Uint8Array.from([0x38, 0xb8, 0x7e, 0x01]) };
  const empty = Tensor.zeros([0, 4]);
  await safetensors.save(file, { f32, bf16, f16, i8, u8, i32, fp8, empty }, { format: 'pt', note: 'é' });
  const bytes = await fs.readFile(file);
  const n = Number(bytes.readBigUInt64LE(0));
  expect(n % 8).toBe(0);
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  expect(header.__metadata__).toEqual({ format: 'pt', note: 'é' });
  expect(header.f32).toEqual({ dtype: 'F32', shape: [3, 5], data_offsets: [0, 60] });
  expect(header.bf16.data_offsets).toEqual([60, 68]);

  const r = await safetensors.open(file);
  try {
    expect(r.names()).toEqual(['f32', 'bf16', 'f16', 'i8', 'u8', 'i32', 'fp8', 'empty']);
    expect(r.metadata).toEqual({ format: 'pt', note: 'é' });
    expect(r.info('fp8')).toMatchObject({ dtype: 'F8_E4M3', shape: [2, 2], byteLength: 4 });
    for (const [name, t] of Object.entries({ f32, bf16, f16, i8, u8, i32, empty })) {
      const back = await r.tensor(name);
      expect(back.dtype).toBe(t.dtype);
      expect(back.shape).toEqual(t.shape);
      expect(Array.from(back.data)).toEqual(Array.from(t.data));
    }
    const codes = await r.tensor('fp8');
    expect(codes.dtype).toBe('uint8');
    expect(Array.from(safetensors.fp8ToFloat32(codes).data)).toEqual([1, -1, 448, 2 ** -9]);
    await expectRejection(r.tensor('nope'), 'RangeError', /all\.safetensors to hold a tensor 'nope'/);
  } finally {
    await r.close();
  }
  await expectRejection(r.tensor('f32'), 'TypeError', /an open file/);
});

test('FP8 E4M3 and E5M2: every code against an independent decode', () => {
  const codes = Tensor.from(
    Uint8Array.from({ length: 256 }, (_, i) => i),
    [256],
  );
  const e4m3 = safetensors.fp8ToFloat32(codes).data;
  for (let b = 0; b < 256; b++) {
    if ((b & 0x7f) === 0x7f) expect(Number.isNaN(e4m3[b])).toBe(true);
    else expect(e4m3[b]).toBe(decodeE4M3(b));
  }
  const e5m2 = safetensors.fp8ToFloat32(codes, 'F8_E5M2').data;
  expect(e5m2[0x3c]).toBe(1);
  expect(e5m2[0x7c]).toBe(Infinity);
  expect(e5m2[0x7b]).toBe(57344);
  expect(e5m2[0x01]).toBe(2 ** -16);
});

test('block-scaled FP8 and MXFP4 dequantization', () => {
  // 3 x 5 codes of 1.0 (0x38) with 2 x 2 blocks: scales [2, 3]
  const codes = Tensor.from(new Uint8Array(15).fill(0x38), [3, 5]);
  const scales = Tensor.from(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
  const w = safetensors.dequantizeBlockFp8(codes, scales, 2).data;
  expect(Array.from(w.subarray(0, 5))).toEqual([1, 1, 2, 2, 3]);
  expect(Array.from(w.subarray(10, 15))).toEqual([4, 4, 5, 5, 6]);
  expect(() => safetensors.dequantizeBlockFp8(codes, Tensor.zeros([1, 3]), 2)).toThrow(/scale_inv to have shape \[2, 3\]/);
  // one MXFP4 block: nibbles 0..15 twice, scale 2^1
  const blocks = Tensor.from(
    Uint8Array.from({ length: 16 }, (_, j) => (((2 * j + 1) % 16) << 4) | ((2 * j) % 16)),
    [1, 1, 16],
  );
  const m = safetensors.dequantizeMxfp4(blocks, Tensor.from(Uint8Array.from([128]), [1, 1])).data;
  const fp4 = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6];
  expect(Array.from(m)).toEqual(Array.from({ length: 32 }, (_, i) => 2 * fp4[i % 16]));
});

describe('malformed files are refused with the file named, never read past their end', () => {
  const entry = (dtype: string, shape: number[], b: number, e: number) => ({ dtype, shape, data_offsets: [b, e] });
  const cases: [string, () => Promise<string>, RegExp][] = [
    [
      'shorter than 8 bytes',
      async () => (await fs.writeFile(path.join(dir, 'tiny'), Buffer.from([1, 2])), path.join(dir, 'tiny')),
      /8-byte header length/,
    ],
    ['a header length past the end', () => rawFile('past.st', { a: entry('F32', [1], 0, 4) }, new Uint8Array(4), 1000n), /within the file/],
    ['a header over 100 MB', () => rawFile('huge.st', {}, new Uint8Array(0), 200_000_000n), /at most 100000000/],
    ['a header that is not JSON', () => rawFile('json.st', '{"a": ', new Uint8Array(0)), /UTF-8 JSON/],
    ['a header that is an array', () => rawFile('array.st', '[1, 2]', new Uint8Array(0)), /a JSON object/],
    [
      'a truncated data section',
      () => rawFile('trunc.st', { a: entry('F32', [4], 0, 16) }, new Uint8Array(10)),
      /cover its 10 bytes|within the file/,
    ],
    [
      'offsets past the data',
      () => rawFile('range.st', { a: entry('F32', [2], 0, 8), b: entry('F32', [2], 8, 16) }, new Uint8Array(12)),
      /cover its 12 bytes/,
    ],
    [
      'overlapping tensors',
      () => rawFile('overlap.st', { a: entry('F32', [2], 0, 8), b: entry('F32', [2], 4, 12) }, new Uint8Array(12)),
      /tensor 'b' to start at data offset 8/,
    ],
    [
      'a gap between tensors',
      () => rawFile('gap.st', { a: entry('F32', [1], 0, 4), b: entry('F32', [1], 8, 12) }, new Uint8Array(12)),
      /start at data offset 4/,
    ],
    [
      'a dtype / shape mismatch',
      () => rawFile('size.st', { a: entry('F32', [3], 0, 8) }, new Uint8Array(8)),
      /tensor 'a' to span 12 bytes/,
    ],
    ['an unknown dtype', () => rawFile('dtype.st', { a: entry('F128', [1], 0, 16) }, new Uint8Array(16)), /dtype to be one of F64/],
    ['a negative dimension', () => rawFile('shape.st', { a: entry('F32', [-1], 0, 0) }, new Uint8Array(0)), /non-negative integers/],
    ['offsets the wrong way round', () => rawFile('order.st', { a: entry('U8', [0], 4, 0) }, new Uint8Array(4)), /begin <= end/],
    [
      'an extra field',
      () => rawFile('extra.st', { a: { ...entry('U8', [1], 0, 1), x: 1 } }, new Uint8Array(1)),
      /only dtype, shape and data_offsets/,
    ],
    [
      'metadata that is not strings',
      () => rawFile('meta.st', { __metadata__: { a: 1 } }, new Uint8Array(0)),
      /__metadata__\.a to be a string/,
    ],
  ];
  test.each(cases)('%s', async (_, make, re) => {
    const file = await make();
    await expectRejection(safetensors.open(file), 'RangeError', re);
    await expectRejection(safetensors.open(file), 'RangeError', new RegExp(path.basename(file).replace('.', '\\.')));
  });

  test('a file truncated after it was opened: the read fails cleanly', async () => {
    const file = path.join(dir, 'shrink.safetensors');
    await safetensors.save(file, { a: Tensor.zeros([1024]) });
    const r = await safetensors.open(file);
    await fs.truncate(file, 100);
    await expectRejection(r.tensor('a'), 'RangeError', /truncated since it was opened/);
    await r.close();
  });
});

describe('sharded checkpoints', () => {
  test('tensors across shards through the index; a missing shard and an escaping name refused', async () => {
    const ck = path.join(dir, 'sharded');
    await fs.mkdir(ck);
    await safetensors.save(path.join(ck, 'a.safetensors'), { x: Tensor.from([1, 2], [2]) });
    await safetensors.save(path.join(ck, 'b.safetensors'), { y: Tensor.from([3], [1]) });
    const index = (map: Record<string, string>) =>
      fs.writeFile(path.join(ck, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
    await index({ x: 'a.safetensors', y: 'b.safetensors', z: 'c.safetensors', w: 'a.safetensors' });
    const c = await safetensors.Checkpoint.open(ck);
    try {
      expect(Array.from((await c.tensor('y')).data)).toEqual([3]);
      expect(Array.from((await c.tensor('x')).data)).toEqual([1, 2]);
      await expectRejection(c.tensor('z'), 'RangeError', /the shard .*c\.safetensors \(listed for tensor 'z'.*\) to exist/);
      await expectRejection(c.tensor('w'), 'RangeError', /a\.safetensors to hold tensor 'w'/);
      await expectRejection(c.tensor('v'), 'RangeError', /to hold a tensor 'v'/);
    } finally {
      await c.close();
    }
    // (escapes on any platform: a checkpoint made on Linux may be read on Windows)
    for (const escaping of [
      '../a.safetensors',
      '..\\a.safetensors',
      'C:a.safetensors',
      'C:\\a.safetensors',
      '\\\\server\\share\\a.safetensors',
      '/etc/a',
      '..',
      '.',
    ]) {
      await index({ x: escaping });
      await expectRejection(safetensors.Checkpoint.open(ck), 'RangeError', /a file name in the checkpoint directory/);
    }
    await fs.writeFile(path.join(ck, 'model.safetensors.index.json'), '{');
    await expectRejection(safetensors.Checkpoint.open(ck), 'RangeError', /index\.json to be JSON/);
    await expectRejection(safetensors.Checkpoint.open(path.join(dir, 'nothing')), 'RangeError', /nothing there/);
  });
});

test('the writer refuses what it cannot write', async () => {
  const file = path.join(dir, 'bad.safetensors');
  await expectRejection(
    safetensors.save(file, { a: { dtype: 'F32', shape: [2], data: new Float32Array(3) } }),
    'RangeError',
    /to hold 8 bytes/,
  );
  await expectRejection(
    safetensors.save(file, { a: { dtype: 'F7', shape: [1], data: new Uint8Array(1) } }),
    'RangeError',
    /safetensors dtype/,
  );
  await expectRejection(safetensors.save(file, { __metadata__: Tensor.zeros([1]) }), 'RangeError', /other than __metadata__/);
  await expectRejection(safetensors.save(file, { a: [1, 2] as never }), 'TypeError', /a Tensor or/);
  await expect(fs.stat(file)).rejects.toThrow();
});

test('mutated files (bytes flipped in the prefix and header, truncated, extended): a clean refusal or valid tensors, never a crash', async () => {
  const good = path.join(dir, 'good.safetensors');
  await safetensors.save(
    good,
    { a: Tensor.randn([4, 3], { seed: 1 }), b: Tensor.from(Int8Array.from([1, -2]), [2]), c: Tensor.zeros([2], 'bfloat16') },
    { k: 'v' },
  );
  const bytes = await fs.readFile(good);
  const headerEnd = 8 + Number(bytes.readBigUInt64LE(0));
  let state = 12345;
  const rand = (n: number) => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state % n;
  };
  const file = path.join(dir, 'mutant.safetensors');
  let refused = 0;
  for (let i = 0; i < 300; i++) {
    let m = Buffer.from(bytes);
    const kind = rand(4);
    if (kind === 0) m[rand(8)] = rand(256);
    else if (kind === 1) for (let j = 0; j < 1 + rand(3); j++) m[8 + rand(headerEnd - 8)] = rand(128);
    else if (kind === 2) m = m.subarray(0, rand(m.length));
    else m = Buffer.concat([m, Buffer.alloc(1 + rand(16))]);
    await fs.writeFile(file, m);
    try {
      const r = await safetensors.open(file);
      try {
        for (const n of r.names()) {
          const info = r.info(n);
          if (['F32', 'F16', 'BF16', 'I32', 'I8', 'U8', 'BOOL', 'F8_E4M3', 'F8_E5M2'].includes(info.dtype)) {
            const t = await r.tensor(n);
            expect(t.shape).toEqual(info.shape);
          }
        }
      } finally {
        await r.close();
      }
    } catch (e) {
      const err = e as Error;
      expect(['RangeError', 'TypeError']).toContain(err.name);
      expect(err.message).toMatch(/^moe-kernels: expected [\s\S]+ but got [\s\S]*$/);
      refused++;
    }
  }
  expect(refused).toBeGreaterThan(100);
});
