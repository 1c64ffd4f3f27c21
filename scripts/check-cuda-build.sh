#!/usr/bin/env bash
# Where nvcc exists (a step of .ci/run): proves that the CUDA variant is really built when asked for, in the
# same build/ folder a plain install made. `npm run build:cuda` and `MOE_CUDA=1 npm install` must switch it to
# CUDA (backendInfo().cuda.compiled === true, through the package's own loader), `npm run build:native` back
# to CPU. Runs the backend's jest suites and the C++ tests with the CUDA build, and leaves build/ as the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then echo "check-cuda-build: skipped (no nvcc)"; exit 0; fi

expect_cuda() {  # expect_cuda true|false WHAT
  local got
  got=$(node -e "const i = require('./').backendInfo(); console.log(i.cuda.compiled, i.binary.origin, JSON.stringify(i.cuda))")
  echo "after $2: compiled origin cuda = $got"
  [[ "$got" == "$1 source build "* ]] || { echo "check-cuda-build: FAILED: after $2, cuda.compiled should be $1" >&2; exit 1; }
}

expect_cuda false "npm ci (the CPU build)"
npm run build:cuda
expect_cuda true "npm run build:cuda"
echo "--- the jest suites that choose a backend or report the build, and the C++ tests, with the CUDA build"
# Its CPU kernels are the CPU build's sources with the same flags (npm test ran every suite on them); what the
# CUDA variant changes is which backend a layer gets, what backendInfo reports and what CUDA refuses.
npx jest --ci test/cuda.test.ts test/native-loader.test.ts test/kernels.test.ts test/layer.test.ts \
  test/layer-backward.test.ts test/async.test.ts test/errors.test.ts test/hardening.test.ts test/expert-parallel.test.ts
ctest --test-dir build --output-on-failure
npm run build:native
expect_cuda false "npm run build:native"
MOE_CUDA=1 npm install --no-audit --no-fund
expect_cuda true "MOE_CUDA=1 npm install"
npm run build:native
expect_cuda false "npm run build:native"
