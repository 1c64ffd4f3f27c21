/** The addon loader: which binary wins, and what its error tells a user on each kind of system. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { backendInfo } from '../lib';
import { loadNativeBinding, runtimeGlibcVersion } from '../lib/native-loader';
import type { LoaderSystem } from '../lib/native-loader';

function packageFolder(files: Record<string, string>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-loader-'));
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), text);
  }
  return root;
}

const manifest = JSON.stringify({
  binaries: {
    'linux-x64': { file: 'linux-x64/moe_kernels.node', libc: 'glibc', glibc: '2.27' },
    'linux-arm64': { file: 'linux-arm64/moe_kernels.node', libc: 'glibc', glibc: '2.27' },
    'win32-x64': { file: 'win32-x64/moe_kernels.node', os: 'Windows 10 or later, x64', dlls: ['KERNEL32.dll', 'msvcrt.dll'] },
  },
});

/** A system whose load() returns a marker for the files in `loads` and throws `failure` for the others. */
function system(over: Partial<LoaderSystem>, loads: string[] = [], failure = 'invalid ELF header'): LoaderSystem & { tried: string[] } {
  const tried: string[] = [];
  return {
    platform: 'linux',
    arch: 'x64',
    musl: false,
    glibcVersion: '2.36',
    env: {},
    load: (file: string) => {
      tried.push(file);
      if (loads.some((l) => file.endsWith(l))) return { file };
      throw new Error(`${failure}\nRequire stack: ...`);
    },
    tried,
    ...over,
  };
}

