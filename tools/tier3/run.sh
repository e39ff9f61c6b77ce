#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Tier-3 tests: skiff boots real Debian kernels.
#
# On hosts whose /dev/kvm cannot run a stock kernel (the paravirtual kvm_pvm of our build
# machines emulates guest ring 0; see /work/shared/ENVIRONMENT.md and docs/testing.md),
# skiff runs nested: QEMU's TCG emulates an AMD CPU with SVM and nested paging, a Debian
# cloud kernel boots in it from an initramfs, loads kvm-amd, and runs skiff once per
# scenario. On a host with real VT-x/AMD-V the scenarios run directly.
#
# Usage: tools/tier3/run.sh [options]
#   --skiff BIN            skiff binary (default: build/skiff next to this checkout)
#   --cache DIR            kernel download cache (default: <dir of skiff>/tier3-cache)
#   --work DIR             initramfs images and logs (default: <dir of skiff>/tier3-work)
#   --scenarios LIST       comma-separated: boot1,boot2,reboot,panic,pvpanic,timeout,generic,
#                          virtio-mmio,virtio-pci,virtio-pci-intx,virtio-blk,virtio-net,virtio-balloon,
#                          virtio-vsock
#                          (default: boot1,boot2,reboot,panic)
#   --mode auto|nested|direct   (default auto: direct only with real VT-x/AMD-V)
#   --timeout SECONDS      wall limit of the whole run (default 1200)
#   --boot-timeout S       nested: limit for the outer VM to reach its /init (default 180)
#   --scenario-timeout S   limit of one skiff run (default 240)
#   --inner-extra "WORDS"  extra words for the inner kernel's command line (debugging)
#   --workarounds "WORDS"  replace the inner command-line workarounds for known skiff bugs
#                          (scenarios.sh has the default); "none" runs without any
#   --smp N                outer VM's vCPUs (default 2)
#   --outer-extra "WORDS"  nested: extra words for the outer kernel's command line
#   --seccomp MODE         skiff's --seccomp for every scenario: enforce|log|off (default:
#                          skiff's own, enforce)
# Environment: QEMU=<binary> instead of qemu-system-x86_64; TIER3_TSC_KHZ=<kHz>|none for
#   the outer kernel's tsc_early_khz= (default: the host's "cpu MHz" with a constant TSC).
# Exit: 0 every scenario passed, 1 something failed, 77 skipped (no QEMU for the nested
# mode, or the kernel package could not be downloaded), 2 usage. virtio-vsock needs socat
# (tools/install-deps.sh --tests): without it that scenario fails with missing=socat and
# the others still run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

skiff=$root/build/skiff
cache=''
work=''
scenarios=boot1,boot2,reboot,panic
mode=auto
total_timeout=1200
boot_timeout=180
scenario_timeout=240
inner_extra=
workarounds=
smp=2
seccomp=
outer_extra=
qemu_bin=${QEMU:-qemu-system-x86_64}
while [ $# -gt 0 ]; do
  case "$1" in
    --skiff) skiff=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --timeout) total_timeout=$2; shift 2 ;;
    --boot-timeout) boot_timeout=$2; shift 2 ;;
    --scenario-timeout) scenario_timeout=$2; shift 2 ;;
    --inner-extra) inner_extra=$2; shift 2 ;;
    --workarounds) workarounds=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --seccomp) seccomp=$2; shift 2 ;;
    --outer-extra) outer_extra=$2; shift 2 ;;
    -h|--help) sed -n '3,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "run.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done

log() { echo "tier3: $*" >&2; }
skip() { echo "tier3: SKIP: $*" >&2; exit 77; }
fail() { echo "tier3: FAIL: $*" >&2; exit 1; }

[ -x "$skiff" ] || fail "skiff binary '$skiff' not found or not executable (build it, or pass --skiff)"
skiff=$(cd "$(dirname "$skiff")" && pwd)/$(basename "$skiff")
build_dir=$(dirname "$skiff")
cache=${cache:-$build_dir/tier3-cache}
work=${work:-$build_dir/tier3-work}
mkdir -p "$cache" "$work"
# One run per work directory: two would write the same images and console log, and two
# TCG VMs on a 2-core machine also distort every timing.
exec 9>"$work/.lock"
if ! flock -n 9; then
  log "another tier-3 run is using $work; waiting for it"
  flock 9
fi

