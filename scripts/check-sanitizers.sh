#!/usr/bin/env bash
# The sanitizer runs of CI (a step of .ci/run): the C++ tests of the core under ASan + UBSan and under TSan (every
# ISA this CPU has), then the Jest suite, the fuzz corpus included, through an ASan + UBSan build of the addon,
# with the sanitizer runtimes preloaded into Node (which is not itself instrumented). Any report fails the run.
# Build folders: build-asan, build-tsan, build-asan-addon (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
san_flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"   # Node itself leaks at exit by design
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"

echo "--- C++ tests under ASan + UBSan"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_BUILD_TESTS=ON "-DCMAKE_CXX_FLAGS=$san_flags" >/dev/null
cmake --build build-asan --target moe_core_tests
for isa in avx512 avx2 scalar; do
  ./build-asan/moe_core_tests --isa "$isa" || [ $? = 77 ]
done

echo "--- C++ tests under TSan"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_BUILD_TESTS=ON \
  "-DCMAKE_CXX_FLAGS=-fsanitize=thread -fno-omit-frame-pointer" >/dev/null
cmake --build build-tsan --target moe_core_tests
MOE_THREADS=4 ./build-tsan/moe_core_tests   # more threads than cores: more interleavings

echo "--- the Jest suite and the fuzz corpus through an ASan + UBSan addon"
# (Through MOE_EXTRA_FLAGS: cmake-js passes its own CMAKE_CXX_FLAGS after ours, and an addon configured with the
# sanitizer flags there was built uninstrumented, until 2026-12-01. The check below makes sure it is not again.)
npx cmake-js configure --out build-asan-addon --CDMOE_BUILD_TESTS=OFF --CDMOE_CUDA=OFF "--CDMOE_EXTRA_FLAGS=-g $san_flags" >/dev/null
npx cmake-js build --out build-asan-addon >/dev/null
# (grep reads all of nm's output: with -q it exits at the first match, and under pipefail nm's SIGPIPE failed this.)
if ! nm -D build-asan-addon/Release/moe_kernels.node | grep __asan_report >/dev/null; then
  echo "check-sanitizers: build-asan-addon/Release/moe_kernels.node is not instrumented by ASan" >&2
  exit 1
fi
preload="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
LD_PRELOAD="$preload" MOE_SANITIZER=address MOE_KERNELS_BINARY="$PWD/build-asan-addon/Release/moe_kernels.node" \
  node node_modules/jest/bin/jest.js --ci
