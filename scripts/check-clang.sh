#!/usr/bin/env bash
# The source build with clang and libc++ (Debian's), warnings as errors, besides CI's g++ and libstdc++: the addon and
# the C++ tests compile, and the tests pass (every ISA the CPU has). macOS builds from source with Apple clang and
# libc++, which cannot run here; this keeps that build from breaking unnoticed. Installs clang and libc++ where apt
# can (as root); says SKIPPED otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang++ >/dev/null || [ ! -e /usr/include/c++/v1/vector ] && [ ! -e /usr/lib/llvm-14/include/c++/v1/vector ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq clang libc++-dev libc++abi-dev >/dev/null) || true
  fi
fi
if ! command -v clang++ >/dev/null; then
  echo "check-clang: SKIPPED (no clang++; apt-get install clang libc++-dev libc++abi-dev)"
  exit 0
fi
echo "--- $(clang++ --version | head -1), libc++"
libcxx="-stdlib=libc++"
# (MOE_EXTRA_FLAGS: cmake-js puts its own CMAKE_CXX_FLAGS after any given; CMakeLists.txt adds these to compiling
# and linking)

npx cmake-js configure --out build-clang --CDMOE_BUILD_TESTS=ON --CDMOE_WERROR=ON --CDMOE_CUDA=OFF \
  --CDCMAKE_C_COMPILER=clang --CDCMAKE_CXX_COMPILER=clang++ "--CDMOE_EXTRA_FLAGS=$libcxx" >/dev/null
cmake --build build-clang --target moe_kernels moe_core_tests
# (linked against libc++, not libstdc++: what the flags asked for)
if ! ldd build-clang/moe_core_tests | grep -q 'libc++'; then
  echo "check-clang: build-clang/moe_core_tests is not linked against libc++" >&2
  exit 1
fi
for isa in avx512_bf16 avx512 avx2 scalar; do
  ./build-clang/moe_core_tests --isa "$isa" >/dev/null || [ $? = 77 ]
done
# The addon loads in Node and computes: one forward against the float64 reference.
MOE_KERNELS_BINARY="$PWD/build-clang/Release/moe_kernels.node" node -e "
const { MoELayer, Tensor, backendInfo, reference } = require('./dist/lib');
const c = { dModel: 23, dHidden: 37, numExperts: 5, topK: 2, activation: 'swiglu', normalizeTopK: true };
const r = (shape, seed, std) => Tensor.randn(shape, { seed, std });
const w = { router: r([5, 23], 1, 0.2), w1: r([5, 37, 23], 2, 0.2), w3: r([5, 37, 23], 3, 0.2), w2: r([5, 23, 37], 4, 0.2) };
const x = r([7, 23], 5, 1);
const y = new MoELayer(c, w).forwardSync(x).output.data;
const ref = reference.referenceMoE(x.data, 7, { router: w.router.data, w1: w.w1.data, w3: w.w3.data, w2: w.w2.data, b1: null, b3: null, b2: null }, c);
let diff = 0, scale = 0;
for (let i = 0; i < ref.output.length; i++) (diff = Math.max(diff, Math.abs(y[i] - ref.output[i]))), (scale = Math.max(scale, Math.abs(ref.output[i])));
const info = backendInfo();
if (info.binary.origin !== 'MOE_KERNELS_BINARY') throw new Error('loaded ' + info.binary.path + ', not the clang build');
if (!(scale > 0 && diff / scale < 1e-5)) throw new Error('the clang addon differs from the float64 reference: ' + diff / scale);
console.log('check-clang: the clang + libc++ addon (' + info.isa + ') matches the float64 reference: ' + (diff / scale).toExponential(1));
"
echo "check-clang: passed"