# Which way: nested under QEMU, or directly on this host's /dev/kvm.
if [ "$mode" = auto ]; then
  if grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ] && [ -c /dev/kvm ]; then
    mode=direct
  else
    mode=nested
  fi
fi
case "$mode" in nested|direct) ;; *) echo "run.sh: --mode must be auto, nested or direct" >&2; exit 2 ;; esac
case "$seccomp" in ''|enforce|log|off) ;; *) echo "run.sh: --seccomp must be enforce, log or off" >&2; exit 2 ;; esac
log "mode: $mode ($( [ "$mode" = nested ] && echo 'skiff inside a QEMU TCG VM with emulated AMD SVM' || echo 'skiff on this host'\''s /dev/kvm'))"

if [ "$mode" = nested ]; then
  command -v "$qemu_bin" >/dev/null ||
    skip "$qemu_bin is not installed (tools/install-deps.sh --tier3); nested tier-3 tests need it"
fi
for tool in busybox cpio gzip; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (tools/install-deps.sh --tier3)"
done

# Kernels: the cloud flavour always; the generic flavour only for the `generic` scenario.
fetch() {
  local out rc=0
  out=$("$here/fetch-kernel.sh" "$@" "$cache") || rc=$?
  if [ "$rc" -eq 3 ]; then
    skip "the Debian kernel package could not be resolved or downloaded (fetch-kernel.sh $*)"
  elif [ "$rc" -ne 0 ]; then
    fail "fetch-kernel.sh $* failed with exit code $rc"
  fi
  echo "$out"
}
t0=$(date +%s)
cloud=$(fetch --flavour cloud)
cloud_vmlinuz=$(sed -n 's/^VMLINUZ=//p' <<<"$cloud")
cloud_modules=$(sed -n 's/^MODULES=//p' <<<"$cloud")
generic_vmlinuz=
if [[ ",$scenarios," == *",generic,"* ]]; then
  generic=$(fetch --flavour generic)
  generic_vmlinuz=$(sed -n 's/^VMLINUZ=//p' <<<"$generic")
fi
log "kernel: $cloud_vmlinuz${generic_vmlinuz:+ and $generic_vmlinuz}"

# The inner initramfs carries the cloud kernel's virtio modules (=m in Debian's kernels).
"$here/make-initramfs.sh" inner "$work/inner.cpio.gz" --modules "$cloud_modules"
# virtio-vsock's guest runs socat (with its shared libraries, ~4 MB gzipped): a second inner
# image, so that the other scenarios keep booting the small one. socat is also the host end.
socat_bin=
vsock_initrd=
rm -f "$work/inner-vsock.cpio.gz"
if [[ ",$scenarios," == *",virtio-vsock,"* ]]; then
  socat_bin=$(command -v socat || true)
  if [ -n "$socat_bin" ]; then
    vsock_initrd=$work/inner-vsock.cpio.gz
    "$here/make-initramfs.sh" inner "$vsock_initrd" --modules "$cloud_modules" --socat "$socat_bin"
  else
    log "ERROR: socat is not installed (apt-get install socat, or tools/install-deps.sh --tests): the virtio-vsock scenario will fail (missing=socat)"
  fi
fi

