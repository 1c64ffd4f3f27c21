#!/usr/bin/env node
// Builds the addon from source into build/ with cmake-js: `npm run build:native` (CPU), `npm run build:cuda`
// (also the CUDA backend; needs nvcc), `npm run build:mpi` (also the MPI transport of expert-parallel layers; needs
// an MPI library), or `node node_modules/moe-kernels/scripts/build-native.js [--cuda] [--mpi]` in a project that
// installed the package. MOE_CUDA=1 / MOE_MPI=1 in the environment ask for them too; --out DIR builds elsewhere.
//
// It configures every time (cmake-js `configure`, then `build`), so switching an existing build/ between the
// CPU and the CUDA variant really switches it: `cmake-js compile` configures only when build/CMakeCache.txt is
// missing, and silently ignored --CDMOE_CUDA=ON on a folder that had been configured without it. Later
// builds stay incremental. The loader prefers build/ over the prebuilt binary (lib/native-loader.ts).
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const root = path.resolve(__dirname, '..');

function truthy(value) {
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

function hasCommand(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Configures and builds build/; returns true when it worked. Prints what it does and, on failure, what to do. */
function buildFromSource({
  cuda = truthy(process.env.MOE_CUDA),
  mpi = truthy(process.env.MOE_MPI),
  debug = false,
  out = path.join(root, 'build'),
  log = console.log,
} = {}) {
  const missing = ['cmake', ...(cuda ? ['nvcc'] : []), ...(mpi ? ['mpicc'] : [])].filter((cmd) => !hasCommand(cmd));
  if (missing.length > 0) {
    log(
      `moe-kernels: cannot build from source: ${missing.join(' and ')} not found on PATH. ` +
        'It needs CMake >= 3.18 and a C++17 compiler (apt-get install cmake g++; dnf install cmake gcc-c++; ' +
        `apk add cmake g++ make)${cuda ? ', and the CUDA toolkit for the CUDA backend' : ''}` +
        `${mpi ? ', and an MPI library for expert parallelism (apt-get install libopenmpi-dev openmpi-bin)' : ''}.`,
    );
    return false;
  }
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  } catch {
    log('moe-kernels: cannot build from source: the cmake-js dependency is not installed (npm install cmake-js)');
    return false;
  }
  const flags = ['--directory', root, '--out', out, `--CDMOE_CUDA=${cuda ? 'ON' : 'OFF'}`, `--CDMOE_MPI=${mpi ? 'ON' : 'OFF'}`];
  if (debug) flags.push('--debug');
  const variant = ['CPU', ...(cuda ? ['CUDA'] : []), ...(mpi ? ['MPI'] : [])].join(' + ');
  log(`moe-kernels: building the addon from source (${variant}) into ${out}`);
  for (const command of ['configure', 'build']) {
    const r = spawnSync(process.execPath, [cmakeJs, command, ...flags], { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) {
      log(`moe-kernels: cmake-js ${command} failed (exit ${r.status ?? r.signal}); the messages above say why.`);
      return false;
    }
  }
  return true;
}

module.exports = { buildFromSource, truthy };

if (require.main === module) {
  const args = process.argv.slice(2);
  const outAt = args.indexOf('--out');
  const ok = buildFromSource({
    cuda: args.includes('--cuda') || (!args.includes('--cpu') && truthy(process.env.MOE_CUDA)),
    mpi: args.includes('--mpi') || (!args.includes('--cpu') && truthy(process.env.MOE_MPI)),
    debug: args.includes('--debug'),
    ...(outAt >= 0 ? { out: path.resolve(args[outAt + 1]) } : {}),
  });
  process.exit(ok ? 0 : 1);
}
