/**
 * Finds and loads the compiled addon. The order says who wins:
 *   1. MOE_KERNELS_BINARY, when set: that file and no other (a test or a deployment that pins its binary);
 *   2. the package's own source build, build/Release (then build/Debug): a user who compiled (the CUDA variant,
 *      say) gets what they built;
 *   3. the prebuilt binary shipped for this platform, prebuilds/<platform>-<arch>/ as listed in
 *      prebuilds/manifest.json (scripts/prebuild.js): glibc Linux (x64, arm64) and Windows x64.
 * When none loads, the error lists every path tried with the reason it failed, then what to do for this
 * system (libc, glibc version, toolchain), as sharp's loader does. Hand-written rather than node-gyp-build or
 * pkg-prebuilds: both choose a path by whether a file exists and then require it, so a binary that exists but
 * cannot load (an old glibc, musl) surfaces as a bare dlopen error; neither knows our glibc floor, and
 * node-gyp-build's install step runs node-gyp, where we build with cmake-js.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ERROR_PREFIX } from './errors';

/** One shipped binary, as scripts/prebuild.js records it in prebuilds/manifest.json. */
export interface PrebuiltEntry {
  file: string;
  /** Linux binaries: built for glibc, and the newest glibc symbol version they need (objdump -T). */
  libc?: 'glibc';
  glibc?: string;
  /** The Windows binary: the systems it runs on, and the DLLs it imports (all part of Windows). */
  os?: string;
  dlls?: string[];
}

/** The facts about this process the loader decides by; injectable so that tests can play other systems. */
export interface LoaderSystem {
  platform: string;
  arch: string;
  /** True where the C library is musl (Alpine), whose loader cannot take a glibc binary. */
  musl: boolean;
  /** glibc's version where the C library is glibc, else undefined; read only to explain a failure. */
  readonly glibcVersion: string | undefined;
  env: Record<string, string | undefined>;
  /** Loads one addon file (require); throws when it cannot. */
  load(file: string): unknown;
}

/** Where the loaded binary came from (reported by backendInfo().binary). */
export interface LoadedBinary {
  path: string;
  origin: 'MOE_KERNELS_BINARY' | 'source build' | 'prebuilt';
}

/** Compares dotted versions ('2.9' < '2.17' < '2.27'): a numeric collation compares each run of digits as a number. */
function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** glibc's version from Node's own report (as detect-libc reads it); undefined on musl, macOS and Windows. */
export function runtimeGlibcVersion(): string | undefined {
  if (process.platform !== 'linux') return undefined;
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return report?.header?.glibcVersionRuntime;
}

/** musl's dynamic loader is /lib/ld-musl-<arch>.so.1 (a file check: cheaper than Node's report, ~10 ms). */
function isMusl(): boolean {
  if (process.platform !== 'linux') return false;
  try {
    return fs.readdirSync('/lib').some((name) => name.startsWith('ld-musl-'));
  } catch {
    return false;
  }
}

export function currentSystem(): LoaderSystem {
  return {
    platform: process.platform,
    arch: process.arch,
    musl: isMusl(),
    get glibcVersion() {
      return runtimeGlibcVersion();
    },
    env: process.env,
    load: (file) => require(file),
  };
}

function readManifest(root: string): Record<string, PrebuiltEntry> | undefined {
  try {
    const manifest = JSON.parse(fs.readFileSync(path.join(root, 'prebuilds', 'manifest.json'), 'utf8'));
    return manifest.binaries as Record<string, PrebuiltEntry>;
  } catch {
    return undefined;
  }
}

const BUILD_HINT =
  'To build from source (CMake >= 3.18 and a C++17 compiler: `apt-get install cmake g++`, ' +
  "`dnf install cmake gcc-c++`, `apk add cmake g++ make`, Xcode's command line tools on macOS, or Visual Studio " +
  "Build Tools' C++ workload on Windows), run " +
  '`node node_modules/moe-kernels/scripts/build-native.js` in your project, or let its install script run ' +
  '(npm 11: `npm install-scripts approve moe-kernels && npm rebuild moe-kernels`).';