console_log=$work/console.log
: > "$console_log"
outer_logs=("$console_log")
deaths=()
run_rc=0
start=$(date +%s)
if [ "$mode" = nested ]; then
  # A plain (uncompressed) cpio: TCG unpacks it faster than it inflates gzip.
  "$here/make-initramfs.sh" outer "$work/outer.cpio" --skiff "$skiff" --modules "$cloud_modules" \
    --inner-kernel "$cloud_vmlinuz" --inner-initrd "$work/inner.cpio.gz" \
    ${generic_vmlinuz:+--generic-kernel "$generic_vmlinuz"} --inner-extra "$inner_extra" \
    --workarounds "$workarounds" ${vsock_initrd:+--socat "$socat_bin" --vsock-initrd "$vsock_initrd"}
  # The outer kernel calibrates its TSC against QEMU's PIT. Under TCG on a busy 2-core host
  # that fails ("tsc: Unable to calibrate against PIT", "No reference (HPET/PMTIMER)
  # available": microvm has neither) and the outer kernel then hangs before /init (0 of 3
  # boots with three CPU hogs beside it). TCG's rdtsc returns the host's TSC, so hand the
  # host's TSC frequency over (4 of 4 boots under the same load). Hosts with a constant TSC
  # show it as "cpu MHz" in /proc/cpuinfo; TIER3_TSC_KHZ overrides, "none" leaves it out.
  tsc_khz=${TIER3_TSC_KHZ:-}
  if [ -z "$tsc_khz" ] && grep -qw constant_tsc /proc/cpuinfo; then
    tsc_khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
  fi
  [ "$tsc_khz" = none ] && tsc_khz=
  # -M microvm: no firmware, no PCI; the bzImage boots directly; ISA serial on ttyS0.
  # x-option-roms=off and rtc=off as measured in ENVIRONMENT.md. -cpu EPYC,+svm,+npt gives the
  # outer kernel AMD-V with nested paging for kvm-amd. -no-reboot: a reset ends QEMU.
  # The outer kernel's boot log stays on (no `quiet`): a few hundred lines, and the only
  # clue when the outer VM itself gets stuck.
  #
  # run_outer SCENARIOS LOG SECONDS: runs the comma-separated scenarios in a new outer VM, its
  # console to LOG, for at most SECONDS; sets run_rc.
  run_outer() {
    local launched
    launched=$(date +%s)
    # shellcheck disable=SC2054  # the commas belong to QEMU option values
    qemu=("$qemu_bin" -M microvm,x-option-roms=off,rtc=off -accel tcg,thread=multi
          -cpu EPYC,+svm,+npt -m 2048 -smp "$smp" -nographic -no-reboot
          -pidfile "$work/qemu.pid"
          -kernel "$cloud_vmlinuz" -initrd "$work/outer.cpio"
          -append "console=ttyS0 panic=-1${tsc_khz:+ tsc_early_khz=$tsc_khz} tier3.scenarios=$1 tier3.timeout=$scenario_timeout${seccomp:+ tier3.seccomp=$seccomp}${outer_extra:+ $outer_extra}")
    log "running: ${qemu[*]}"
    rm -f "$work/qemu.pid" "$work/qemu.rc" "$work/boot-timeout" "$work/silent"
    : > "$2"
    (
      rc=0
      timeout -s TERM -k 10 "$3" "${qemu[@]}" </dev/null >"$2" 2>&1 || rc=$?
      echo "$rc" > "$work/qemu.rc"
    ) &
    runner=$!
    tail -n +1 -f --pid="$runner" "$2" &
    tailer=$!
    # Watchdogs, so that a stuck outer VM costs minutes, not the wall limit:
    # - it must reach its /init within --boot-timeout;
    # - once up, its console must not stay silent for longer than a scenario may last
    #   (--scenario-timeout, after which skiff's own --timeout speaks) plus a minute. The
    #   outer VM has been seen to wedge at a skiff start, printing nothing more, neither the
    #   inner kernel's first line nor a soft-lockup warning of its own.
    booted=0
    silence_limit=$((scenario_timeout + 60))
    last_size=-1
    last_change=$(date +%s)
    while kill -0 "$runner" 2>/dev/null; do
      now=$(date +%s)
      if [ "$booted" -eq 0 ]; then
        if grep -aq '^TIER3-OUTER-UP' "$2"; then
          booted=1
        elif [ $((now - launched)) -ge "$boot_timeout" ] && [ -s "$work/qemu.pid" ]; then
          touch "$work/boot-timeout"
          kill "$(cat "$work/qemu.pid")" 2>/dev/null || true
          booted=2
        fi
      elif [ "$booted" -eq 1 ]; then
        size=$(stat -c %s "$2" 2>/dev/null || echo 0)
        if [ "$size" != "$last_size" ]; then
          last_size=$size
          last_change=$now
        elif [ $((now - last_change)) -ge "$silence_limit" ] && [ -s "$work/qemu.pid" ]; then
          echo "$silence_limit" > "$work/silent"
          kill "$(cat "$work/qemu.pid")" 2>/dev/null || true
          booted=2
        fi
      fi
      sleep 1
    done
    wait "$runner" || true
    wait "$tailer" 2>/dev/null || true
    run_rc=$(cat "$work/qemu.rc" 2>/dev/null || echo 1)
  }
  # The outer kernel itself (QEMU's emulated AMD-V under TCG) has been seen to panic ("TASK
  # stack guard page was hit" in a skiff-vcpu thread), to reset silently, or to hang (the
  # silence watchdog above stops it), taking the
  # scenarios left with it (docs/testing.md). The scenarios without a result run again in a
  # new outer VM, up to twice, and the summary says so; a third death fails the run. A
  # scenario that kills its outer VM every time therefore still fails.
  pending=$scenarios
  attempt=1
  max_outer=3
  while :; do
    log_now=${outer_logs[${#outer_logs[@]}-1]}
    remaining=$((total_timeout - ($(date +%s) - start)))
    if [ "$remaining" -lt 60 ]; then
      run_rc=124
      break
    fi
    run_outer "$pending" "$log_now" "$remaining"
    missing=
    for name in $(tr ',' ' ' <<<"$pending"); do
      tr -d '\r' < "$log_now" | grep -aq "^TIER3-RESULT name=$name " || missing="$missing${missing:+,}$name"
    done
    # The outer VM died when it never printed TIER3-OUTER-END (its /init's last line) although
    # it booted and the wall limit was not hit: a panic, or a reset/triple fault (QEMU exits 0
    # under -no-reboot, without a word).
    outer_death=
    if ! tr -d '\r' < "$log_now" | grep -aq '^TIER3-OUTER-END' && [ ! -e "$work/boot-timeout" ] &&
      [ "$run_rc" -ne 124 ] && [ "$run_rc" -ne 137 ]; then
      outer_death=$(tr -d '\r' < "$log_now" | grep -aE '^\[ *[0-9]+\.[0-9]+\] Kernel panic' | head -n1 || true)
      outer_death=${outer_death:-"it stopped without a panic message (reset or triple fault)"}
      if [ -e "$work/silent" ]; then
        outer_death="it printed nothing for $(cat "$work/silent") s and was stopped (hung)"
      fi
    fi
    [ -n "$missing" ] && [ -n "$outer_death" ] || break
    deaths+=("outer VM $attempt died (${outer_death#*] }) with $missing left: $log_now")
    [ "$attempt" -lt "$max_outer" ] || break
    attempt=$((attempt + 1))
    log "the outer VM died (${outer_death#*] }); running $missing again in a new outer VM ($attempt of $max_outer)"
    outer_logs+=("$work/console-retry$((attempt - 1)).log")
    pending=$missing
  done
else
  read -r -a scenario_list <<<"$(tr ',' ' ' <<<"$scenarios")"
  if [ -n "$seccomp" ]; then export SKIFF_SECCOMP=$seccomp; fi
  SKIFF=$skiff INNER_KERNEL=$cloud_vmlinuz INNER_INITRD=$work/inner.cpio.gz \
    GENERIC_KERNEL=$generic_vmlinuz INNER_EXTRA=$inner_extra WORKAROUNDS=$workarounds SCENARIO_TIMEOUT=$scenario_timeout \
    SOCAT=$socat_bin INNER_INITRD_VSOCK=$vsock_initrd \
    LOG_DIR=$work/logs \
    timeout -s TERM -k 10 "$total_timeout" sh "$here/scenarios.sh" "${scenario_list[@]}" \
    2>&1 | tee "$console_log" || run_rc=$?
fi
end=$(date +%s)

# Summary: every requested scenario must have reported PASS.
echo
echo "=== tier-3 summary ($mode, $((end - start)) s run, $((end - t0)) s with preparation; console: $console_log)"
ok=1
for death in "${deaths[@]}"; do
  echo "  ($death)"
done
for name in $(tr ',' ' ' <<<"$scenarios"); do
  line=$(cat "${outer_logs[@]}" | tr -d '\r' | grep -a "^TIER3-RESULT name=$name " | tail -n1 || true)
  if [ -z "$line" ]; then
    echo "  $name: no result (the run did not get that far: timeout or crash; see the console log)"
    ok=0
  else
    echo "  ${line#TIER3-RESULT }"
    [[ "$line" == *" status=PASS"* ]] || ok=0
  fi
done
# The outer VM's own failures (no SVM, insmod, no /dev/kvm).
while IFS= read -r line; do
  echo "  outer VM: ${line#TIER3-OUTER-ERROR }"
  ok=0
done < <(cat "${outer_logs[@]}" | tr -d '\r' | grep -a '^TIER3-OUTER-ERROR' || true)
if [ -e "$work/boot-timeout" ]; then
  echo "  the outer VM did not reach its /init within ${boot_timeout}s (see the console log)"
  ok=0
fi
if [ "$run_rc" -eq 124 ] || [ "$run_rc" -eq 137 ]; then
  echo "  the whole run hit the ${total_timeout}s wall limit"
  ok=0
fi
if [ "$ok" -eq 1 ]; then
  echo "tier3: PASS"
  exit 0
fi
echo "tier3: FAIL"
exit 1
