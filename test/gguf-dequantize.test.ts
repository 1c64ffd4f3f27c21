/**
 * ggml's block types widened as ggml widens them, bitwise: against fixed vectors that came from ggml (test/gguf/,
 * scripts/gguf-dequant-vectors.js) and, where benchmarks/peers/ggml/build.sh has built ggml_dequant, against ggml
 * itself on fresh random blocks.
 */
import { execFileSync } from 'child_process';
import { createHash } from 'crypto';
import { existsSync, readFileSync } from 'fs';
import * as path from 'path';
import { QuantizedTensor, Tensor, gguf, quant } from '../lib';
import { q3kToQ6k, q50ToQ80 } from '../lib/gguf/transcode';

// The float32 bits, every NaN as the one quiet NaN: a NaN scale (float16 exponent all ones) makes NaNs whose payload
// bits JavaScript does not keep; that they are NaN is checked, their payloads are not.
const vectors = JSON.parse(readFileSync(path.join(__dirname, 'gguf', 'dequant-vectors.json'), 'utf8')) as {
  ggml: string;
  types: Record<string, { blocks: string; sha256: string; first: (number | null)[] }>;
  quantize: { input: string; types: Record<string, string> };
};

const DTYPE_OF: Record<string, 'int8' | 'int4' | 'q4_k' | 'q5_k' | 'q6_k'> = {
  Q8_0: 'int8',
  Q4_0: 'int4',
  Q4_K: 'q4_k',
  Q5_K: 'q5_k',
  Q6_K: 'q6_k',
};

/** quant.quantize's result as GGUF blocks (Q8_0 / Q4_0: each group's float16 scale, then its codes). */
function asBlocks(q: QuantizedTensor): Buffer {
  const codes = Buffer.from(q.codes.buffer, q.codes.byteOffset, q.codes.byteLength);
  if (q.dtype !== 'int8' && q.dtype !== 'int4') return codes;
  const per = q.dtype === 'int8' ? 32 : 16;
  const parts: Buffer[] = [];
  for (let i = 0; i < q.scales.length; i++) {
    parts.push(Buffer.from([q.scales[i] & 0xff, q.scales[i] >> 8]), codes.subarray(i * per, (i + 1) * per));
  }
  return Buffer.concat(parts);
}

const bits = (f: Float32Array) => {
  const c = Float32Array.from(f, (v) => (Number.isNaN(v) ? NaN : v));
  new Uint32Array(c.buffer).forEach((u, i, a) => Number.isNaN(c[i]) && (a[i] = 0x7fc00000));
  return Buffer.from(c.buffer);
};

describe('GGUF block types', () => {
  test.each(Object.keys(vectors.types))('%s equals the fixed vectors from ggml', (name) => {
    const v = vectors.types[name];
    const t = gguf.ggmlType(name)!;
    const blocks = new Uint8Array(Buffer.from(v.blocks, 'hex'));
    const y = gguf.dequantizeBlocks(t, blocks, (blocks.length / t.typeSize) * t.blockSize, name);
    expect(Array.from(y.subarray(0, 8))).toEqual(v.first.map((x) => (x === null ? NaN : x)));
    expect(createHash('sha256').update(bits(y)).digest('hex')).toBe(v.sha256);
  });

  test.each(Object.keys(vectors.quantize.types))("quant.quantize makes the blocks ggml's reference quantizer makes: %s", (name) => {
    const input = new Float32Array(new Uint8Array(Buffer.from(vectors.quantize.input, 'hex')).buffer);
    const q = quant.quantize(Tensor.from(input, [4, 512]), { dtype: DTYPE_OF[name] });
    expect(createHash('sha256').update(asBlocks(q)).digest('hex')).toBe(vectors.quantize.types[name]);
    // and widens them as ggml does
    const t = gguf.ggmlType(name)!;
    expect(bits(quant.dequantize(q).data).equals(bits(gguf.dequantizeBlocks(t, new Uint8Array(asBlocks(q)), input.length, name)))).toBe(
      true,
    );
  });

  test('every widened type has fixed vectors', () => {
    expect(Object.keys(vectors.types).sort()).toEqual([...gguf.DEQUANTIZABLE].sort());
  });

  const bin = path.join(__dirname, '..', 'build-ggml', 'ggml_dequant');
  (existsSync(bin) ? test : test.skip)('equals ggml built from source on fresh random blocks (benchmarks/peers/ggml/build.sh)', () => {
    for (const name of gguf.DEQUANTIZABLE) {
      const t = gguf.ggmlType(name)!;
      const raw = new Uint8Array(257 * t.typeSize).map(() => (Math.random() * 256) | 0);
      const ref = new Float32Array(new Uint8Array(execFileSync(bin, [String(t.id)], { input: raw })).buffer);
      const ours = gguf.dequantizeBlocks(t, raw, 257 * t.blockSize, name);
      expect(bits(ours).equals(bits(ref))).toBe(true);
    }
    // and ggml's reference quantizer makes the blocks quant.quantize makes, on fresh values of several scales
    for (const name of Object.keys(DTYPE_OF)) {
      const x = Tensor.randn([3, 768], { seed: (Math.random() * 1e9) | 0 });
      (x.data as Float32Array).forEach((v, i, a) => (a[i] = v * 10 ** ((i % 5) - 3)));
      const ref = execFileSync(bin, ['quantize', String(gguf.ggmlType(name)!.id)], { input: Buffer.from((x.data as Float32Array).buffer) });
      expect(asBlocks(quant.quantize(x, { dtype: DTYPE_OF[name] })).equals(ref)).toBe(true);
    }
  });

  test.each([
    ['Q3_K', 'Q6_K', q3kToQ6k],
    ['Q5_0', 'Q8_0', q50ToQ80],
  ] as const)('%s rewritten as %s stands for the same weights, bit for bit', (from, to, rewrite) => {
    const a = gguf.ggmlType(from)!,
      b = gguf.ggmlType(to)!;
    // the fixed vectors' blocks (extreme and subnormal scales, all-zero blocks, NaN and infinite scales) and fresh
    // random ones
    let s = 7;
    const fresh = new Uint8Array(64 * a.typeSize).map(() => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24) & 0xff);
    for (const blocks of [new Uint8Array(Buffer.from(vectors.types[from].blocks, 'hex')), fresh]) {
      const n = (blocks.length / a.typeSize) * a.blockSize;
      const rewritten = rewrite(blocks);
      expect(rewritten.length).toBe((n / b.blockSize) * b.typeSize);
      expect(bits(gguf.dequantizeBlocks(b, rewritten, n, to)).equals(bits(gguf.dequantizeBlocks(a, blocks, n, from)))).toBe(true);
    }
  });

  test('a type it cannot widen, or too few bytes, is a RangeError naming the tensor', () => {
    expect(() => gguf.dequantizeBlocks(gguf.ggmlType('IQ2_XXS')!, new Uint8Array(66), 256, "tensor 'w'")).toThrow(
      /tensor 'w' to be of a type moe-kernels can widen .* but got IQ2_XXS/,
    );
    expect(() => gguf.dequantizeBlocks(gguf.ggmlType('Q4_K')!, new Uint8Array(143), 256, "tensor 'w'")).toThrow(RangeError);
  });
});
