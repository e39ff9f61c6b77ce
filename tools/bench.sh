#!/usr/bin/env bash
# Every benchmark in one command: start-up/exit/memory at 256 MiB, 4 GiB and 16 GiB, virtio-blk
# and virtio-net with a spare CPU and with the whole VMM on one CPU, virtio-balloon; each
# beside QEMU (and host fio) in the same run. Writes one JSON file and one Markdown report
# (bench.json, bench.md) with the commit, host, CPU count, load average and date, and with
# --update-docs rewrites the results part of docs/benchmarks.md from them.
#
# Usage (as root: the net benchmark makes a tap in a network namespace):
#   tools/bench.sh [--smoke] [--out DIR] [--build-dir DIR] [--no-build] [--update-docs]
#                  [--only startup,blk,net,balloon] [--runs N]
# --smoke: tiny counts and one run of each, to check that every benchmark works and produces
#          its table (the CI test bench.smoke runs this); its figures mean nothing.
# Exit code: 0 when every benchmark ran and produced its table (targets met or not), 1 when
# one failed, 2 for bad arguments, 77 when the host cannot run them (no /dev/kvm or QEMU).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$root/build
out=""
smoke=0
build=1
update_docs=0
only="startup,blk,net,balloon"
runs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) out=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    --no-build) build=0 ;;
    --update-docs) update_docs=1 ;;
    --only) only=$2; shift ;;
    --runs) runs=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tools/bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for b in ${only//,/ }; do
  case "$b" in startup|blk|net|balloon) ;; *) echo "tools/bench.sh: --only: unknown benchmark '$b'" >&2; exit 2 ;; esac
done
want() { [[ ",$only," == *",$1,"* ]]; }

if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
  echo "tools/bench.sh: /dev/kvm is missing or not usable by $(id -un): the benchmarks boot VMs" >&2
  exit 77
fi
qemu=$(command -v qemu-system-x86_64 || true)
if [ -z "$qemu" ]; then
  echo "tools/bench.sh: qemu-system-x86_64 not found (Debian: apt-get install qemu-system-x86): every figure is beside QEMU's" >&2
  exit 77
fi
fio=$(command -v fio || echo fio)

if [ "$build" = 1 ]; then
  if [ ! -f "$build_dir/build.ninja" ] && [ ! -f "$build_dir/Makefile" ]; then
    SKIFF_BUILD_DIR=$build_dir "$root/tools/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  fi
  cmake --build "$build_dir" --target skiff_cli skiff_test_guest skiff_bench_startup skiff_bench_blk \
    skiff_bench_net skiff_bench_balloon
fi
skiff=$build_dir/skiff
guest=$build_dir/tests/guest/skiff-test-guest.elf
for f in "$skiff" "$guest" "$build_dir/bench/skiff_bench_startup"; do
  [ -e "$f" ] || { echo "tools/bench.sh: $f is missing: build first (or drop --no-build)" >&2; exit 2; }
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${out:-$build_dir/bench/results-$stamp}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The one-CPU placement: the last CPU this process may use (CPU 0 takes most interrupts).
last_cpu=$(python3 -c 'import os; print(max(os.sched_getaffinity(0)))')
placements=(spare one-cpu)
cpus_of() { [ "$1" = one-cpu ] && echo "--cpus $last_cpu" || true; }

if [ "$smoke" = 1 ]; then
  memories=(256)
  startup_args=(--runs 1 --warmup 0 --settle-ms 20)
  blk_args=(--runs 1 --count-qd1 200 --count-qd32 1000 --count-seq 50 --file-mib 16 --fio-seconds 1)
  net_args=(--runs 1 --tests tx64 --tests rx64 --count-small 500)
  balloon_args=(--runs 1 --region-mib 64 --inflate-mib 32)
else
  memories=(256 4096 16384)
  startup_args=(--runs "${runs:-10}")
  blk_args=(--runs "${runs:-3}")
  net_args=(--runs "${runs:-3}")
  balloon_args=(--runs "${runs:-3}")
fi

benchmarks=()
failed=()
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# run NAME COMMAND...: output to NAME.txt beside the JSON; a failure is recorded, not fatal.
run() {
  local name=$1
  shift
  echo "=== $name: $*" >&2
  local rc=0
  "$@" >"$out/$name.txt" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    failed+=("$name")
    echo "=== $name FAILED (exit $rc); the end of $out/$name.txt:" >&2
    tail -n 15 "$out/$name.txt" >&2
  fi
}

if want startup; then
  benchmarks+=(startup)
  for m in "${memories[@]}"; do
    run "startup-$m" "$build_dir/bench/skiff_bench_startup" --skiff "$skiff" --qemu "$qemu" --guest "$guest" \
      --memory-mib "$m" --json "$out/startup-$m.json" "${startup_args[@]}"
  done
fi
if want blk; then
  benchmarks+=(blk)
  for p in "${placements[@]}"; do
    # shellcheck disable=SC2046
    run "blk-$p" "$build_dir/bench/skiff_bench_blk" --skiff "$skiff" --qemu "$qemu" --fio "$fio" --guest "$guest" \
      --json "$out/blk-$p.json" $(cpus_of "$p") "${blk_args[@]}"
  done
fi
if want net; then
  if [ "$(id -u)" != 0 ]; then
    echo "=== net: skipped: it needs root for its tap and network namespace" >&2
  else
    benchmarks+=(net)
    for p in "${placements[@]}"; do
      # shellcheck disable=SC2046
      run "net-$p" "$build_dir/bench/skiff_bench_net" --skiff "$skiff" --qemu "$qemu" --guest "$guest" \
        --json "$out/net-$p.json" $(cpus_of "$p") "${net_args[@]}"
    done
  fi
fi
if want balloon; then
  benchmarks+=(balloon)
  run balloon "$build_dir/bench/skiff_bench_balloon" --skiff "$skiff" --qemu "$qemu" --guest "$guest" \
    --json "$out/balloon.json" "${balloon_args[@]}"
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

commit=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
python3 - "$out/meta.json" <<EOF
import json, os, platform, sys
cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
meta = {
    "command": "tools/bench.sh" + (" --smoke" if $smoke else ""),
    "smoke": bool($smoke),
    "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
    "commit": "$commit",
    "host": f"Linux {platform.release()}, {cpu}",
    "cpus": os.cpu_count(),
    "load_before": "$load_before",
    "load_after": "$load_after",
    "qemu": """$("$qemu" --version | head -n1)""",
    "fio": """$("$fio" --version 2>/dev/null || echo 'not installed')""",
    "benchmarks": "${benchmarks[*]}".split(),
    "failed": "${failed[*]}".split(),
    "startup_memory_mib": [int(m) for m in "${memories[*]}".split()],
    "placements": "${placements[*]}".split(),
    "one_cpu": $last_cpu,
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF

report_args=("$out")
[ "$update_docs" = 1 ] && report_args+=(--update-docs "$root/docs/benchmarks.md")
status=0
python3 "$root/tools/bench_report.py" "${report_args[@]}" || status=$?
echo "tools/bench.sh: results in $out (bench.json, bench.md, one .txt per benchmark)" >&2
exit "$status"
