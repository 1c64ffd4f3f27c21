#!/usr/bin/env bash
# Cross-compiles the C++ core tests for AArch64 (NEON path) and runs them under qemu user emulation.
# Needs Debian's g++-aarch64-linux-gnu and qemu-user; exits 0 with a note when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "check-neon: skipped (apt-get install g++-aarch64-linux-gnu qemu-user to run it)"
  exit 0
fi
out=$(mktemp -d)
aarch64-linux-gnu-g++ -std=c++17 -O2 -Wno-psabi -Inative/include -DMOE_HAVE_NEON -static \
  native/src/cpu/cpu_neon.cpp native/src/cpu/cpu_scalar.cpp native/src/core/*.cpp native/tests/*.cpp \
  -o "$out/core_tests" -lpthread
qemu-aarch64 "$out/core_tests" --isa neon
qemu-aarch64 "$out/core_tests" --isa scalar
rm -rf "$out"
