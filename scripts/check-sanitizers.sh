#!/usr/bin/env bash
# The sanitizer runs of CI (a step of .ci/run): the C++ tests of the core under ASan + UBSan (every ISA this CPU
# has) and under TSan, then the Jest suites that cross into the addon, the fuzz corpus included, through an ASan +
# UBSan build of it, with the sanitizer runtimes preloaded into Node (which is not itself instrumented). Any report
# fails the run. Build folders: build-asan (the core tests and the addon, one instrumented core), build-tsan
# (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
san_flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"   # Node itself leaks at exit by design
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"

echo "--- the C++ tests and the addon, built once with ASan + UBSan"
# One cmake-js build folder for both, so the instrumented core compiles once (through MOE_EXTRA_FLAGS: cmake-js
# passes its own CMAKE_CXX_FLAGS after ours, and an addon configured with the sanitizer flags there was built
# uninstrumented, until 2026-12-01; the check below makes sure it is not again).
# -O1 after the Release -O3: the instrumented build compiles in half the time (148 against ~290 s cold on CI's two
# cores), and the Jest run below took the same time with either (123 and 122 s).
npx cmake-js configure --out build-asan --CDMOE_BUILD_TESTS=ON --CDMOE_CUDA=OFF "--CDMOE_EXTRA_FLAGS=-g -O1 $san_flags" >/dev/null
cmake --build build-asan --target moe_kernels moe_core_tests
# (grep reads all of nm's output: with -q it exits at the first match, and under pipefail nm's SIGPIPE failed this.)
if ! nm -D build-asan/Release/moe_kernels.node | grep __asan_report >/dev/null; then
  echo "check-sanitizers: build-asan/Release/moe_kernels.node is not instrumented by ASan" >&2
  exit 1
fi

echo "--- C++ tests under ASan + UBSan"
for isa in avx512 avx2 scalar; do
  ./build-asan/moe_core_tests --isa "$isa" || [ $? = 77 ]
done

echo "--- C++ tests under TSan"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_BUILD_TESTS=ON \
  "-DCMAKE_CXX_FLAGS=-fsanitize=thread -fno-omit-frame-pointer" >/dev/null
cmake --build build-tsan --target moe_core_tests
MOE_THREADS=4 ./build-tsan/moe_core_tests   # more threads than cores: more interleavings

echo "--- the Jest suites that cross into the addon, and the fuzz corpus, through the ASan + UBSan addon"
# Left out: the suites of pure TypeScript (the float64 gating, losses and reference code, Tensor), which load no
# instrumented code, and isa.test, which reruns four of the suites below once per ISA: the ISA changes only the
# kernel table, whose kernels the C++ tests above run under ASan on every ISA. `npm test` runs them all.
left_out='test/(gating/(routers|gradients)|losses/losses|reference-backward|tensor|isa)\.test\.ts$'
preload="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
LD_PRELOAD="$preload" MOE_SANITIZER=address MOE_KERNELS_BINARY="$PWD/build-asan/Release/moe_kernels.node" \
  node node_modules/jest/bin/jest.js --ci --testPathIgnorePatterns "$left_out"
