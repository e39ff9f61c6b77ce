#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Tier-3 scenario runner: boots real Linux kernels with skiff, one skiff run per scenario,
# and checks each run's exit code and console markers.
#
# Runs in two places, so it is plain POSIX sh (busybox ash and bash both run it):
#   - inside the outer QEMU VM, called by the outer initramfs's /init (nested case);
#   - directly on a host with real VT-x/AMD-V, called by tools/tier3/run.sh.
#
# Usage: scenarios.sh SCENARIO...   (boot1 boot2 reboot panic pvpanic timeout generic virtio-mmio
#                                    virtio-pci virtio-pci-intx virtio-blk virtio-net virtio-balloon
#                                    virtio-vsock)
# Environment:
#   SKIFF            skiff binary                                   (required)
#   INNER_KERNEL     cloud kernel bzImage for the inner guest       (required)
#   INNER_INITRD     inner initramfs (make-initramfs.sh inner)      (required)
#   GENERIC_KERNEL   generic-flavour bzImage (scenario `generic`)   (optional)
#   INNER_MEMORY     guest RAM per run, default 256M
#   INNER_EXTRA      extra inner kernel command-line words (debugging, e.g. tier3.debug=1)
#   WORKAROUNDS      inner kernel command-line words that work around known skiff bugs;
#                    none today (the IOAPIC timer routing bug that needed `noapic` is fixed)
#   SCENARIO_TIMEOUT seconds before skiff stops a run itself (`skiff run --timeout`, exit
#                    124), default 240; a `timeout` 30 s later sends SIGTERM to a skiff that
#                    hangs, and SIGKILL 20 s after that (exit 137)
#   HANG_TIMEOUT     skiff's --timeout in the `timeout` scenario (a guest that hangs after
#                    reaching /init), default 45
#   LOG_DIR          where each run's console log goes, default /tmp/tier3-logs
#   PANIC_RC         exit code expected from the panic scenarios, default 72 (skiff's guest
#                    panic code: the console banner, or the pvpanic device)
#   LOSETUP          a losetup that has -b/--sector-size (util-linux), for virtio-blk's
#                    4 KiB-sector loop device; default: `losetup` on PATH if it has -b
#   DISK_DIR         where virtio-blk's images go, default LOG_DIR (tmpfs in the outer VM)
#   SOCAT            socat on this side, the host end of virtio-vsock's connections
#                    (default: `socat` on PATH)
#   INNER_INITRD_VSOCK  the inner initramfs with the guest's socat (make-initramfs.sh inner
#                    --socat) for virtio-vsock; without it or SOCAT that scenario fails
#                    with missing=socat
#
# Output: each run's console and skiff's log lines prefixed with "[name] ", then one line
#   TIER3-RESULT name=<scenario> rc=<code> seconds=<wall> expect_rc=<code> status=PASS|FAIL
#                [missing=<marker>,...] [timed_out=yes] [first_console_ms=N verdict_ms=N]
# (the two timings from skiff's own "timings:" line, measured from the VM's start).
# and at the end `TIER3-DONE passed=N failed=M`. Exit status: 0 when every scenario passed.

: "${SKIFF:?SKIFF is not set}"
: "${INNER_KERNEL:?INNER_KERNEL is not set}"
: "${INNER_INITRD:?INNER_INITRD is not set}"
INNER_MEMORY=${INNER_MEMORY:-256M}
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-240}
HANG_TIMEOUT=${HANG_TIMEOUT:-45}
LOG_DIR=${LOG_DIR:-/tmp/tier3-logs}
PANIC_RC=${PANIC_RC:-72}
INNER_EXTRA=${INNER_EXTRA:-}
# Kernel command-line workarounds for skiff bugs: none needed today (docs/testing.md).
WORKAROUNDS=${WORKAROUNDS:-}
# Under two levels of emulation (QEMU TCG emulating SVM) a guest very occasionally
# triple-faults in early SMP boot (seen once in about 20 boot2 runs; never on the rerun).
# A run that ends with skiff's guest-crash code (71) is tried once more and both results
# are printed (TIER3-RETRY), so a real regression, which crashes every time, still fails.
RETRY_GUEST_CRASH=${RETRY_GUEST_CRASH:-1}
[ "$WORKAROUNDS" = none ] && WORKAROUNDS=
mkdir -p "$LOG_DIR"
DISK_DIR=${DISK_DIR:-$LOG_DIR}
if [ -z "${LOSETUP:-}" ] && command -v losetup >/dev/null 2>&1 &&
   losetup --help 2>&1 | grep -- --sector-size >/dev/null; then
  LOSETUP=losetup
