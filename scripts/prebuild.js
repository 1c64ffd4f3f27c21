#!/usr/bin/env node
// npm run prebuild (and prepack): compiles the prebuilt binaries that the package ships, so that installing it
// needs no compiler. One binary per OS and architecture serves every CPU (the ISA is chosen at load time):
// linux-x64 and linux-arm64 (cross-compiled), both for glibc, and win32-x64 (cross-compiled with MinGW-w64), CPU only
// (CUDA stays a source build).
//
// They are compiled in a Debian 11 build root (scripts/make-build-root.sh: its own g++ 10 and glibc 2.31) with
// -DMOE_PORTABLE=ON (static libstdc++/libgcc, the exp() floor), then checked: every glibc symbol version they
// need is read with objdump -T, and a binary that needs more than MAX_GLIBC fails the build. Where no build
// root can be made (not root, not Linux), `--host` compiles linux-<this arch> with this machine's toolchain
// instead and records the glibc it really needs; the package then works only on systems at least that new.
//
// win32-x64 is built with this machine's MinGW-w64 (Debian: mingw-w64) and checked to import only DLLs that Windows
// itself has (objdump -p); where MinGW-w64 is missing it is skipped with a warning.
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

/** Debian's MinGW-w64, posix threads variant (std::thread over winpthreads), and its binutils. */
const MINGW = { cxx: 'x86_64-w64-mingw32-g++-posix', objdump: 'x86_64-w64-mingw32-objdump' };
/** DLLs that every Windows 10 x64 has; the win32-x64 binary may import these and no others. */
const WINDOWS_SYSTEM_DLLS = ['kernel32.dll', 'msvcrt.dll', 'advapi32.dll', 'user32.dll', 'ws2_32.dll'];

