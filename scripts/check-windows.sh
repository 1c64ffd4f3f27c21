#!/usr/bin/env bash
# The core on Windows x64 (issue 33, first part): the C++ tests cross-compiled with Debian's MinGW-w64 (posix threads;
# libstdc++, libgcc and winpthreads linked statically, so the .exe needs only system DLLs) and run under Wine, on the
# active ISA and the scalar path: the kernels, the thread pool, and the expert store's Win32 file I/O (positional
# reads, unbuffered reads, the rename over an existing store, a damaged and a truncated store). Installs mingw-w64
# and wine with apt where it can (as root); says SKIPPED otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v x86_64-w64-mingw32-g++-posix >/dev/null || ! command -v wine >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mingw-w64 wine64 >/dev/null) || true
  fi
fi
if ! command -v x86_64-w64-mingw32-g++-posix >/dev/null || ! command -v wine >/dev/null; then
  echo "check-windows: SKIPPED (no MinGW-w64 or Wine; apt-get install mingw-w64 wine64)"
  exit 0
fi
cmake -S . -B build-win -G Ninja -DCMAKE_TOOLCHAIN_FILE=scripts/mingw-toolchain.cmake -DCMAKE_BUILD_TYPE=Release \
  -DMOE_BUILD_TESTS=ON -DMOE_CUDA=OFF >/dev/null
cmake --build build-win --target moe_core_tests
dlls=$(x86_64-w64-mingw32-objdump -p build-win/moe_core_tests.exe | awk '/DLL Name/ { print $3 }' | sort | tr '\n' ' ')
echo "--- build-win/moe_core_tests.exe imports: $dlls"
# (the DLLs the shipped binary may import, scripts/prebuild.js's list)
node -e '
  const { WINDOWS_SYSTEM_DLLS } = require("./scripts/prebuild.js");
  const foreign = process.argv.slice(1).filter((dll) => !WINDOWS_SYSTEM_DLLS.includes(dll.toLowerCase()));
  if (foreign.length > 0) { console.error(`check-windows: the .exe needs ${foreign.join(", ")}, not system DLLs`); process.exit(1); }
' $dlls
export WINEDEBUG=-all WINEPREFIX="${WINEPREFIX:-$PWD/build-win/wineprefix}"
for isa in "" scalar; do
  echo "--- under $(wine --version 2>/dev/null): moe_core_tests.exe ${isa:+--isa $isa}"
  # (wine passes the exit status through)
  if ! wine build-win/moe_core_tests.exe ${isa:+--isa "$isa"} >build-win/tests.log 2>&1; then
    tail -30 build-win/tests.log
    echo "check-windows: moe_core_tests.exe failed under Wine" >&2
    exit 1
  fi
  grep -v '^wine: ' build-win/tests.log | tail -2
done
echo "check-windows: passed"