describe('loadNativeBinding', () => {
  it("prefers the user's source build over the prebuilt binary", () => {
    const root = packageFolder({
      'build/Release/moe_kernels.node': 'x',
      'prebuilds/manifest.json': manifest,
      'prebuilds/linux-x64/moe_kernels.node': 'x',
    });
    const { binary } = loadNativeBinding(root, system({}, ['build/Release/moe_kernels.node', 'linux-x64/moe_kernels.node']));
    expect(binary).toEqual({ path: path.join(root, 'build', 'Release', 'moe_kernels.node'), origin: 'source build' });
  });

  it('falls back to the prebuilt binary for this platform and arch', () => {
    const root = packageFolder({
      'prebuilds/manifest.json': manifest,
      'prebuilds/linux-arm64/moe_kernels.node': 'x',
      'prebuilds/linux-x64/moe_kernels.node': 'x',
    });
    const sys = system({ arch: 'arm64' }, ['moe_kernels.node']);
    const { binary } = loadNativeBinding(root, sys);
    expect(binary).toEqual({ path: path.join(root, 'prebuilds', 'linux-arm64', 'moe_kernels.node'), origin: 'prebuilt' });
    expect(sys.tried).toEqual([binary.path]);
  });

  it('lists every path tried, with its reason, when a broken source build and the prebuilt one both fail', () => {
    const root = packageFolder({
      'build/Release/moe_kernels.node': 'x',
      'prebuilds/manifest.json': manifest,
      'prebuilds/linux-x64/moe_kernels.node': 'x',
    });
    expect(() => loadNativeBinding(root, system({}))).toThrow(
      new RegExp(
        `^moe-kernels: could not load the native addon. Tried:\\n  ${path.join(root, 'build/Release/moe_kernels.node')}: invalid ELF header\\n` +
          `  ${path.join(root, 'build/Debug/moe_kernels.node')}: not found\\n  ${path.join(root, 'prebuilds/linux-x64/moe_kernels.node')}: invalid ELF header\\n`,
      ),
    );
  });

  it('says which platforms have prebuilt binaries, and how to build from source, on an unsupported platform', () => {
    const root = packageFolder({ 'prebuilds/manifest.json': manifest });
    let message = '';
    try {
      loadNativeBinding(root, system({ platform: 'darwin', arch: 'arm64', glibcVersion: undefined }));
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('prebuilds/darwin-arm64: no prebuilt binary for this platform');
    expect(message).toContain(
      'Prebuilt binaries exist for linux-x64 (glibc), linux-arm64 (glibc), win32-x64 (Windows 10 or later, x64), not for darwin-arm64.',
    );
    expect(message).toContain('CMake >= 3.18 and a C++17 compiler');
    expect(message).toContain('scripts/build-native.js');
  });

  it('skips the glibc binary on musl and says to build from source', () => {
    const root = packageFolder({ 'prebuilds/manifest.json': manifest, 'prebuilds/linux-x64/moe_kernels.node': 'x' });
    const sys = system({ musl: true, glibcVersion: undefined }, ['moe_kernels.node']);
    expect(() => loadNativeBinding(root, sys)).toThrow(/C library is musl[\s\S]*on musl \(Alpine\) build from source/);
    expect(sys.tried).toEqual([]);
  });

  it('names the glibc a system has and the one the prebuilt binary needs when it is too old', () => {
    const root = packageFolder({ 'prebuilds/manifest.json': manifest, 'prebuilds/linux-x64/moe_kernels.node': 'x' });
    const failure = "/lib64/libc.so.6: version `GLIBC_2.27' not found (required by moe_kernels.node)";
    expect(() => loadNativeBinding(root, system({ glibcVersion: '2.17' }, [], failure))).toThrow(
      /GLIBC_2.27' not found[\s\S]*needs a newer C library[\s\S]*This system has glibc 2.17; the prebuilt binary needs glibc >= 2.27/,
    );
  });

  it('loads the Windows binary on win32-x64, and says what it needs when it does not load', () => {
    const root = packageFolder({ 'prebuilds/manifest.json': manifest, 'prebuilds/win32-x64/moe_kernels.node': 'x' });
    const windows = { platform: 'win32', musl: false, glibcVersion: undefined };
    const { binary } = loadNativeBinding(root, system(windows, ['moe_kernels.node']));
    expect(binary).toEqual({ path: path.join(root, 'prebuilds', 'win32-x64', 'moe_kernels.node'), origin: 'prebuilt' });
    const failure = 'The specified module could not be found.';
    expect(() => loadNativeBinding(root, system(windows, [], failure))).toThrow(
      /win32-x64[/\\]moe_kernels.node: The specified module could not be found.\n[\s\S]*needs Windows 10 or later, x64 and loads only KERNEL32.dll, msvcrt.dll[\s\S]*Visual Studio Build Tools/,
    );
  });

  it('tries MOE_KERNELS_BINARY alone when it is set', () => {
    const root = packageFolder({ 'build/Release/moe_kernels.node': 'x', 'pinned.node': 'x' });
    const pinned = path.join(root, 'pinned.node');
    const sys = system({ env: { MOE_KERNELS_BINARY: pinned } });
    expect(() => loadNativeBinding(root, sys)).toThrow(
      /Tried:\n {2}.*pinned.node: invalid ELF header\nMOE_KERNELS_BINARY names the only binary tried/,
    );
    expect(sys.tried).toEqual([pinned]);
    expect(loadNativeBinding(root, system({ env: { MOE_KERNELS_BINARY: pinned } }, ['pinned.node'])).binary.origin).toBe(
      'MOE_KERNELS_BINARY',
    );
  });

  it("reports Node's own error for a file that is not an addon (the real require)", () => {
    const root = packageFolder({ 'build/Release/moe_kernels.node': 'not an ELF file' });
    expect(() => loadNativeBinding(root, { ...system({}), load: (file) => require(file) })).toThrow(
      /build\/Release\/moe_kernels.node: .*(invalid ELF header|file too short)/,
    );
  });
});

describe('the loaded binary', () => {
  it('backendInfo() says which file is in use and where it came from', () => {
    const { binary } = backendInfo();
    expect(['MOE_KERNELS_BINARY', 'source build', 'prebuilt']).toContain(binary.origin);
    expect(fs.existsSync(binary.path)).toBe(true);
  });

  // A clone tests its own build: a source build that fails to load (a symbol missing from the binding, say) must fail
  // the suite, not hand it to a prebuilt binary left over from an earlier `npm pack`.
  it('is the source build wherever there is one (unless MOE_KERNELS_BINARY names another)', () => {
    const own = path.join(__dirname, '..', 'build', 'Release', 'moe_kernels.node');
    if (!fs.existsSync(own) || process.env.MOE_KERNELS_BINARY) return;
    expect(backendInfo().binary).toEqual({ path: own, origin: 'source build' });
  });

  it("reads this system's glibc version where it has one", () => {
    if (process.platform === 'linux') expect(runtimeGlibcVersion()).toMatch(/^2\.\d+$/);
  });
});
