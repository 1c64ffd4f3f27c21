#!/usr/bin/env node
// npm run prebuild (and prepack): compiles the prebuilt binaries that the package ships, so that installing it
// needs no compiler. One binary per OS and architecture serves every CPU (the ISA is chosen at load time):
// linux-x64 and linux-arm64 (cross-compiled), both for glibc, CPU only (CUDA stays a source build).
//
// They are compiled in a Debian 11 build root (scripts/make-build-root.sh: its own g++ 10 and glibc 2.31) with
// -DMOE_PORTABLE=ON (static libstdc++/libgcc, the exp() floor), then checked: every glibc symbol version they
// need is read with objdump -T, and a binary that needs more than MAX_GLIBC fails the build. Where no build
// root can be made (not root, not Linux), `--host` compiles linux-<this arch> with this machine's toolchain
// instead and records the glibc it really needs; the package then works only on systems at least that new.
//
// Writes prebuilds/<platform>-<arch>/moe_kernels.node and prebuilds/manifest.json, which the loader reads
// (lib/native-loader.ts). prebuilds/ is not in git.
'use strict';
const { spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const MAX_GLIBC = '2.28'; // RHEL 8, and the floor of Node's own Linux binaries
const NAPI_VERSION = 8;
const root = path.resolve(__dirname, '..');
const outDir = path.join(root, 'prebuilds');

/** Cross settings per Node arch: the compiler in the build root and CMake's processor name. */
const TARGETS = {
  x64: { cxx: 'g++', objdump: 'objdump', processor: 'x86_64' },
  arm64: { cxx: 'aarch64-linux-gnu-g++', objdump: 'aarch64-linux-gnu-objdump', processor: 'aarch64' },
};

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw new Error(`prebuild: ${cmd} could not run: ${r.error.message}`);
  if (r.status !== 0) {
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-30).join('\n');
    throw new Error(`prebuild: ${cmd} ${args.slice(0, 6).join(' ')} ... exited ${r.status}\n${out}`);
  }
  return r.stdout ?? '';
}

/** Compares dotted versions ('2.9' < '2.17' < '2.27'): a numeric collation compares each run of digits as a number. */
function compareVersions(a, b) {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** What a binary asks of the dynamic linker, from `objdump -T` (symbol versions) and `objdump -p` (NEEDED). */
function inspect(objdump, file) {
  const symbols = objdump(['-T', file]);
  const versions = [...new Set([...symbols.matchAll(/\(?(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9.]+)\)?/g)].map((m) => `${m[1]}_${m[2]}`))];
  const glibc = versions
    .filter((v) => v.startsWith('GLIBC_'))
    .map((v) => v.slice(6))
    .sort(compareVersions);
  const newest = glibc[glibc.length - 1] ?? '0';
  // Newer objdump prints "(GLIBC_2.27) expf", older "GLIBC_2.27  expf".
  const needing = symbols
    .split('\n')
    .filter((l) => new RegExp(`\\(?GLIBC_${newest.replace(/\./g, '\\.')}\\)?\\s+\\S+\\s*$`).test(l))
    .map((l) => l.trim().split(/\s+/).pop());
  const needed = [...objdump(['-p', file]).matchAll(/NEEDED\s+(\S+)/g)].map((m) => m[1]);
  return { glibc: newest, glibcSymbols: needing, needed, otherVersions: versions.filter((v) => !v.startsWith('GLIBC_')) };
}

/** Include folders of Node-API and node-addon-api, resolved from this package's dependencies. */
function nodeApiIncludes() {
  return [
    path.join(path.dirname(require.resolve('node-api-headers/package.json')), 'include'),
    path.dirname(require.resolve('node-addon-api/package.json')),
  ];
}

function copyTree(from, to) {
  fs.cpSync(from, to, { recursive: true, filter: (p) => !p.includes(`${path.sep}tests`) });
}

/** Builds one arch inside the chroot build root; returns the path of the binary on the host. */
function buildInRoot(buildRoot, arch) {
  const t = TARGETS[arch];
  const src = path.join(buildRoot, 'src', 'moe-kernels');
  const build = path.join(buildRoot, 'build', `moe-kernels-${arch}`);
  fs.rmSync(src, { recursive: true, force: true });
  fs.rmSync(build, { recursive: true, force: true });
  fs.mkdirSync(src, { recursive: true });
  fs.copyFileSync(path.join(root, 'CMakeLists.txt'), path.join(src, 'CMakeLists.txt'));
  copyTree(path.join(root, 'native'), path.join(src, 'native'));
  const includes = nodeApiIncludes().map((dir, i) => {
    const inside = path.join(src, 'node-api', String(i));
    fs.cpSync(dir, inside, { recursive: true });
    return '/' + path.relative(buildRoot, inside);
  });
  const inRoot = (p) => '/' + path.relative(buildRoot, p);
  const cross =
    arch === 'x64' ? [] : [`-DCMAKE_SYSTEM_NAME=Linux`, `-DCMAKE_SYSTEM_PROCESSOR=${t.processor}`, `-DCMAKE_CXX_COMPILER=${t.cxx}`];
  // The same definitions cmake-js passes (print-configure), without needing Node inside the root.
  const configure = [
    'cmake',
    '-S',
    inRoot(src),
    '-B',
    inRoot(build),
    '-G',
    'Ninja',
    '-DCMAKE_BUILD_TYPE=Release',
    '-DCMAKE_JS_VERSION=8.0.0',
    `-DCMAKE_JS_INC=${includes.join(';')}`,
    `-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=${inRoot(build)}/Release`,
    '-DCMAKE_CXX_FLAGS=-DBUILDING_NODE_EXTENSION',
    '-DMOE_PORTABLE=ON',
    '-DMOE_BUILD_TESTS=OFF',
    '-DMOE_CUDA=OFF',
    '-DMOE_WERROR=ON', // the binaries users receive: warnings of the build root's older compiler are errors too
    ...cross,
  ];
  const chroot = (args) => run('chroot', [buildRoot, '/usr/bin/env', '-i', 'PATH=/usr/bin:/bin', 'HOME=/root', 'LANG=C', ...args]);
  chroot(configure);
  chroot(['cmake', '--build', inRoot(build), '--parallel']);
  const version = chroot([t.cxx, '--version']).split('\n')[0];
  return {
    file: path.join(build, 'Release', 'moe_kernels.node'),
    objdump: (args) => chroot([t.objdump, ...args.slice(0, -1), inRoot(args[args.length - 1])]),
    toolchain: `Debian 11 (bullseye) build root: ${version}; libstdc++ and libgcc linked statically`,
    maxGlibc: MAX_GLIBC,
  };
}

