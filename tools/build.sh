#!/usr/bin/env bash
# Configures and builds skiff into build/ (or $SKIFF_BUILD_DIR). Extra arguments go to cmake.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${SKIFF_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build_dir" -G Ninja "$@"
cmake --build "$build_dir" -j "$(nproc)"
