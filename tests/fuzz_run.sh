#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang >= 16) and runs each for a bounded time on its
# checked-in seed corpus (fuzz/corpus/<target>/). A crash, leak, timeout or sanitizer finding
# fails, naming the target and the reproducer; no clang 16 → skip (77).
# Usage: fuzz_run.sh SOURCE_DIR WORK_DIR SECONDS_PER_TARGET
set -euo pipefail
source_dir=$1 work=$2 seconds=$3
targets=(virtqueue blk_request net balloon pci_config kernel_loader spec state vsock)
clangxx=$(command -v clang++-16 || true)
if [ -z "$clangxx" ]; then
  echo "SKIP: clang++-16 not installed (tools/install-deps.sh installs clang-16 and libclang-rt-16-dev)"
  exit 77
fi
launcher=()  # ccache where the machine has it (repeated runs on one machine)
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$source_dir/fuzz" -B "$work" -G Ninja "${launcher[@]}" -DCMAKE_CXX_COMPILER="$clangxx" > "$work.configure.log" 2>&1 ||
  { cat "$work.configure.log"; exit 1; }
cmake --build "$work" > "$work.build.log" 2>&1 || { tail -50 "$work.build.log"; exit 1; }
failed=()
for target in "${targets[@]}"; do
  corpus=$work/corpus-$target
  artifacts=$work/artifacts-$target/
  mkdir -p "$corpus" "$artifacts"
  echo "fuzzing $target for ${seconds}s"
  status=0
  # -timeout: one input taking longer than 25 s is a hang (a finding); -rss_limit_mb: the
  # default 2 GiB, stated so a leak that grows is reported the same way everywhere.
  (cd "$work" && "./${target}_fuzzer" -max_total_time="$seconds" -print_final_stats=1 -timeout=25 \
      -rss_limit_mb=2048 -artifact_prefix="$artifacts" "$corpus" "$source_dir/fuzz/corpus/$target") \
      > "$work/$target.log" 2>&1 || status=$?
  tail -8 "$work/$target.log"
  if [ "$status" -ne 0 ]; then
    reproducers=$(ls "$artifacts" 2>/dev/null | sed "s|^|$artifacts|" | tr '\n' ' ')
    echo "$target: the fuzzer found a problem (exit $status): reproducer ${reproducers:-none written}; log $work/$target.log"
    echo "replay: $work/${target}_fuzzer <reproducer>   (SKIFF_FUZZ_VERBOSE=1 for the log lines)"
    failed+=("$target")
  fi
done
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzzing failed: ${failed[*]}"
  exit 1
fi
echo "fuzzing passed: ${targets[*]}"
