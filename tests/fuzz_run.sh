#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang >= 16) and runs each for a bounded time on its
# checked-in seed corpus. A crash, leak or sanitizer finding fails; no clang 16 → skip (77).
# Usage: fuzz_run.sh SOURCE_DIR WORK_DIR SECONDS
set -euo pipefail
source_dir=$1 work=$2 seconds=$3
clangxx=$(command -v clang++-16 || true)
if [ -z "$clangxx" ]; then
  echo "SKIP: clang++-16 not installed (tools/install-deps.sh installs clang-16 and libclang-rt-16-dev)"
  exit 77
fi
cmake -S "$source_dir/fuzz" -B "$work" -G Ninja -DCMAKE_CXX_COMPILER="$clangxx" > "$work.configure.log" 2>&1 ||
  { cat "$work.configure.log"; exit 1; }
cmake --build "$work" > "$work.build.log" 2>&1 || { tail -50 "$work.build.log"; exit 1; }
for target in virtqueue; do
  corpus=$work/corpus-$target
  mkdir -p "$corpus"
  echo "fuzzing $target for ${seconds}s"
  status=0
  (cd "$work" && "./${target}_fuzzer" -max_total_time="$seconds" -print_final_stats=1 \
      "$corpus" "$source_dir/fuzz/corpus/$target") > "$work/$target.log" 2>&1 || status=$?
  tail -15 "$work/$target.log"
  [ "$status" -eq 0 ] || { echo "$target: the fuzzer found a problem (exit $status): see $work/crash-*"; exit 1; }
done
echo "fuzzing passed"