/** Loads the addon for `root` (the package folder) or throws one Error that explains every failure. */
export function loadNativeBinding<T>(root: string, system: LoaderSystem = currentSystem()): { binding: T; binary: LoadedBinary } {
  const failures: string[] = [];
  const hints: string[] = [];
  const tryLoad = (file: string, origin: LoadedBinary['origin']): T | undefined => {
    if (!fs.existsSync(file)) {
      failures.push(`  ${file}: not found`);
      return undefined;
    }
    try {
      return system.load(file) as T;
    } catch (err) {
      const message = (err as Error).message.split('\n')[0];
      failures.push(`  ${file}: ${message}`);
      if (/GLIBC_[0-9.]+'? not found|GLIBCXX_[0-9.]+'? not found/.test(message))
        hints.push(`${origin === 'prebuilt' ? 'The prebuilt binary' : 'This binary'} needs a newer C library than this has.`);
      return undefined;
    }
  };

  const pinned = system.env.MOE_KERNELS_BINARY;
  if (pinned) {
    const binding = tryLoad(pinned, 'MOE_KERNELS_BINARY');
    if (binding) return { binding, binary: { path: pinned, origin: 'MOE_KERNELS_BINARY' } };
    hints.push("MOE_KERNELS_BINARY names the only binary tried; unset it to use the package's own.");
  } else {
    for (const config of ['Release', 'Debug']) {
      const file = path.join(root, 'build', config, 'moe_kernels.node');
      const binding = tryLoad(file, 'source build');
      if (binding) return { binding, binary: { path: file, origin: 'source build' } };
    }
    const manifest = readManifest(root);
    const key = `${system.platform}-${system.arch}`;
    const entry = manifest?.[key];
    const shipped = manifest
      ? Object.entries(manifest)
          .map(([k, e]) => `${k} (${e.libc === 'glibc' ? 'glibc' : (e.os ?? 'any')})`)
          .join(', ') || 'none'
      : 'none (this copy has no prebuilds/manifest.json)';
    if (!entry) {
      failures.push(`  prebuilds/${key}: no prebuilt binary for this platform`);
      hints.push(`Prebuilt binaries exist for ${shipped}, not for ${key}.`);
    } else if (system.musl && entry.libc === 'glibc') {
      const file = path.join(root, 'prebuilds', entry.file);
      failures.push(`  ${file}: skipped: it is built for glibc and this system's C library is musl`);
      hints.push('The prebuilt binaries are for glibc; on musl (Alpine) build from source.');
    } else {
      const file = path.join(root, 'prebuilds', entry.file);
      const binding = tryLoad(file, 'prebuilt');
      if (binding) return { binding, binary: { path: file, origin: 'prebuilt' } };
      const glibc = system.glibcVersion;
      if (entry.libc !== 'glibc')
        hints.push(
          `The prebuilt binary for ${key} needs ${entry.os ?? 'no stated requirement'}` +
            (entry.dlls ? ` and loads only ${entry.dlls.join(', ')} (part of Windows) besides the Node.js process.` : '.'),
        );
      else if (glibc !== undefined && entry.glibc !== undefined && compareVersions(glibc, entry.glibc) < 0)
        hints.push(
          `This system has glibc ${glibc}; the prebuilt binary needs glibc >= ${entry.glibc} ` +
            '(Ubuntu 20.04 has 2.31, Debian 10 2.28, RHEL 8 2.28): upgrade the system or build from source.',
        );
    }
  }
  throw new Error(
    `${ERROR_PREFIX}could not load the native addon. Tried:\n${failures.join('\n')}\n` + [...new Set(hints), BUILD_HINT].join('\n'),
  );
}
