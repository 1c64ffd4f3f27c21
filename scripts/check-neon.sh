#!/usr/bin/env bash
# Cross-compiles the C++ core tests for AArch64 (NEON path) and runs them under qemu user emulation.
# Compiles with the host's aarch64-linux-gnu-g++ (Debian's g++-aarch64-linux-gnu) or, without it, with the
# one in the prebuild's Debian 11 build root (scripts/make-build-root.sh); runs with qemu-aarch64 (Debian's
# qemu-user). Exits 0 with a note when neither compiler or no qemu is there.
set -euo pipefail
cd "$(dirname "$0")/.."
build_root="${MOE_BUILD_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-kernels/build-root-bullseye}"
if ! command -v qemu-aarch64 >/dev/null; then
  echo "check-neon: skipped (apt-get install qemu-user g++-aarch64-linux-gnu to run it)"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sources=(native/src/cpu/cpu_neon.cpp native/src/cpu/cpu_neon_dotprod.cpp native/src/cpu/cpu_scalar.cpp native/src/core/*.cpp native/src/core/rules/*.cpp native/src/core/losses/*.cpp native/src/cuda/cuda_stub.cpp native/src/cuda/cuda_capabilities.cpp native/src/mpi/mpi_stub.cpp native/tests/*.cpp)
flags=(-std=c++17 -O2 -Wall -Wextra -Werror -Wno-psabi -Inative/include -DMOE_HAVE_NEON)
jobs=$(nproc)
# One object per source, $jobs at a time (one g++ for all of them used one core for a minute), then one link.
# (cpu_neon_dotprod.cpp with ARMv8.2's dot product, as CMakeLists.txt compiles it)
compile_and_link() {  # compile_and_link CXX OUT LINK_FLAGS: run in the sources' directory
  printf '%s\n' "${sources[@]}" | xargs -P "$jobs" -I{} sh -c \
    "case {} in *dotprod*) isa=-march=armv8.2-a+dotprod ;; *) isa= ;; esac; $1 ${flags[*]} \$isa -c {} -o $2/\$(echo {} | tr / _).o" || return 1
  $1 -static "$2"/*.o -o "$2/core_tests" $3
}
if command -v aarch64-linux-gnu-g++ >/dev/null; then
  compile_and_link aarch64-linux-gnu-g++ "$out" "-lpthread"
elif [ -f "$build_root/.moe-kernels-build-root" ] && [ "$(id -u)" = 0 ]; then
  echo "check-neon: compiling with the build root's $(chroot "$build_root" aarch64-linux-gnu-g++ --version | head -1)"
  src="$build_root/src/neon-check"
  rm -rf "$src" && mkdir -p "$src/objects" && cp -r native "$src/"
  # glibc < 2.34: std::thread in a static binary needs all of libpthread.
  chroot "$build_root" /usr/bin/env -i PATH=/usr/bin:/bin /bin/bash -c \
    "cd /src/neon-check && $(declare -p sources flags jobs); $(declare -f compile_and_link); \
     compile_and_link aarch64-linux-gnu-g++ objects '-Wl,--whole-archive -lpthread -Wl,--no-whole-archive'"
  mv "$src/objects/core_tests" "$out/core_tests" && rm -rf "$src"
else
  echo "check-neon: skipped (no aarch64 cross compiler: apt-get install g++-aarch64-linux-gnu, or run scripts/make-build-root.sh)"
  exit 0
fi
# The ISAs side by side (qemu's CPU has ARMv8.2's dot product, so neon_dotprod runs too), each one's output kept
# apart and printed after.
status=0
pids=()
for isa in neon_dotprod neon scalar; do
  qemu-aarch64 "$out/core_tests" --isa "$isa" >"$out/$isa.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  isa=$(echo neon_dotprod neon scalar | cut -d' ' -f$((i + 1)))
  code=0
  wait "${pids[$i]}" || code=$?
  echo "--- $isa" && cat "$out/$isa.log"
  # (neon_dotprod skipped, 77, only where qemu's CPU lacks the dot product: the neon run still checks the rest)
  if [ "$code" != 0 ] && ! { [ "$isa" = neon_dotprod ] && [ "$code" = 77 ]; }; then status=$code; fi
done
exit "$status"