function hasCommand(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Cross-compiles win32-x64 with this machine's MinGW-w64 (scripts/mingw-toolchain.cmake). Node-API's import
 * definitions come from node-api-headers (def/node_api.def), as CMakeLists.txt's MinGW branch describes. */
function buildWindows() {
  const build = path.join(root, 'build-prebuild-win32');
  fs.rmSync(build, { recursive: true, force: true });
  const def = path.join(path.dirname(require.resolve('node-api-headers/package.json')), 'def', 'node_api.def');
  run('cmake', [
    '-S',
    root,
    '-B',
    build,
    '-G',
    'Ninja',
    `-DCMAKE_TOOLCHAIN_FILE=${path.join(__dirname, 'mingw-toolchain.cmake')}`,
    '-DCMAKE_BUILD_TYPE=Release',
    '-DCMAKE_JS_VERSION=8.0.0',
    `-DCMAKE_JS_INC=${nodeApiIncludes().join(';')}`,
    `-DMOE_NODE_API_DEF=${def}`,
    `-DCMAKE_RUNTIME_OUTPUT_DIRECTORY=${build}/Release`, // (a DLL is a runtime output on Windows)
    '-DCMAKE_CXX_FLAGS=-DBUILDING_NODE_EXTENSION',
    '-DMOE_PORTABLE=ON',
    '-DMOE_BUILD_TESTS=OFF',
    '-DMOE_CUDA=OFF',
    '-DMOE_WERROR=ON',
  ]);
  run('cmake', ['--build', build, '--target', 'moe_kernels', '--parallel']);
  const version = run(MINGW.cxx, ['--version']).split('\n')[0];
  return {
    file: path.join(build, 'Release', 'moe_kernels.node'),
    objdump: (args) => run(MINGW.objdump, args),
    toolchain: `MinGW-w64 cross-compiler on Linux (${version}); libstdc++, libgcc and winpthreads linked statically`,
  };
}

/** The Linux binaries: built, checked against the glibc floor and static libstdc++ / libgcc, recorded. */
function addLinux(manifest, arch, built) {
  const key = `linux-${arch}`;
  const facts = inspect(built.objdump, built.file);
  if (built.maxGlibc && compareVersions(facts.glibc, built.maxGlibc) > 0)
    throw new Error(`prebuild: ${key} needs GLIBC_${facts.glibc} (${facts.glibcSymbols.join(', ')}), above the floor ${built.maxGlibc}`);
  if (facts.needed.some((lib) => /libstdc\+\+|libgcc_s/.test(lib)) || facts.otherVersions.length > 0)
    throw new Error(
      `prebuild: ${key} links ${facts.needed.join(', ')} / ${facts.otherVersions.join(', ')}: libstdc++ and libgcc must be static`,
    );
  if (!built.maxGlibc && compareVersions(facts.glibc, MAX_GLIBC) > 0)
    console.warn(`prebuild: warning: built with this machine's toolchain, ${key} loads only where glibc >= ${facts.glibc}`);
  const entry = record(key, built, { libc: 'glibc', glibc: facts.glibc, glibcSymbols: facts.glibcSymbols, needed: facts.needed });
  manifest.binaries[key] = entry;
  return `needs glibc >= ${facts.glibc} (${facts.glibcSymbols.join(', ')}); NEEDED ${facts.needed.join(' ')}`;
}

/** The Windows binary: it may import only DLLs that every Windows 10 has, and must export the Node-API entry. */
function addWindows(manifest, built) {
  const key = 'win32-x64';
  const headers = built.objdump(['-p', built.file]);
  const dlls = [...headers.matchAll(/DLL Name:\s+(\S+)/g)].map((m) => m[1]);
  const foreign = dlls.filter((dll) => !WINDOWS_SYSTEM_DLLS.includes(dll.toLowerCase()));
  if (foreign.length > 0)
    throw new Error(`prebuild: ${key} imports ${foreign.join(', ')}: libstdc++, libgcc and winpthreads must be static`);
  if (!/\bnapi_register_module_v1\b/.test(headers)) throw new Error(`prebuild: ${key} does not export napi_register_module_v1`);
  manifest.binaries[key] = record(key, built, { os: 'Windows 10 or later, x64', dlls, delayLoaded: ['NODE.EXE'] });
  return `imports ${dlls.join(' ')} (NODE.EXE delay-loaded: the host process)`;
}

/** Copies a built binary into prebuilds/<key>/ and returns its manifest entry. */
function record(key, built, facts) {
  const dest = path.join(outDir, key, 'moe_kernels.node');
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.copyFileSync(built.file, dest);
  const bytes = fs.statSync(dest).size;
  const sha256 = crypto.createHash('sha256').update(fs.readFileSync(dest)).digest('hex');
  return { file: `${key}/moe_kernels.node`, ...facts, toolchain: built.toolchain, bytes, sha256 };
}

function main() {
  const args = process.argv.slice(2);
  const host = args.includes('--host') || process.env.MOE_PREBUILD_TOOLCHAIN === 'host';
  if (process.platform !== 'linux') {
    console.log(`prebuild: skipped on ${process.platform}: the shipped binaries are built on Linux`);
    return;
  }
  // --targets=linux-x64,win32-x64 picks some; by default every target (with --host: this machine's Linux arch).
  const targetArg = args.find((a) => a.startsWith('--targets='));
  const known = [...Object.keys(TARGETS).map((arch) => `linux-${arch}`), 'win32-x64'];
  const targets = targetArg ? targetArg.slice(10).split(',') : host ? [`linux-${process.arch}`, 'win32-x64'] : known;
  for (const t of targets) {
    if (!known.includes(t)) throw new Error(`prebuild: unknown target ${t} (known: ${known.join(', ')})`);
    if (host && t.startsWith('linux-') && t !== `linux-${process.arch}`)
      throw new Error(`prebuild: --host builds linux-${process.arch} only (this machine's toolchain), not ${t}`);
  }
  let buildRoot;
  if (!host && targets.some((t) => t.startsWith('linux-'))) {
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
  for (const key of targets) {
    const started = Date.now();
    let summary;
    if (key === 'win32-x64') {
      if (!hasCommand(MINGW.cxx)) {
        if (targetArg) throw new Error(`prebuild: ${key} needs MinGW-w64 (${MINGW.cxx}; Debian: apt-get install mingw-w64)`);
        console.warn(`prebuild: warning: ${key} skipped: no MinGW-w64 here (${MINGW.cxx}; Debian: apt-get install mingw-w64)`);
        continue;
      }
      summary = addWindows(manifest, buildWindows());
    } else {
      const arch = key.slice('linux-'.length);
      summary = addLinux(manifest, arch, host ? buildOnHost() : buildInRoot(buildRoot, arch));
    }
    const entry = manifest.binaries[key];
    console.log(
      `prebuild: ${key}: ${(entry.bytes / 1024).toFixed(0)} KiB, ${summary}; ${((Date.now() - started) / 1000).toFixed(1)} s; ${entry.toolchain}`,
    );
  }
  fs.writeFileSync(path.join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
}

// (required rather than run: scripts/check-windows.sh checks its test program against the same DLLs)
module.exports = { WINDOWS_SYSTEM_DLLS };
if (require.main === module) {
  try {
    main();
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
