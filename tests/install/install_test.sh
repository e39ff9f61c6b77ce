#!/usr/bin/env bash
# Installs skiff from a build tree into a scratch prefix, then builds the embedding example
# against it twice (CMake package, pkg-config) and boots the test guest with both builds, and
# builds and runs the two-VM example (examples/two-vms).
# Usage: install_test.sh BUILD_DIR SOURCE_DIR GUEST_ELF
set -euo pipefail
build_dir=$1 source_dir=$2 guest=$3
work=$(mktemp -d /tmp/skiff-install-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
for f in bin/skiff include/skiff/vm.h include/skiff/version.h lib/cmake/skiff/skiffConfig.cmake \
         lib/pkgconfig/skiff.pc; do
  found=$(ls "$work/prefix"/$f "$work/prefix"/lib/*/${f#lib/} 2>/dev/null | head -1 || true)
  [ -n "$found" ] || { echo "not installed: $f"; ls -R "$work/prefix"; exit 1; }
done

# 1. find_package(skiff)
cmake -S "$source_dir/examples/boot-guest" -B "$work/cmake-build" -G Ninja \
      -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/cmake.log"
cmake --build "$work/cmake-build" > "$work/cmake-build.log" || { cat "$work/cmake-build.log"; exit 1; }

# The two-VM example, also through find_package(skiff).
cmake -S "$source_dir/examples/two-vms" -B "$work/two-vms-build" -G Ninja \
      -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/two-vms-cmake.log"
cmake --build "$work/two-vms-build" > "$work/two-vms-build.log" || { cat "$work/two-vms-build.log"; exit 1; }

# 2. pkg-config
pc_dir=$(dirname "$(find "$work/prefix" -name skiff.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs --static skiff)
c++ -std=c++23 "$source_dir/examples/boot-guest/main.cc" -o "$work/boot-guest-pc" $flags

if [ ! -w /dev/kvm ]; then
  echo "built against the installed package both ways; not booting: /dev/kvm not accessible"
  exit 0
fi
for exe in "$work/cmake-build/boot-guest" "$work/boot-guest-pc"; do
  set +e
  out=$("$exe" "$guest" "skiff.exit=13" 2>&1)
  rc=$?
  set -e
  echo "$out" | tail -3
  [ "$rc" -eq 13 ] || { echo "$exe: expected exit code 13, got $rc"; echo "$out"; exit 1; }
  echo "$out" | grep -q "SKIFF-GUEST cpus-started=2" || { echo "$exe: guest report missing"; exit 1; }
done
# Two VMs in one process: one paused while the other runs, both shut down gracefully.
set +e
out=$("$work/two-vms-build/two-vms" "$guest" 2>&1)
rc=$?
set -e
echo "$out" | tail -3
[ "$rc" -eq 0 ] || { echo "two-vms: expected exit code 0, got $rc"; echo "$out"; exit 1; }
echo "install test passed"
