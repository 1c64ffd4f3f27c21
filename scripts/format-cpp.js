#!/usr/bin/env node
// clang-format over the C++ and CUDA sources (native/, benchmarks/native, benchmarks/cuda): `--check` fails on any
// file that is not formatted (npm run lint), without it rewrites them (npm run format). The binary comes from
// the clang-format devDependency, so every machine formats alike.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const folders = ['native', 'benchmarks/native', 'benchmarks/cuda', 'benchmarks/peers/ggml'];
const extensions = new Set(['.cpp', '.h', '.cu', '.cuh']);

function walk(dir, out) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(p, out);
    else if (extensions.has(path.extname(entry.name))) out.push(path.relative(root, p));
  }
  return out;
}

const files = folders.flatMap((f) => walk(path.join(root, f), [])).sort();
const check = process.argv.includes('--check');
const bin = require.resolve('clang-format/index.js', { paths: [root] });
const args = check ? ['--dry-run', '--Werror', ...files] : ['-i', ...files];
const r = spawnSync(process.execPath, [bin, '--style=file', ...args], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  if (check) console.error('format-cpp: the files above are not formatted; run `npm run format`');
  process.exit(r.status ?? 1);
}
console.log(`format-cpp: ${files.length} files ${check ? 'formatted' : 'written'}`);