fi
LOSETUP=${LOSETUP:-}
if [ -z "${SOCAT:-}" ] && command -v socat >/dev/null 2>&1; then
  SOCAT=$(command -v socat)
fi
SOCAT=${SOCAT:-}
INNER_INITRD_VSOCK=${INNER_INITRD_VSOCK:-}

# Seconds since boot with centiseconds, from /proc/uptime (busybox date has no %N).
now() { cut -d' ' -f1 /proc/uptime; }

passed=0
failed=0
spec_file=
run_timeout=
# run_initrd=FILE: the inner initramfs of one scenario, instead of INNER_INITRD.
run_initrd=
# Per-scenario hooks (function names), run around every attempt: pre_run before skiff starts
# (fresh disk images), post_run after it ended, its output added to the log before the
# markers are checked (host-side checks of what the guest did).
pre_run=
post_run=
# net_tap=NAME: skiff runs in a network namespace of its own (`unshare -n`) where, once
# skiff has created tap NAME, it gets $net_host_addr and is brought up.
net_tap=
net_host_addr=

# run_one NAME KERNEL VCPUS ACTION EXPECT_RC MARKER...
#   MARKER: a fixed string that must appear in the run's output (console + skiff log).
run_one() {
  attempt "$@"
  if [ "$status" = FAIL ] && [ "$rc" = 71 ] && [ "$expect_rc" != 71 ] && [ "$RETRY_GUEST_CRASH" = 1 ]; then
    echo "TIER3-RETRY name=$1 first_rc=$rc reason=guest-crash (see $LOG_DIR/$1.first.log)"
    cp "$LOG_DIR/$1.log" "$LOG_DIR/$1.first.log"
    attempt "$@"
  fi
  if [ "$status" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  echo "TIER3-RESULT name=$name rc=$rc seconds=$seconds expect_rc=$expect_rc status=$status${missing:+ missing=$missing}$timed_out$timings"
}

# One run; leaves status, rc, seconds, missing and timed_out set.
attempt() {
  name=$1 kernel=$2 vcpus=$3 action=$4 expect_rc=$5
  shift 5
  log=$LOG_DIR/$name.log
  : > "$log"
  # panic=-1: reboot at once on a panic (the panic scenario relies on it; elsewhere it turns
  # an unexpected panic into a quick exit instead of a hang).
  cmdline="console=ttyS0 panic=-1 tier3.action=$action${WORKAROUNDS:+ $WORKAROUNDS}${INNER_EXTRA:+ $INNER_EXTRA}"
  echo "TIER3-RUN name=$name vcpus=$vcpus memory=$INNER_MEMORY kernel=${kernel##*/} cmdline=\"$cmdline\""
  limit=${run_timeout:-$SCENARIO_TIMEOUT}
  # Not in a pipeline: the hooks set variables (a subshell would lose them).
  if [ -n "$pre_run" ]; then
    "$pre_run" > "$log.hook" 2>&1
    cat "$log.hook" >> "$log"
    sed "s/^/[$name] /" "$log.hook"
  fi
  start=$(now)
  # stdin from /dev/null: skiff must not take the outer console as interactive input.
  # awk streams the output live (prefixed) and keeps an unprefixed copy for the checks.
  # skiff's --timeout ends a stuck guest (exit 124); the outer `timeout` only catches a
  # skiff that does not end itself, and -k kills one that does not end on SIGTERM either
  # (seen once: a skiff hung in its teardown), so that the post_run hook and the next
  # scenarios still run instead of the outer VM's silence watchdog ending them all.
  {
    launch timeout -s TERM -k 20 $((limit + 30)) "$SKIFF" run ${spec_file:+"$spec_file"} --kernel "$kernel" --initrd "${run_initrd:-$INNER_INITRD}" \
      --cmdline "$cmdline" --vcpus "$vcpus" --memory "$INNER_MEMORY" --timeout "$limit" </dev/null 2>&1
    echo "$?" > "$LOG_DIR/$name.rc"
  } | awk -v prefix="[$name] " -v logfile="$log" '{ sub(/\r$/, ""); print prefix $0; print $0 >> logfile; fflush() }'
  end=$(now)
  rc=$(cat "$LOG_DIR/$name.rc" 2>/dev/null || echo "?")
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  if [ -n "$post_run" ]; then
    "$post_run" > "$log.hook" 2>&1
    cat "$log.hook" >> "$log"
    sed "s/^/[$name] /" "$log.hook"
  fi

  missing=
  for marker in "$@"; do
    grep -qF -- "$marker" "$log" || missing="$missing${missing:+,}$(echo "$marker" | tr ' ' '_')"
  done
  if [ "$rc" = "$expect_rc" ] && [ -z "$missing" ]; then
    status=PASS
  else
    status=FAIL
  fi
  # 124: skiff's --timeout ended the run; a run as long as the outer limit was killed.
  timed_out=
  if [ "$rc" = 124 ] || awk -v s="$seconds" -v t="$((limit + 30))" 'BEGIN { exit !(s + 0.5 >= t) }'; then
    timed_out=" timed_out=yes"
  fi
  # skiff's one-line boot timings: "timings: first console output after X ms, verdict after Y ms ..."
  timings=$(sed -n 's/.*timings: first console output after \([0-9.]*\) ms, verdict after \([0-9.]*\) ms.*/ first_console_ms=\1 verdict_ms=\2/p' "$log" | tail -n1)
}

# Runs "$@" (the skiff command), in a network namespace of its own when net_tap is set.
# busybox has no `ip netns` and no `ip tuntap`, so: `unshare -n` (as root; `-rn`, a user
# namespace too, otherwise), and inside it a background loop that waits for skiff to create
# the tap, then gives it the host address and brings it up. The namespace and the tap vanish
# with skiff. /sys shows the outer namespace's devices, so the loop reads /proc/net/dev (this
# namespace's) with shell builtins: nothing forks per poll while the inner kernel boots
# (the balloon sampler below says why that matters under TCG).
launch() {
  if [ -z "$net_tap" ]; then
    "$@"
    return
  fi
  ns_flags=-n
  [ "$(id -u)" = 0 ] || ns_flags=-rn
  # shellcheck disable=SC2016  # expanded by the inner sh
  unshare $ns_flags sh -c '
    tap=$1 addr=$2
    shift 2
    ip link set lo up
    tap_seen() {
      while IFS=: read -r name _; do
        name=${name#"${name%%[! ]*}"}
        [ "$name" = "$tap" ] && return 0
      done < /proc/net/dev
      return 1
    }
    (
      i=0
      while ! tap_seen; do
        i=$((i + 1))
        [ "$i" -le 600 ] || { echo "TIER3-HOST-TAP-MISSING $tap"; exit 1; }
        sleep 0.1
      done
      if ip addr add "$addr" dev "$tap" && ip link set "$tap" up; then
        echo "TIER3-HOST-TAP $tap $addr up"
      else
        echo "TIER3-HOST-TAP-FAILED $tap"
      fi
    ) &
    exec "$@"' sh "$net_tap" "$net_host_addr" "$@"
}

# virtio-blk: a 16 MiB image file on tmpfs, and (with a losetup that has -b) a 16 MiB loop
# device with 4096-byte logical sectors. The guest writes 256 KiB of random data to the
# start of each and prints its MD5 (TIER3-BLK-WROTE); blk_post compares the host's copy.
blk_img=
blk_loop_file=
blk_loop_dev=
blk_pre() {
  blk_img=$DISK_DIR/virtio-blk.img
  blk_loop_file=$DISK_DIR/virtio-blk-4k.img
  rm -f "$blk_img" "$blk_loop_file"
  truncate -s 16M "$blk_img"
  blk_loop_dev=
  # tmpfs has no O_DIRECT: the file disk uses the host page cache ("writeback"); the loop
  # device is a block device and gets skiff's default for those, "none" (O_DIRECT).
  disks="{\"id\": \"d0\", \"path\": \"$blk_img\", \"serial\": \"SKIFF-T3-512\", \"cache\": \"writeback\"}"
  if [ -n "$LOSETUP" ]; then
    truncate -s 16M "$blk_loop_file"
    if blk_loop_dev=$("$LOSETUP" -f --show -b 4096 "$blk_loop_file" 2>&1); then
      echo "TIER3-BLK-LOOP $blk_loop_dev sector=$(cat "/sys/block/${blk_loop_dev##*/}/queue/logical_block_size")"
      disks="$disks, {\"id\": \"d1\", \"path\": \"$blk_loop_dev\", \"serial\": \"SKIFF-T3-4K\"}"
    else
      echo "TIER3-BLK-NO-LOOP losetup failed: $blk_loop_dev"
      blk_loop_dev=
    fi
  else
    echo "TIER3-BLK-NO-LOOP no losetup with -b/--sector-size"
  fi
  printf '{"boot": {"kernel": "%s"}, "serial": {"input": false}, "disks": [%s]}\n' \
    "$INNER_KERNEL" "$disks" > "$spec_file"
}
# Prints TIER3-BLK-HOST-MATCH <serial> when the first 256 KiB of the host's copy have the
# MD5 the guest printed for that disk.
blk_check() {
  serial=$1 file=$2
  guest=$(sed -n "s/^TIER3-BLK-WROTE [a-z]* serial=$serial md5=\([0-9a-f]*\).*/\1/p" "$log" | tail -n1)
  host=$(dd if="$file" bs=4096 count=64 2>/dev/null | md5sum | cut -d' ' -f1)
  echo "TIER3-BLK-HOST-SUM $serial md5=$host guest=${guest:-none}"
  [ -n "$guest" ] && [ "$guest" = "$host" ] && echo "TIER3-BLK-HOST-MATCH $serial"
  return 0
}
blk_post() {
  blk_check SKIFF-T3-512 "$blk_img"
  if [ -n "$blk_loop_dev" ]; then
    "$LOSETUP" -d "$blk_loop_dev"
    blk_check SKIFF-T3-4K "$blk_loop_file"
  fi
  rm -f "$blk_img" "$blk_loop_file"
}

# virtio-balloon: samples skiff's resident memory (VmRSS) every 0.3 s while it runs; after
# the run, the peak (the guest's filled tmpfs) and the last sample (the balloon inflated, the
# guest idle) give the drop, which must be at least half the balloon target.
# The sampler forks nothing per sample (shell builtins read /proc): an earlier version ran
# `cat`/`grep`/`awk` for every process every 0.3 s, a few hundred forks a second, and each
# exit's kernel-stack and TLB-flush IPIs hit the CPU running skiff's vCPU in guest mode. Under
# QEMU's TCG-emulated AMD-V that flood made the outer kernel take an interrupt with the
# inner guest's GS base (page-fault recursion, "TASK stack guard page was hit" in skiff-vcpu0)
# or the inner guest triple-fault, in about every second run (docs/testing.md).
balloon_mib=64
balloon_rss=
balloon_sampler_pid=
balloon_pre() {
  balloon_rss=$LOG_DIR/balloon.rss
  : > "$balloon_rss"
  printf '{"boot": {"kernel": "%s"}, "serial": {"input": false}, "balloon": {"target_mib": %s, "stats_interval_s": 1}}\n' \
    "$INNER_KERNEL" "$balloon_mib" > "$spec_file"
  (
    pid=
    while :; do
      if [ -z "$pid" ] || [ ! -e "/proc/$pid/status" ]; then
        pid=
        for p in /proc/[0-9]*; do
          comm=
          { read -r comm < "$p/comm"; } 2>/dev/null
          [ "$comm" = skiff ] || continue
          grep -q balloon.json "$p/cmdline" 2>/dev/null || continue
          pid=${p#/proc/}
          break
        done
      fi
      if [ -n "$pid" ]; then
        { while read -r key value _; do
            if [ "$key" = VmRSS: ]; then
              echo "$value" >> "$balloon_rss"
              break
            fi
          done < "/proc/$pid/status"; } 2>/dev/null
      fi
      sleep 0.3
    done
  ) &
  balloon_sampler_pid=$!
}
balloon_post() {
  kill "$balloon_sampler_pid" 2>/dev/null
  wait "$balloon_sampler_pid" 2>/dev/null
  awk -v want=$((balloon_mib * 1024 / 2)) '
    /^[0-9]+$/ { n++; if ($1 > peak) peak = $1; last = $1 }
    END {
      printf "TIER3-BALLOON-HOST-RSS samples=%d peak_kib=%d last_kib=%d drop_kib=%d\n", n, peak, last, peak - last
      if (n > 0 && peak - last >= want) print "TIER3-BALLOON-HOST-RSS-DROP ok"
    }' "$balloon_rss"
}

# virtio-vsock: skiff's Unix socket in a short directory of its own (sun_path holds 107
# bytes; LOG_DIR may be long in the direct mode). Before skiff starts, a background job (its
# output in files of its own: pre_run's output is captured only until it returns) listens on
# <socket>_5001 for the guest's 1 MiB and then, the guest's listener on port 5000 being up by
# then, connects to <socket>, sends "CONNECT 5000" and 1 MiB of its own, and keeps what comes
# back: the "OK <port>" line and the echo. One connection each way, no polling: nothing
# forks in a loop beside the inner guest (see the balloon sampler).
vsock_dir=
vsock_job=
vsock_mib_bytes=1048576
vsock_pre() {
  vsock_dir=$(mktemp -d /tmp/tier3-vsock.XXXXXX)
  vsock_sock=$vsock_dir/vm.vsock
  head -c "$vsock_mib_bytes" /dev/urandom > "$vsock_dir/h2g.sent"
  printf '{"boot": {"kernel": "%s"}, "serial": {"input": false}, "vsock": {"guest_cid": 3, "socket": "%s"}}\n' \
    "$INNER_KERNEL" "$vsock_sock" > "$spec_file"
  echo "TIER3-VSOCK-HOST socket=$vsock_sock h2g_sha256=$(sha256sum < "$vsock_dir/h2g.sent" | cut -d' ' -f1)"
  (
    d=$vsock_dir
    timeout 200 "$SOCAT" -u UNIX-LISTEN:"${vsock_sock}_5001" CREATE:"$d/g2h.received" \
      > "$d/g2h.out" 2>&1 &
    echo "$!" > "$d/pids"
    wait "$!"
    echo "$?" > "$d/g2h.rc"
    # The first line on the socket is skiff's "OK <host port>", then the guest's echo. The
    # data follows the CONNECT line at once (skiff keeps it until the guest accepts).
    # -t 60: after our end-of-file, wait for the rest of the echo (socat's default is 0.5 s).
    { printf 'CONNECT 5000\n'; cat "$d/h2g.sent"; } |
      timeout 120 "$SOCAT" -t 60 - UNIX-CONNECT:"$vsock_sock" > "$d/h2g.echo" 2> "$d/h2g.out" &
    echo "$!" >> "$d/pids"
    wait "$!"
    echo "$?" > "$d/h2g.rc"
  ) < /dev/null > /dev/null 2>&1 &
  vsock_job=$!
}
# vsock_file NAME: a file of the host job on one line, "none" when it is not there.
vsock_file() {
  if [ -f "$vsock_dir/$1" ]; then tr '\n' ' ' < "$vsock_dir/$1"; else echo none; fi
}
vsock_post() {
  d=$vsock_dir
  # Still running when skiff is gone: the guest never connected (or never accepted). Stop
  # the job's socat processes (their pids in $d/pids; the job then goes on to the next and
  # reaps them), then the job itself.
  if kill -0 "$vsock_job" 2>/dev/null; then
    echo "TIER3-VSOCK-HOST-JOB still running after skiff ended: stopping it"
    for _ in 1 2 3; do
      while read -r pid; do
        kill "$pid" 2>/dev/null
      done < "$d/pids"
      kill -0 "$vsock_job" 2>/dev/null || break
      sleep 1
    done
    kill "$vsock_job" 2>/dev/null
  fi
  wait "$vsock_job" 2>/dev/null
  # Guest → host: what arrived on <socket>_5001 against the size and SHA-256 the guest printed.
  guest=$(sed -n 's/^TIER3-VSOCK-G2H-SENT bytes=\([0-9]*\) sha256=\([0-9a-f]*\).*/\1 \2/p' "$log" | tail -n1)
  if [ -f "$d/g2h.received" ]; then
    got="$(wc -c < "$d/g2h.received" | tr -d ' ') $(sha256sum < "$d/g2h.received" | cut -d' ' -f1)"
  else
    got="none"
  fi
  echo "TIER3-VSOCK-HOST-G2H listener_rc=$(vsock_file g2h.rc) received=\"$got\" guest_sent=\"${guest:-none}\" $(vsock_file g2h.out)"
  [ -n "$guest" ] && [ "$got" = "$guest" ] && [ "${guest%% *}" = "$vsock_mib_bytes" ] &&
    echo "TIER3-VSOCK-HOST-G2H-MATCH bytes=${guest%% *}"
  # Host → guest: skiff's OK line, then the echo, byte for byte; and what the guest says
  # it received.
  sent=$(sha256sum < "$d/h2g.sent" | cut -d' ' -f1)
  ok_line=
  [ -s "$d/h2g.echo" ] && ok_line=$(head -n1 "$d/h2g.echo")
  echo "TIER3-VSOCK-HOST-H2G client_rc=$(vsock_file h2g.rc) first_line=\"$ok_line\" echo_file_bytes=$([ -f "$d/h2g.echo" ] && wc -c < "$d/h2g.echo" | tr -d ' ') $(vsock_file h2g.out)"
  case "$ok_line" in
    "OK "[0-9]*)
      echo "TIER3-VSOCK-HOST-H2G-OK ${ok_line#OK }"
      tail -c +$((${#ok_line} + 2)) "$d/h2g.echo" > "$d/h2g.echoed"
      echoed="$(wc -c < "$d/h2g.echoed" | tr -d ' ') $(sha256sum < "$d/h2g.echoed" | cut -d' ' -f1)"
      echo "TIER3-VSOCK-HOST-H2G-ECHO \"$echoed\" sent=\"$vsock_mib_bytes $sent\""
      if [ "$echoed" = "$vsock_mib_bytes $sent" ] && cmp -s "$d/h2g.sent" "$d/h2g.echoed"; then
        echo "TIER3-VSOCK-HOST-H2G-ECHO-MATCH bytes=$vsock_mib_bytes"
      fi ;;
  esac
  guest=$(sed -n 's/^TIER3-VSOCK-H2G-RECEIVED bytes=\([0-9]*\) sha256=\([0-9a-f]*\).*/\1 \2/p' "$log" | tail -n1)
  [ "$guest" = "$vsock_mib_bytes $sent" ] && echo "TIER3-VSOCK-HOST-H2G-MATCH bytes=$vsock_mib_bytes"
  rm -rf "$vsock_dir"
  return 0
}

for scenario in "$@"; do
  case "$scenario" in
    virtio-mmio)
      # virtio-rng on virtio-mmio, described only in ACPI: a stock kernel finds it, binds
      # virtio_mmio and virtio-rng, and reads /dev/hwrng.
      spec_file=$LOG_DIR/virtio-mmio.json
      printf '{"boot": {"kernel": "%s"}, "serial": {"input": false}, "rng": {"transport": "mmio"}}\n' \
        "$INNER_KERNEL" > "$spec_file"
      run_one virtio-mmio "$INNER_KERNEL" 1 hwrng 0 \
        "TIER3-INNER-UP" "id=0x0004 driver=virtio_rng" "TIER3-HWRNG-CURRENT virtio_rng.0" \
        "TIER3-HWRNG-BYTES 64" "TIER3-ACTION poweroff"
      spec_file= ;;
    virtio-pci)
      # The same device on virtio-pci: found by PCI probing, modern capabilities, MSI-X.
      spec_file=$LOG_DIR/virtio-pci.json
      printf '{"boot": {"kernel": "%s"}, "serial": {"input": false}, "rng": {"transport": "pci"}}\n' \
        "$INNER_KERNEL" > "$spec_file"
      run_one virtio-pci "$INNER_KERNEL" 1 hwrng 0 \
        "TIER3-INNER-UP" "0x1af4:0x1044" "driver=virtio-pci" "id=0x0004 driver=virtio_rng" \
        "TIER3-HWRNG-CURRENT virtio_rng.0" "TIER3-HWRNG-BYTES 64" "PCI-MSI" "virtio0-input" "TIER3-ACTION poweroff"
      spec_file= ;;
    virtio-pci-intx)
      # The same device with MSI disabled in the guest (pci=nomsi): the driver falls back to
      # INTx, routed by PCI0's _PRT to IOAPIC pin 17 (slot 1, INTA#), level-triggered.
      spec_file=$LOG_DIR/virtio-pci-intx.json
      printf '{"boot": {"kernel": "%s"}, "serial": {"input": false}, "rng": {"transport": "pci"}}\n' \
        "$INNER_KERNEL" > "$spec_file"
      saved_extra=$INNER_EXTRA
      INNER_EXTRA="pci=nomsi${INNER_EXTRA:+ $INNER_EXTRA}"
      run_one virtio-pci-intx "$INNER_KERNEL" 1 hwrng 0 \
        "TIER3-INNER-UP" "0x1af4:0x1044" "driver=virtio-pci" "TIER3-HWRNG-CURRENT virtio_rng.0" \
        "TIER3-HWRNG-BYTES 64" "17-fasteoi" "virtio0" "TIER3-ACTION poweroff"
      INNER_EXTRA=$saved_extra
      spec_file= ;;
    virtio-blk)
      # Two virtio-blk disks on virtio-pci: a file with 512-byte sectors and a loop device
      # with 4096-byte sectors. The guest sees each one's serial number and topology, writes
      # random data with a flush, powers off; the host finds the same data in the backing
      # files afterwards. The file's physical block size is the host file system's
      # st_blksize (4096 on tmpfs), so only the loop device's is checked.
      spec_file=$LOG_DIR/virtio-blk.json
      pre_run=blk_pre post_run=blk_post
      saved_extra=$INNER_EXTRA
      ndisks=1
      [ -n "$LOSETUP" ] && ndisks=2
      INNER_EXTRA="tier3.disks=$ndisks${INNER_EXTRA:+ $INNER_EXTRA}"
      run_one virtio-blk "$INNER_KERNEL" 1 blk 0 \
        "TIER3-INNER-UP" "TIER3-BLK-DISK vda serial=SKIFF-T3-512 size=32768 lbs=512 pbs=" \
        "TIER3-BLK-READBACK vda ok" "TIER3-BLK-HOST-MATCH SKIFF-T3-512" \
        "TIER3-BLK-LOOP" "TIER3-BLK-DISK vdb serial=SKIFF-T3-4K size=32768 lbs=4096 pbs=4096" \
        "TIER3-BLK-READBACK vdb ok" "TIER3-BLK-HOST-MATCH SKIFF-T3-4K" "TIER3-ACTION poweroff"
      INNER_EXTRA=$saved_extra
      pre_run='' post_run='' spec_file='' ;;
    virtio-net)
      # A virtio-net NIC on virtio-pci backed by tap sk0, which skiff creates in a network
      # namespace of its own; the host end is 10.0.2.1/24, the guest takes 10.0.2.2/24 and
      # pings it.
      spec_file=$LOG_DIR/virtio-net.json
      printf '{"boot": {"kernel": "%s"}, "serial": {"input": false}, "nets": [{"id": "n0", "tap": "sk0", "mac": "52:54:00:12:34:56"}]}\n' \
        "$INNER_KERNEL" > "$spec_file"
      net_tap=sk0 net_host_addr=10.0.2.1/24
      run_one virtio-net "$INNER_KERNEL" 1 net 0 \
        "TIER3-INNER-UP" "TIER3-HOST-TAP sk0 10.0.2.1/24 up" \
        "TIER3-NET-NIC eth0 mac=52:54:00:12:34:56 mtu=1500 driver=virtio_net" \
        "TIER3-PING ok" "TIER3-PING-LARGE ok" "TIER3-ACTION poweroff"
      net_tap='' net_host_addr='' spec_file='' ;;
    virtio-balloon)
      # A virtio-balloon on virtio-pci with an initial target of $balloon_mib MiB: the guest's
      # driver inflates, MemTotal falls by the target, and skiff's RSS falls (balloon_post).
      spec_file=$LOG_DIR/balloon.json
      pre_run=balloon_pre post_run=balloon_post
      saved_extra=$INNER_EXTRA
      INNER_EXTRA="tier3.balloon_mib=$balloon_mib${INNER_EXTRA:+ $INNER_EXTRA}"
      run_one virtio-balloon "$INNER_KERNEL" 1 balloon 0 \
        "TIER3-INNER-UP" "TIER3-BALLOON-TOUCHED" "id=0x0005 driver=virtio_balloon" "TIER3-BALLOON-INFLATED ok" \
        "TIER3-BALLOON-HOST-RSS-DROP ok" "TIER3-ACTION poweroff"
      INNER_EXTRA=$saved_extra
      pre_run='' post_run='' spec_file='' ;;
    virtio-vsock)
      # A virtio-vsock on virtio-pci (guest CID 3, skiff's hybrid-vsock Unix socket): 1 MiB
      # each way through socat on both sides (vsock_pre, inner-init.sh's vsock action),
      # compared byte for byte (vsock_post).
      if [ -z "$SOCAT" ] || [ -z "$INNER_INITRD_VSOCK" ] || [ ! -f "$INNER_INITRD_VSOCK" ]; then
        echo "TIER3-VSOCK socat is missing (install it: tools/install-deps.sh --tests); SOCAT='$SOCAT' INNER_INITRD_VSOCK='$INNER_INITRD_VSOCK'"
        echo "TIER3-RESULT name=virtio-vsock rc=? seconds=0 expect_rc=0 status=FAIL missing=socat"
        failed=$((failed + 1))
        continue
      fi
      spec_file=$LOG_DIR/vsock.json
      pre_run=vsock_pre post_run=vsock_post run_initrd=$INNER_INITRD_VSOCK
      run_one virtio-vsock "$INNER_KERNEL" 1 vsock 0 \
        "TIER3-INNER-UP" "id=0x0013 driver=vmw_vsock_virtio_transport" \
        "TIER3-VSOCK-G2H-SENT bytes=$vsock_mib_bytes" "TIER3-VSOCK-HOST-G2H-MATCH" \
        "TIER3-VSOCK-HOST-H2G-OK" "TIER3-VSOCK-HOST-H2G-ECHO-MATCH" "TIER3-VSOCK-HOST-H2G-MATCH" \
        "TIER3-ACTION poweroff"
      pre_run='' post_run='' run_initrd='' spec_file='' ;;
    boot1)
      run_one boot1 "$INNER_KERNEL" 1 poweroff 0 \
        "TIER3-INNER-UP" "TIER3-NPROC 1" "TIER3-CPUINFO 1" "TIER3-ACTION poweroff" ;;
    boot2)
      # The cloud kernel has no MP-table parser: the second CPU can only come from the MADT.
      run_one boot2 "$INNER_KERNEL" 2 poweroff 0 \
        "TIER3-INNER-UP" "TIER3-NPROC 2" "TIER3-CPUINFO 2" "TIER3-ACTION poweroff" ;;
    reboot)
      run_one reboot "$INNER_KERNEL" 1 reboot 0 "TIER3-INNER-UP" "TIER3-ACTION reboot" ;;
    panic)
      # No pvpanic driver: skiff recognises the panic banner on the console, and the reset
      # that panic=-1 makes follows it.
      run_one panic "$INNER_KERNEL" 1 panic "$PANIC_RC" \
        "TIER3-INNER-UP" "TIER3-ACTION panic" "Kernel panic - not syncing" \
        "guest kernel panicked: Kernel panic - not syncing" ;;
    pvpanic)
      # Linux's pvpanic-mmio driver bound to skiff's device (ACPI QEMU0001, port 0x505,
      # capability 3 = PANICKED | CRASH_LOADED) reports the panic through the port.
      run_one pvpanic "$INNER_KERNEL" 1 pvpanic "$PANIC_RC" \
        "TIER3-INNER-UP" "TIER3-PVPANIC-DEVICE QEMU0001:00 capability=3" "TIER3-ACTION panic" \
        "Kernel panic - not syncing" "guest kernel panicked (pvpanic)" ;;
    timeout)
      # The guest reaches /init and then hangs: skiff's --timeout must end the run with 124.
      run_timeout=$HANG_TIMEOUT
      run_one timeout "$INNER_KERNEL" 1 hang 124 \
        "TIER3-INNER-UP" "TIER3-ACTION hang" "(--timeout)"
      run_timeout= ;;
    generic)
      if [ -z "${GENERIC_KERNEL:-}" ]; then
        echo "TIER3-RESULT name=generic rc=? seconds=0 expect_rc=0 status=FAIL missing=GENERIC_KERNEL"
        failed=$((failed + 1))
        continue
      fi
      run_one generic "$GENERIC_KERNEL" 2 poweroff 0 \
        "TIER3-INNER-UP" "TIER3-NPROC 2" "TIER3-ACTION poweroff" ;;
    *)
      echo "TIER3-RESULT name=$scenario rc=? seconds=0 expect_rc=? status=FAIL missing=unknown_scenario"
      failed=$((failed + 1)) ;;
  esac
done

echo "TIER3-DONE passed=$passed failed=$failed"
[ "$failed" -eq 0 ]
