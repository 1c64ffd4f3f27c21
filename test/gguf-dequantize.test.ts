/**
 * ggml's block types widened as ggml widens them, bitwise: against fixed vectors that came from ggml (test/gguf/,
 * scripts/gguf-dequant-vectors.js) and, where benchmarks/peers/ggml/build.sh has built ggml_dequant, against ggml
 * itself on fresh random blocks.
 */
import { execFileSync } from 'child_process';
import { createHash } from 'crypto';
import { existsSync, readFileSync } from 'fs';
import * as path from 'path';
import { gguf } from '../lib';

// The float32 bits, every NaN as the one quiet NaN: a NaN scale (float16 exponent all ones) makes NaNs whose payload
// bits JavaScript does not keep; that they are NaN is checked, their payloads are not.
const vectors = JSON.parse(readFileSync(path.join(__dirname, 'gguf', 'dequant-vectors.json'), 'utf8')) as {
  ggml: string;
  types: Record<string, { blocks: string; sha256: string; first: (number | null)[] }>;
};

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
  });

  test('a type it cannot widen, or too few bytes, is a RangeError naming the tensor', () => {
    expect(() => gguf.dequantizeBlocks(gguf.ggmlType('IQ2_XXS')!, new Uint8Array(66), 256, "tensor 'w'")).toThrow(
      /tensor 'w' to be of a type moe-kernels can widen .* but got IQ2_XXS/,
    );
    expect(() => gguf.dequantizeBlocks(gguf.ggmlType('Q4_K')!, new Uint8Array(143), 256, "tensor 'w'")).toThrow(RangeError);
  });
});
