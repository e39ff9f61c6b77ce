#!/usr/bin/env bash
# Installs skiff from a build tree into a scratch prefix, then builds the embedding example
# against it twice (CMake package, pkg-config) and boots the test guest with both builds,
# builds and runs the two-VM example (examples/two-vms), and builds and runs the example of
# docs/api.md ("A complete example"), taken from the markdown as it stands.
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

# The example of docs/api.md: each file is the fenced block after its
# "<!-- example: NAME -->" line.
extract_example() {  # NAME MARKDOWN
  awk -v marker="<!-- example: $1 -->" '
    $0 == marker { armed = 1; next }
    armed && !inside && /^```/ { inside = 1; next }
    inside && /^```/ { exit }
    inside { print }' "$2"
}
mkdir -p "$work/api-example"
for file in main.cc CMakeLists.txt; do
  extract_example "$file" "$source_dir/docs/api.md" > "$work/api-example/$file"
  [ -s "$work/api-example/$file" ] || { echo "docs/api.md: no example block for $file"; exit 1; }
done
cmake -S "$work/api-example" -B "$work/api-example-build" -G Ninja \
      -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/api-example-cmake.log"
cmake --build "$work/api-example-build" > "$work/api-example-build.log" || {
  cat "$work/api-example-build.log"; exit 1; }

# 2. pkg-config
pc_dir=$(dirname "$(find "$work/prefix" -name skiff.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs --static skiff)
c++ -std=c++23 "$source_dir/examples/boot-guest/main.cc" -o "$work/boot-guest-pc" $flags
# docs/api.md's pkg-config line for its example, with warnings as errors: the documented
# program stays clean.
c++ -std=c++23 -Wall -Wextra -Werror "$work/api-example/main.cc" -o "$work/api-example-pc" $flags

if [ ! -w /dev/kvm ]; then
  echo "built against the installed package both ways; not booting: /dev/kvm not accessible"
  exit 0
fi
# run_expecting CODE EXE ARGS...: runs EXE, shows its last lines, fails unless it exits
# with CODE; its output is left in $out.
run_expecting() {
  local code=$1 exe=$2 rc
  shift 2
  set +e
  out=$("$exe" "$@" 2>&1)
  rc=$?
  set -e
  echo "$out" | tail -3
  [ "$rc" -eq "$code" ] || { echo "$exe: expected exit code $code, got $rc"; echo "$out"; exit 1; }
}
# expect_lines EXE LINE...: fails unless every LINE is a whole line of $out.
expect_lines() {
  local exe=$1 line
  shift
  for line in "$@"; do
    echo "$out" | grep -qxF -- "$line" || { echo "$exe: no line \"$line\""; echo "$out"; exit 1; }
  done
}

for exe in "$work/cmake-build/boot-guest" "$work/boot-guest-pc"; do
  run_expecting 13 "$exe" "$guest" "skiff.exit=13"
  echo "$out" | grep -q "SKIFF-GUEST cpus-started=2" || { echo "$exe: guest report missing"; exit 1; }
done
# Two VMs in one process: one paused while the other runs, both shut down gracefully.
run_expecting 0 "$work/two-vms-build/two-vms" "$guest"
# docs/api.md's example: refused before the start (ErrorKind::kState), paused, resumed, and
# powered off by the guest on request.
for exe in "$work/api-example-build/api-example" "$work/api-example-pc"; do
  run_expecting 0 "$exe" "$guest" "skiff.action=wait-shutdown"
  expect_lines "$exe" "state: created" "refused: cannot pause: the VM has not been started" "state: paused" \
               "state: running" "state: stopped"
  echo "$out" | grep -q "^guest-poweroff: " || { echo "$exe: the guest did not power off"; echo "$out"; exit 1; }
done
echo "install test passed"
