/** The GGUF reader and writer: round trips, llama.cpp's layout, @huggingface/gguf reading our files, malformed files. */
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tensor, gguf, quant } from '../lib';
import { expectRejection } from './helpers';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'moe-gguf-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** Little-endian GGUF pieces for hand-made (malformed) files. */
const u32 = (n: number) => Buffer.from(new Uint32Array([n]).buffer);
const u64 = (n: number | bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};
const str = (s: string) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);
const header = (tensors: number, kvs: number) => Buffer.concat([Buffer.from('GGUF'), u32(3), u64(tensors), u64(kvs)]);
const info = (name: string, ne: number[], type: number, offset: number) =>
  Buffer.concat([str(name), u32(ne.length), ...ne.map(u64), u32(type), u64(offset)]);
async function raw(name: string, ...parts: Buffer[]): Promise<string> {
  const file = path.join(dir, name);
  await fs.writeFile(file, Buffer.concat(parts));
  return file;
}
const pad = (b: Buffer, to = 32) => Buffer.concat([b, Buffer.alloc((to - (b.length % to)) % to)]);

test('round trip: float tensors, Q8_0 / Q4_0 from QuantizedTensors, raw K-quant blocks, typed metadata', async () => {
  const file = path.join(dir, 'all.gguf');
  const f32 = Tensor.randn([3, 64], { seed: 1 });
  const bf16 = Tensor.from(Uint16Array.from([0x3f80, 0xbf80, 0x4000, 0]), [2, 2], 'bfloat16');
  const f16 = Tensor.from(Uint16Array.from([0x3c00, 0xc000, 0x7bff]), [3], 'float16');
  const q8 = quant.quantize(Tensor.randn([2, 64], { seed: 2 }), { dtype: 'int8' });
  const q4 = quant.quantize(Tensor.randn([2, 3, 64], { seed: 3 }), { dtype: 'int4' });
  const k4 = { type: 'Q4_K', shape: [2, 256], data: new Uint8Array(2 * 144).map((_, i) => (i * 37) & 0xff) };
  await gguf.save(file, {
    metadata: {
      'general.architecture': 'qwen3moe',
      'qwen3moe.expert_count': 8,
      'qwen3moe.expert_weights_scale': { type: 'f32', value: 2.5 },
      'general.big': 2n ** 60n,
      'general.negative': -3,
      'general.flag': true,
      'general.list': [1, 2, 3],
      'general.names': ['a', 'bé'],
    },
    tensors: { f32, bf16, f16, q8, q4, k4 },
  });
  const r = await gguf.open(file);
  try {
    expect(r.version).toBe(3);
    expect(r.alignment).toBe(32);
    expect(r.names()).toEqual(['f32', 'bf16', 'f16', 'q8', 'q4', 'k4']);
    expect(r.metadata.get('qwen3moe.expert_count')).toEqual({ type: 'u32', value: 8 });
    expect(r.metadata.get('qwen3moe.expert_weights_scale')).toEqual({ type: 'f32', value: 2.5 });
    expect(r.metadata.get('general.big')).toEqual({ type: 'u64', value: 2n ** 60n });
    expect(r.metadata.get('general.negative')).toEqual({ type: 'i32', value: -3 });
    expect(r.metadata.get('general.list')).toEqual({ type: 'array', itemType: 'u32', value: [1, 2, 3] });
    expect(r.get('general.names')).toEqual(['a', 'bé']);
    expect(r.get('general.flag')).toBe(true);
    for (const name of r.names()) expect((r.info(name).offset - r.dataOffset) % 32).toBe(0);
    expect(r.info('q4')).toMatchObject({ shape: [2, 3, 64], byteLength: 12 * 18 });
    expect(r.info('q4').type.name).toBe('Q4_0');
    expect(Array.from((await gguf.readFloat32(r, 'f32')).data)).toEqual(Array.from(f32.data));
    expect(Array.from((await gguf.readFloat32(r, 'bf16')).data)).toEqual([1, -1, 2, 0]);
    expect(Array.from((await gguf.readFloat32(r, 'f16')).data)).toEqual([1, -2, 65504]);
    // Q8_0 / Q4_0 blocks are the QuantizedTensor's codes and scales, so they widen to the same values
    expect(Array.from((await gguf.readFloat32(r, 'q8')).data)).toEqual(Array.from(quant.dequantize(q8).data));
    expect(Array.from((await gguf.readFloat32(r, 'q4')).data)).toEqual(Array.from(quant.dequantize(q4).data));
    expect(Buffer.from(await r.range('k4', 0, 288)).equals(Buffer.from(k4.data))).toBe(true);
    await expectRejection(r.range('k4', 200, 100), 'RangeError', /a byte range within tensor 'k4' \(288 bytes\)/);
  } finally {
    await r.close();
  }
  await expectRejection(r.range('k4', 0, 1), 'TypeError', /a closed GgufFile/);
});

