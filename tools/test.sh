#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every test tier this host can run:
#   tier 1  unit tests (no KVM)
#   tier 2  freestanding guest payloads booted by skiff on /dev/kvm
#   tier 3  real Debian kernels booted by skiff (nested under QEMU TCG here; docs/testing.md)
#   fuzz    each libFuzzer target (clang 16) for a bounded time on its seed corpus
#   asan    tiers 1 and 2 again, built with AddressSanitizer + UndefinedBehaviorSanitizer
#           (build-asan/); SKIFF_SANITIZERS=0 skips it (e.g. for a quick local run).
# Warnings are errors here. Usage (as root): tools/test.sh [extra ctest arguments]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${SKIFF_BUILD_DIR:-$root/build}
"$root/tools/install-deps.sh" --tests
"$root/tools/build.sh" -DSKIFF_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cd "$build_dir"
status=0
# Each stage's ctest output is kept, so that the end of this script's output (all a CI log
# viewer may show) can list what failed in every stage: the ASan stage otherwise buries the
# main stage's failures under a thousand lines of passes.
main_log=$build_dir/test-main.log
ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@" 2>&1 | tee "$main_log" || status=$?

if [ "${SKIFF_SANITIZERS:-1}" != 0 ]; then
  # Any report fails the test it happened in: UBSan stops at the first finding, ASan always
  # does (leaks included). The guest payloads are built with their own flags, untouched.
  # SKIFF_LEAN_LINK=OFF: plain shared fmt/spdlog. Warnings are the main build's business:
  # with the sanitizers GCC 12 reports false maybe-uninitialized warnings inside <regex>.
  # -O1 -g1: about half the compile time of -O2 -g with the sanitizers, and enough for
  # symbolized reports. Only what the two tiers run is built (no examples, fuzzers, benches).
  asan_dir=${SKIFF_ASAN_BUILD_DIR:-$root/build-asan}
  sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
  launcher=()
  if command -v ccache >/dev/null 2>&1; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S "$root" -B "$asan_dir" -G Ninja "${launcher[@]}" -DSKIFF_WERROR=OFF -DCMAKE_BUILD_TYPE= \
    -DSKIFF_LEAN_LINK=OFF -DSKIFF_BUILD_BENCH=OFF -DCMAKE_CXX_FLAGS="$sanitize -O1 -g1" \
    -DCMAKE_EXE_LINKER_FLAGS="$sanitize" -DCMAKE_SHARED_LINKER_FLAGS="$sanitize"
  cmake --build "$asan_dir" -j "$(nproc)" --target skiff_unit_tests skiff_integration_tests skiff_cli
  # Seccomp off: the sanitizer runtimes make system calls of their own in every thread
  # (sigaltstack, reading /proc/self/maps for a report, LeakSanitizer's tracer at exit); the
  # filters are tested by the main stage above.
  SKIFF_SECCOMP=off \
  ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:check_initialization_order=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$asan_dir" --output-on-failure --timeout 900 -j "$(nproc)" -L 'unit|tier2' -LE 'install' 2>&1 |
    tee "$asan_dir/test-asan.log" || status=$?
fi

# summarize STAGE LOG: the stage's verdict and the tests it lists as failed.
summarize() {
  if [ ! -s "$2" ]; then
    echo "  $1: did not run"
  elif grep -q 'The following tests FAILED:' "$2"; then
    echo "  $1: FAILED"
    sed -n '/The following tests FAILED:/,$p' "$2" | sed -n '2,$p' | grep -E '^[[:space:]]+[0-9]+ - ' | sed 's/^[[:space:]]*/    /'
  elif grep -qE '^100% tests passed' "$2"; then
    echo "  $1: $(grep -E '^100% tests passed' "$2" | tail -n1)"
  else
    echo "  $1: no verdict from ctest (see $2)"
  fi
}
echo
echo "=== tools/test.sh summary (exit $status)"
summarize "main stage (unit, tier2, tier3, fuzz)" "$main_log"
if [ "${SKIFF_SANITIZERS:-1}" != 0 ]; then
  summarize "asan+ubsan stage (unit, tier2)" "$asan_dir/test-asan.log"
fi
# A failed tier-3 run: its own summary says which scenario and why.
if grep -qE '^[[:space:]]+[0-9]+ - tier3\.' "$main_log" 2>/dev/null; then
  echo "  tier-3 run:"
  sed -n '/^=== tier-3 summary/,/^tier3: /p' "$main_log" | sed 's/^/    /'
fi
exit "$status"
