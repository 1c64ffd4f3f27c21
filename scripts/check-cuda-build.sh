#!/usr/bin/env bash
# Where nvcc exists (a step of .ci/run): proves that the CUDA variant is really built when asked for, in the
# same build/ folder a plain install made. `npm run build:cuda` and `MOE_CUDA=1 npm install` must switch it to
# CUDA (backendInfo().cuda.compiled === true, through the package's own loader), `npm run build:native` back
# to CPU. Runs the jest suite and the C++ tests with the CUDA build, and leaves build/ as the CPU build.
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
echo "--- the jest suite and the C++ tests with the CUDA build"
npx jest --ci
ctest --test-dir build --output-on-failure
npm run build:native
expect_cuda false "npm run build:native"
MOE_CUDA=1 npm install --no-audit --no-fund
expect_cuda true "MOE_CUDA=1 npm install"
npm run build:native
expect_cuda false "npm run build:native"
