#!/usr/bin/env bash
# Makes (once) the build root the prebuilt binaries are compiled in: a Debian 11 (bullseye) tree with its own
# g++ 10, CMake 3.18 and the aarch64 cross compiler, entered with chroot. Its glibc is 2.31 and its libstdc++.a
# was compiled against it, so the binaries built there need nothing newer (with the exp() floor of
# native/binding/glibc_floor.cpp, nothing newer than 2.28). The host's Debian 12 toolchain would pull in
# glibc 2.34-2.36 symbols through its own static libstdc++ (arc4random, _dl_find_object, pthread_*).
# Needs root, Linux and Debian's debootstrap (installed with apt-get when missing); about 1.5 GB, 1-2 minutes.
# Prints the root's path on its last line.
set -euo pipefail
root="${MOE_BUILD_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-kernels/build-root-bullseye}"
stamp="$root/.moe-kernels-build-root"
packages="g++,make,cmake,ninja-build,binutils,g++-aarch64-linux-gnu"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$packages" ]; then echo "$root"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "make-build-root: needs root (debootstrap and chroot)" >&2; exit 1; fi
if ! command -v debootstrap >/dev/null; then
  echo "make-build-root: installing debootstrap" >&2
  (apt-get update -qq && apt-get install -y -qq debootstrap) >&2
fi
rm -rf "$root"
mkdir -p "$(dirname "$root")"
echo "make-build-root: debootstrap bullseye into $root (1-2 minutes)" >&2
debootstrap --variant=minbase --include="$packages" bullseye "$root" http://deb.debian.org/debian >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2; echo "make-build-root: debootstrap failed (log: $root.log)" >&2; exit 1; }
echo "$packages" >"$stamp"
echo "$root"
