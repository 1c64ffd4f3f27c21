#!/usr/bin/env bash
# One script for a GPU machine (CUDA 13, PyTorch and Triton, no Node, no network); finishes within 8 minutes:
#   1. builds the C++ core with the CUDA backend (sm_90 here) and its tests, without Node;
#   2. runs the C++ tests: the CPU core, then the GPU against the CPU core (awkward sizes, bf16 tolerance,
#      identical expert choices, every CUDA call checked);
#   3. times the layer (dModel 4096, dHidden 14336, 8 experts, top-2, SwiGLU, bf16) at 1, 512, 4096 and 16384
#      tokens against PyTorch on the same card: an HF-style loop over experts, torch._grouped_mm where the
#      installed torch has it, a dense bf16 matmul (the TFLOP/s ceiling) and a device copy (the HBM ceiling);
#   4. prints a table with TFLOP/s, GB/s and the ratios the targets are stated in.
# Usage: bash benchmarks/cuda/device-check.sh [out-dir]   (results also written as JSON to out-dir)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/local/cuda/bin:$PATH"   # nvcc is often installed there without being on PATH
out="${1:-${OUT:-/tmp/moe-device-check}}"
mkdir -p "$out"
arch="${CUDA_ARCH:-90}"
echo "== versions"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi: not available"
nvcc --version 2>&1 | tail -2 || echo "nvcc: not found"
build=build-device
echo "== build (sm_${arch})"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMOE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" >"$out/cmake.log"
cmake --build "$build" -j "$(nproc)" >"$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
echo "== C++ tests"
"$build/moe_core_tests" | tail -2
# Exit 77 means "no usable device" (ctest's skip); here, on the GPU machine, that is a failure with its reason
# (a driver older than the toolkit, say), not a silent stop.
status=0
"$build/moe_cuda_tests" | tee "$out/cuda_tests.txt" || status=$?
if [ "$status" = 77 ]; then
  echo "device-check: FAILED: the CUDA tests found no usable device: $(grep -m1 'CUDA backend' "$out/cuda_tests.txt")" >&2
  exit 1
elif [ "$status" != 0 ]; then
  echo "device-check: FAILED: the CUDA tests failed (exit $status)" >&2
  exit 1
fi
echo "== timing moe-kernels (CUDA)"
timeout 240 "$build/moe_cuda_bench" 4096 14336 8 2 10 1 512 4096 16384 | tee "$out/moe.jsonl"
echo "== timing PyTorch on the same card, and the report"
timeout 240 python3 benchmarks/cuda/compare.py "$out/moe.jsonl" "$out/report.json"