test('@huggingface/gguf reads what gguf.save writes (names, shapes, types, offsets, metadata)', async () => {
  const file = path.join(dir, 'hf.gguf');
  await gguf.save(file, {
    metadata: { 'general.architecture': 'llama', 'llama.expert_count': 4, 'llama.rope.freq_base': { type: 'f32', value: 1e6 } },
    tensors: {
      'blk.0.ffn_gate_inp.weight': Tensor.randn([4, 32], { seed: 4 }),
      'blk.0.x': quant.quantize(Tensor.randn([3, 64], { seed: 5 }), { dtype: 'int4' }),
    },
  });
  const { gguf: parse } = await import('@huggingface/gguf');
  const hf = await parse(file, { allowLocalFile: true });
  const ours = await gguf.open(file);
  try {
    const m = hf.metadata as Record<string, unknown>;
    expect(m['llama.expert_count']).toBe(4);
    expect(m['llama.rope.freq_base']).toBe(1e6);
    expect(Number(hf.tensorDataOffset)).toBe(ours.dataOffset);
    for (const t of hf.tensorInfos) {
      const o = ours.info(t.name);
      expect(t.shape.map(Number).reverse()).toEqual(o.shape);
      expect(t.dtype).toBe(o.type.id);
      expect(Number(t.offset) + ours.dataOffset).toBe(o.offset);
    }
  } finally {
    await ours.close();
  }
});

