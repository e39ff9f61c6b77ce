#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (packages, build) and boots the default VM: skiff's own
# test guest, which prints what it found (command line, memory map, vCPUs) and powers off.
# Usage (as root): tools/run-default-vm.sh [extra `skiff run` arguments, e.g. --vcpus 4]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${SKIFF_BUILD_DIR:-$root/build}
"$root/tools/install-deps.sh"
mkdir -p "$build_dir"
echo "run-default-vm.sh: building skiff (log: $build_dir/build.log)" >&2
"$root/tools/build.sh" > "$build_dir/build.log" 2>&1 || { tail -50 "$build_dir/build.log"; exit 1; }
exec "$build_dir/skiff" run "$build_dir/configs/default-vm.json" "$@"