/** Builds this machine's arch with its own toolchain (cmake-js), for machines where no build root can be made. */
function buildOnHost() {
  const build = path.join(root, 'build-prebuild');
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const flags = ['--out', build, '--CDMOE_PORTABLE=ON', '--CDMOE_BUILD_TESTS=OFF', '--CDMOE_CUDA=OFF', '--CDMOE_WERROR=ON'];
  run(process.execPath, [cmakeJs, 'configure', ...flags], { stdio: 'inherit' });
  run(process.execPath, [cmakeJs, 'build', ...flags], { stdio: 'inherit' });
  const version = run('c++', ['--version']).split('\n')[0];
  return {
    file: path.join(build, 'Release', 'moe_kernels.node'),
    objdump: (args) => run('objdump', args),
    toolchain: `this machine's toolchain (${version}); libstdc++ and libgcc linked statically`,
    maxGlibc: undefined, // recorded as measured: the loader tells users of older systems
  };
}

function main() {
  const args = process.argv.slice(2);
  const host = args.includes('--host') || process.env.MOE_PREBUILD_TOOLCHAIN === 'host';
  if (process.platform !== 'linux') {
    console.log(`prebuild: skipped on ${process.platform}: the shipped binaries are built on Linux`);
    return;
  }
  const archArg = args.find((a) => a.startsWith('--arch='));
  const arches = archArg ? archArg.slice(7).split(',') : host ? [process.arch] : Object.keys(TARGETS);
  let buildRoot;
  if (!host) {
    if (process.arch !== 'x64')
      throw new Error("prebuild: the build root cross-compiles from x64 only; MOE_PREBUILD_TOOLCHAIN=host builds this machine's arch");
    const made = spawnSync('bash', [path.join(__dirname, 'make-build-root.sh')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    if (made.status !== 0)
      throw new Error(
        "prebuild: no build root could be made (see above). To build with this machine's toolchain instead (the " +
          "binary then needs this machine's glibc): `npm run prebuild -- --host`, or MOE_PREBUILD_TOOLCHAIN=host npm pack",
      );
    buildRoot = made.stdout.trim().split('\n').pop();
  }
  fs.rmSync(outDir, { recursive: true, force: true });
  const manifest = { package: `moe-kernels@${require('../package.json').version}`, napiVersion: NAPI_VERSION, binaries: {} };
  for (const arch of arches) {
    if (!TARGETS[arch]) throw new Error(`prebuild: unknown arch ${arch} (known: ${Object.keys(TARGETS).join(', ')})`);
    const started = Date.now();
    const built = host ? buildOnHost() : buildInRoot(buildRoot, arch);
    const facts = inspect(built.objdump, built.file);
    if (built.maxGlibc && compareVersions(facts.glibc, built.maxGlibc) > 0)
      throw new Error(
        `prebuild: linux-${arch} needs GLIBC_${facts.glibc} (${facts.glibcSymbols.join(', ')}), above the floor ${built.maxGlibc}`,
      );
    if (facts.needed.some((lib) => /libstdc\+\+|libgcc_s/.test(lib)) || facts.otherVersions.length > 0)
      throw new Error(
        `prebuild: linux-${arch} links ${facts.needed.join(', ')} / ${facts.otherVersions.join(', ')}: libstdc++ and libgcc must be static`,
      );
    if (!built.maxGlibc && compareVersions(facts.glibc, MAX_GLIBC) > 0)
      console.warn(`prebuild: warning: built with this machine's toolchain, linux-${arch} loads only where glibc >= ${facts.glibc}`);
    const key = `linux-${arch}`;
    const dest = path.join(outDir, key, 'moe_kernels.node');
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.copyFileSync(built.file, dest);
    const bytes = fs.statSync(dest).size;
    manifest.binaries[key] = {
      file: `${key}/moe_kernels.node`,
      libc: 'glibc',
      glibc: facts.glibc,
      glibcSymbols: facts.glibcSymbols,
      needed: facts.needed,
      toolchain: built.toolchain,
      bytes,
      sha256: crypto.createHash('sha256').update(fs.readFileSync(dest)).digest('hex'),
    };
    console.log(
      `prebuild: ${key}: ${(bytes / 1024).toFixed(0)} KiB, needs glibc >= ${facts.glibc} (${facts.glibcSymbols.join(', ')}); ` +
        `NEEDED ${facts.needed.join(' ')}; ${((Date.now() - started) / 1000).toFixed(1)} s; ${built.toolchain}`,
    );
  }
  fs.writeFileSync(path.join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
}

try {
  main();
} catch (err) {
  console.error(err.message);
  process.exit(1);
}