test('malformed files are RangeErrors naming the file (and the tensor), never a hang or an allocation', async () => {
  const cases: [string, Buffer[], RegExp][] = [
    ['empty', [], /empty\.gguf to be a GGUF file but got 0 bytes/],
    ['magic', [Buffer.from('GGUFX'.slice(1)), Buffer.alloc(20)], /to begin with the GGUF magic/],
    ['v1', [Buffer.from('GGUF'), u32(1), u64(0), u64(0)], /GGUF version 2 or 3 but got version 1/],
    ['bigendian', [Buffer.from('GGUF'), Buffer.from([0, 0, 0, 3]), u64(0), u64(0)], /little-endian GGUF file but got a big-endian one/],
    ['truncated', [Buffer.from('GGUF'), u32(3), u64(1)], /truncated\.gguf to hold the key\/value count at byte 16 .* its end at byte 16/],
    [
      'counts',
      [header(2 ** 40, 0)],
      /to hold its 0 key\/values and 1099511627776 tensor infos \(at least 26388279066624 bytes\) but got 0 bytes/,
    ],
    ['keylen', [header(0, 1), u64(2 ** 40), Buffer.alloc(16)], /key 0 to be at most 65535 bytes but got 1099511627776 bytes/],
    ['array', [header(0, 1), str('a'), u32(9), u32(4), u64(2 ** 40)], /metadata 'a' \(1099511627776 items\) to fit in the 0 bytes left/],
    ['valuetype', [header(0, 1), str('a'), u32(13), u32(0)], /metadata 'a' to have a GGUF value type \(0-12\) but got 13/],
    ['bool', [header(0, 1), str('a'), u32(7), Buffer.from([2])], /metadata 'a' to be a bool \(0 or 1\) but got 2/],
    ['dupkey', [header(0, 2), str('a'), u32(4), u32(1), str('a'), u32(4), u32(1)], /key 'a' to appear once/],
    ['alignment', [header(0, 1), str('general.alignment'), u32(4), u32(48)], /general\.alignment to be a u32 power of two but got u32 48/],
    ['dims', [header(1, 0), info('w', [1, 1, 1, 1, 1], 0, 0)], /tensor 'w' to have 1 to 4 dimensions but got 5/],
    ['type', [header(1, 0), info('w', [4], 4, 0)], /tensor 'w' to have a ggml type but got type 4/],
    ['block', [header(1, 0), info('w', [100, 2], 12, 0)], /tensor 'w' rows \(ne\[0\]\) to be whole Q4_K blocks of 256 but got 100/],
    ['offset', [header(1, 0), info('w', [8], 0, 3)], /tensor 'w' offset to be a multiple of 32 but got 3/],
    [
      'outside',
      [pad(Buffer.concat([header(1, 0), info('w', [256, 4], 12, 0)])), Buffer.alloc(100)],
      /tensor 'w' \(Q4_K \[4, 256\], 576 bytes at \d+\) to lie within the file/,
    ],
    [
      'overlap',
      [pad(Buffer.concat([header(2, 0), info('a', [16], 0, 0), info('b', [16], 0, 32)])), Buffer.alloc(96)],
      /tensors 'a' and 'b' not to overlap/,
    ],
    [
      'dupname',
      [pad(Buffer.concat([header(2, 0), info('a', [8], 0, 0), info('a', [8], 0, 32)])), Buffer.alloc(64)],
      /tensor 'a' to appear once/,
    ],
    ['longname', [header(1, 0), info('x'.repeat(64), [8], 0, 0)], /the name of tensor 0 to be at most 63 bytes/],
    ['huge', [header(1, 0), info('w', [2 ** 30, 2 ** 30, 2 ** 30], 0, 0)], /tensor 'w' to have at most 2\^53 values/],
  ];
  for (const [name, parts, re] of cases) {
    const file = await raw(`${name}.gguf`, ...parts);
    await expectRejection(gguf.open(file), 'RangeError', re);
  }
  await expectRejection(gguf.open(path.join(dir, 'nothing.gguf')), 'RangeError', /nothing\.gguf/);
});

test('gguf.save refuses what GGUF cannot hold, with the one error format', async () => {
  const file = path.join(dir, 'bad.gguf');
  await expectRejection(
    gguf.save(file, { tensors: { w: quant.quantize(Tensor.randn([2, 64]), { dtype: 'int8', groupSize: 64 }) } }),
    'RangeError',
    /groups of 32/,
  );
  await expectRejection(
    gguf.save(file, { tensors: { w: { type: 'Q4_K', shape: [1, 256], data: new Uint8Array(10) } } }),
    'RangeError',
    /tensor 'w' data to be 144 bytes \(Q4_K \[1,256\]\) but got 10 bytes/,
  );
  await expectRejection(
    gguf.save(file, { tensors: { w: { type: 'Q9', shape: [1], data: new Uint8Array(1) } } }),
    'RangeError',
    /ggml type name/,
  );
  await expectRejection(
    gguf.save(file, { tensors: { w: Tensor.from(new Int32Array(2), [2]) } }),
    'TypeError',
    /float32, float16 or bfloat16/,
  );
  await expectRejection(
    gguf.save(file, { metadata: { a: { type: 'u8', value: 300 } }, tensors: {} }),
    'RangeError',
    /metadata 'a' to be an integer in \[0, 255\]/,
  );
  await expectRejection(
    gguf.save(file, { metadata: { a: NaN }, tensors: {} }),
    'TypeError',
    /metadata 'a' to be a string, boolean, finite number/,
  );
  await expect(fs.stat(file)).rejects.toThrow();
});
