#!/usr/bin/env node
// Writes test/gguf/dequant-vectors.json: blocks of every type lib/gguf/dequantize.ts widens, with what ggml's own
// dequantization makes of them (the sha-256 of the float32 bits, and the first values), from the ggml_dequant filter
// that benchmarks/peers/ggml/build.sh builds. The test checks the library against these without ggml present.
//   node scripts/gguf-dequant-vectors.js build-ggml/ggml_dequant <ggml commit>
'use strict';
const { execFileSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { gguf } = require('../dist/lib');

const bin = process.argv[2] || path.join(__dirname, '..', 'build-ggml', 'ggml_dequant');
let state = 12345;
const rand = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) >>> 8) / (1 << 24);
// Where each type keeps its float16 (or E8M0) scales: set to extremes in some blocks.
const SCALES = {
  Q4_0: [0],
  Q4_1: [0, 2],
  Q5_0: [0],
  Q5_1: [0, 2],
  Q8_0: [0],
  Q2_K: [80, 82],
  Q3_K: [108],
  Q4_K: [0, 2],
  Q5_K: [0, 2],
  Q6_K: [208],
  MXFP4: [],
};
const EXTREMES = [0x7bff, 0xfbff, 0x0001, 0x8001, 0x0400, 0x0000];

const out = { ggml: process.argv[3] || 'unknown', types: {} };
for (const name of gguf.DEQUANTIZABLE) {
  const t = gguf.ggmlType(name);
  const blocks = [];
  for (let i = 0; i < 6; i++) blocks.push(Uint8Array.from({ length: t.typeSize }, () => (rand() * 256) | 0)); // random
  blocks.push(new Uint8Array(t.typeSize)); // all zero
  for (const bits of EXTREMES) {
    const b = Uint8Array.from({ length: t.typeSize }, () => (rand() * 256) | 0);
    for (const at of SCALES[name]) {
      b[at] = bits & 0xff;
      b[at + 1] = bits >> 8;
    }
    if (name === 'MXFP4') b[0] = [0, 1, 2, 127, 254, 255][EXTREMES.indexOf(bits)];
    blocks.push(b);
  }
  // Blocks as ggml quantizes real values (normal values of a few scales, one row with an outlier).
  const values = new Float32Array(4 * t.blockSize).map((_, i) => {
    const u = Math.max(rand(), 1e-9),
      v = rand();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v) * 10 ** ((i / t.blockSize) | 0) * 1e-3;
  });
  values[3] = 40;
  const quantized = new Uint8Array(execFileSync(bin, ['quantize', String(t.id)], { input: Buffer.from(values.buffer) }));
  for (let i = 0; i < 4; i++) blocks.push(quantized.subarray(i * t.typeSize, (i + 1) * t.typeSize));
  const all = Buffer.concat(blocks.map((b) => Buffer.from(b)));
  const floats = new Float32Array(new Uint8Array(execFileSync(bin, [String(t.id)], { input: all })).buffer);
  // NaNs as the one quiet NaN (0x7fc00000): JavaScript keeps no NaN payloads (the test does the same)
  new Uint32Array(floats.buffer).forEach((u, i, a) => Number.isNaN(floats[i]) && (a[i] = 0x7fc00000));
  out.types[name] = {
    blocks: all.toString('hex'),
    sha256: crypto.createHash('sha256').update(Buffer.from(floats.buffer)).digest('hex'),
    first: Array.from(floats.subarray(0, 8)),
  };
}
// ggml's reference quantizers on one input (4 rows of 512: normal values at four scales, an outlier, an all-zero
// super-block and an all-positive one): the blocks' sha-256 per type, for the library's quant.quantize.
const input = new Float32Array(4 * 512).map((_, i) => {
  const u = Math.max(rand(), 1e-9),
    v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v) * 10 ** ((i / 512) | 0) * 1e-3;
});
input[7] = 25;
input.fill(0, 512, 768);
for (let i = 768; i < 1024; i++) input[i] = 1e-3 * (i % 7);
out.quantize = { input: Buffer.from(input.buffer).toString('hex'), types: {} };
for (const name of ['Q8_0', 'Q4_0', 'Q4_K', 'Q5_K', 'Q6_K']) {
  const blocks = execFileSync(bin, ['quantize', String(gguf.ggmlType(name).id)], { input: Buffer.from(input.buffer) });
  out.quantize.types[name] = crypto.createHash('sha256').update(blocks).digest('hex');
}
fs.writeFileSync(path.join(__dirname, '..', 'test', 'gguf', 'dequant-vectors.json'), JSON.stringify(out, null, 1) + '\n');
console.log('wrote test/gguf/dequant-vectors.json:', Object.keys(out.types).join(', '));
