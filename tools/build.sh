#!/usr/bin/env bash
# Configures and builds skiff into build/ (or $SKIFF_BUILD_DIR). Extra arguments go to cmake.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${SKIFF_BUILD_DIR:-$root/build}
# ccache, where the machine has it, makes repeated builds on one machine fast; a clean CI
# machine builds without it.
launcher=()
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake -S "$root" -B "$build_dir" -G Ninja "${launcher[@]}" "$@"
cmake --build "$build_dir" -j "$(nproc)"
