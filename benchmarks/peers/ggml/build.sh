#!/usr/bin/env bash
# Builds ggml (llama.cpp's tensor library) from source and benchmarks/peers/ggml/ggml_moe.cpp against it: the
# harness's optional ggml peer (`npm run bench` adds its rows when the binary exists). Never a dependency.
#   bash benchmarks/peers/ggml/build.sh [GGML_SOURCE_DIR]
# Without a source folder it clones github.com/ggml-org/ggml (the same CPU code as llama.cpp's ggml/) into
# build-ggml/src (ignored by git, as is everything it builds there). Built for this CPU (GGML_NATIVE: its AVX-512,
# VNNI, BF16; the drivers with -march=native), with the CPU backend's repack layouts (llama.cpp's default for Q4_0 /
# Q8_0 on a CPU). Output:
# build-ggml/ggml_moe (and build-ggml/ggml_moe_duel beside a moe-kernels build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
build="$root/build-ggml"
mkdir -p "$build"
src="${1:-$build/src}"
if [ ! -f "$src/include/ggml.h" ]; then
  if [ -n "${1:-}" ]; then echo "no ggml sources in $src (include/ggml.h missing)" >&2; exit 1; fi
  git clone --depth 1 https://github.com/ggml-org/ggml "$src"
fi
# (git's commit only where src is a clone's top: inside another work tree, such as build-ggml/src here, rev-parse
# would name that tree's commit; a copied snapshot carries its commit in .commit)
if [ "$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" = "$(cd "$src" && pwd -P)" ]; then
  commit="$(git -C "$src" rev-parse --short HEAD)"
else
  commit="$(cat "$src/.commit" 2>/dev/null || echo unknown)"
fi
cmake -S "$src" -B "$build/ggml" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF > "$build.log" 2>&1 || { tail -20 "$build.log"; exit 1; }
cmake --build "$build/ggml" -j "$(nproc)" >> "$build.log" 2>&1 || { tail -20 "$build.log"; exit 1; }
libs=$(find "$build/ggml" -name 'libggml*.a' | sort -r)  # libggml.a, libggml-cpu.a, libggml-base.a
# shellcheck disable=SC2086
c++ -O2 -march=native -std=c++17 -DGGML_COMMIT="\"$commit\"" -I"$src/include" "$here/ggml_moe.cpp" \
  -Wl,--start-group $libs -Wl,--end-group -fopenmp -lpthread -lm -o "$build/ggml_moe"
echo "built $build/ggml_moe (ggml $commit)"
# ggml's dequantization as a filter: the reference of the GGUF block types (test/gguf-dequantize.test.ts).
# shellcheck disable=SC2086
cc -O2 -I"$src/include" "$here/ggml_dequant.c" -Wl,--start-group $libs -Wl,--end-group -fopenmp -lpthread -lm -lstdc++ \
  -o "$build/ggml_dequant"
echo "built $build/ggml_dequant"
# With a moe-kernels build beside it (npm run build:native, or the C++ tests' build), the same driver linked with the
# library's core as well: `ggml_moe_duel duel ...` times both in one process, alternating.
core="${MOE_CORE_LIB:-$root/build/libmoe_core.a}"
if [ -f "$core" ]; then
  # shellcheck disable=SC2086
  c++ -O2 -march=native -std=c++17 -DMOE_DUEL -DGGML_COMMIT="\"$commit\"" -I"$src/include" -I"$root/native/include" \
    "$here/ggml_moe.cpp" "$core" -Wl,--start-group $libs -Wl,--end-group -fopenmp -lpthread -lm -o "$build/ggml_moe_duel"
  echo "built $build/ggml_moe_duel (with $core)"
fi
