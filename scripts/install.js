#!/usr/bin/env node
// The package's install script. It compiles nothing when the prebuilt binary for this platform loads here
// (prebuilds/, made by scripts/prebuild.js); otherwise it says why and builds from source with cmake-js.
// It builds from source, whatever is prebuilt, when asked to (MOE_CUDA=1 for the CUDA backend, MOE_MPI=1 for the
// MPI transport of expert-parallel layers, MOE_KERNELS_BUILD_FROM_SOURCE=1, or npm's --build-from-source) and in a clone of the repository, where the
// C++ tests are built beside the addon. An install with --ignore-scripts (or npm 11's default of not running
// a dependency's install script) skips all of this and uses the prebuilt binary.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { buildFromSource, truthy } = require('./build-native');

const root = path.resolve(__dirname, '..');
const key = `${process.platform}-${process.arch}`;

/** The manifest entry of this platform's prebuilt binary when it loads here (checked in a child process), else
 * `problem` says why it does not serve. */
function prebuilt() {
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(root, 'prebuilds', 'manifest.json'), 'utf8')).binaries;
  } catch {
    return { problem: 'this copy has no prebuilt binaries' };
  }
  const entry = manifest[key];
  if (!entry) return { problem: `no prebuilt binary for ${key} (there are for ${Object.keys(manifest).join(', ')})` };
  const file = path.join(root, 'prebuilds', entry.file);
  const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)}).backendInfo()`], { encoding: 'utf8' });
  if (probe.status !== 0) {
    const error =
      (probe.stderr || '')
        .trim()
        .split('\n')
        .find((l) => /Error/.test(l)) ?? probe.stderr;
    return { problem: `the prebuilt binary for ${key} does not load here: ${error}` };
  }
  return { entry };
}

function main() {
  const cuda = truthy(process.env.MOE_CUDA);
  const mpi = truthy(process.env.MOE_MPI);
  const clone = fs.existsSync(path.join(root, 'native', 'tests', 'core_tests.cpp'));
  const asked = truthy(process.env.MOE_KERNELS_BUILD_FROM_SOURCE) || truthy(process.env.npm_config_build_from_source);
  if (!cuda && !mpi && !clone && !asked) {
    const { entry, problem } = prebuilt();
    if (entry) {
      const needs = entry.libc === 'glibc' ? `glibc >= ${entry.glibc}` : entry.os;
      console.log(`moe-kernels: using the prebuilt binary for ${key} (${needs}); nothing to compile`);
      return true;
    }
    console.log(`moe-kernels: ${problem}; building from source instead`);
  } else {
    const why = cuda
      ? 'MOE_CUDA is set'
      : mpi
        ? 'MOE_MPI is set'
        : clone
          ? 'this is a clone of the repository'
          : 'a build from source was asked for';
    console.log(`moe-kernels: ${why}: building from source`);
  }
  return buildFromSource({ cuda, mpi });
}

process.exit(main() ? 0 : 1);
