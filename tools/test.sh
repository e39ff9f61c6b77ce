#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every test tier this host can run:
#   tier 1  unit tests (no KVM)
#   tier 2  freestanding guest payloads booted by skiff on /dev/kvm
#   tier 3  real Debian kernels booted by skiff (nested under QEMU TCG here; docs/testing.md)
#   fuzz    each libFuzzer target (clang 16) for a bounded time on its seed corpus
# Warnings are errors here. Usage (as root): tools/test.sh [extra ctest arguments]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${SKIFF_BUILD_DIR:-$root/build}
"$root/tools/install-deps.sh" --tests
"$root/tools/build.sh" -DSKIFF_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cd "$build_dir"
ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@"
