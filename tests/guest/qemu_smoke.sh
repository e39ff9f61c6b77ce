#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Boots the test guest under QEMU (TCG) in every way QEMU can, and checks the
# SKIFF-GUEST lines and exit codes that README.md promises. This pins down the guest
# independently of skiff, and is a reference for what skiff must produce.
#
# usage: qemu_smoke.sh GUEST_ELF GUEST_BZIMAGE [PYTHON3]
# Exit 77 (ctest SKIP_RETURN_CODE) when qemu-system-x86_64 is missing.
# SKIFF_GUEST_QEMU_ACCEL overrides the accelerator (default: tcg).
set -u

elf=$1
bzimage=$2
python=${3:-python3}
qemu=${QEMU:-qemu-system-x86_64}
accel=${SKIFF_GUEST_QEMU_ACCEL:-tcg}

if ! command -v "$qemu" >/dev/null 2>&1; then
  echo "SKIP: $qemu not found; install qemu-system-x86 to run the guest smoke test"
  exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# Two initrds: one larger than the 4 KiB hash windows, one smaller.
"$python" - "$work" <<'PY'
import sys
work = sys.argv[1]
data = bytes((i * 7 + (i >> 8) * 13) & 0xff for i in range(100000))
open(f"{work}/initrd-big", "wb").write(data)
open(f"{work}/initrd-small", "wb").write(b"skiff test initrd\n" * 5)
PY

# expected_initrd FILE -> "size=N head_fnv1a=0x... tail_fnv1a=0x..."
expected_initrd() {
  "$python" - "$1" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
def fnv1a(b):
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff
    return h
w = min(4096, len(data))
print(f"size={len(data)} head_fnv1a={fnv1a(data[:w]):#018x} tail_fnv1a={fnv1a(data[-w:]):#018x}")
PY
}

# run NAME TIMEOUT QEMU-ARGS... : boots, leaves the guest lines in $work/NAME.lines and
# QEMU's exit status in $status.
run() {
  local name=$1 limit=$2
  shift 2
  local log=$work/$name.serial
  local exit_device=(-device isa-debug-exit,iobase=0xf4,iosize=4)
  if [ "${NO_DEBUG_EXIT:-0}" = 1 ]; then exit_device=(); fi
  timeout "$limit" "$qemu" -accel "$accel" -display none -monitor none -no-reboot -m 256 \
    -serial "file:$log" "${exit_device[@]}" "$@" >"$work/$name.stdout" 2>&1
  status=$?
  grep -ao 'SKIFF-GUEST .*' "$log" | tr -d '\r' >"$work/$name.lines" || true
  current=$name
}

fail() {
  echo "FAIL [$current]: $*"
  echo "---- guest lines:"
  cat "$work/$current.lines"
  echo "---- qemu output:"
  cat "$work/$current.stdout"
  echo "----"
  failures=$((failures + 1))
}

expect_line() {  # exact line
  grep -qxF -- "SKIFF-GUEST $1" "$work/$current.lines" || fail "missing line 'SKIFF-GUEST $1'"
}
expect_no_line() {
  if grep -qxF -- "SKIFF-GUEST $1" "$work/$current.lines"; then fail "unexpected line 'SKIFF-GUEST $1'"; fi
}
expect_match() {  # extended regex over a whole line
  grep -qxE -- "SKIFF-GUEST $1" "$work/$current.lines" || fail "no line matching 'SKIFF-GUEST $1'"
}
expect_order() {  # the first line matching each extended regex, in this order
  local previous=0 regex number
  for regex in "$@"; do
    number=$(grep -nxE -m 1 -- "SKIFF-GUEST $regex" "$work/$current.lines" | cut -d: -f1)
    if [ -z "$number" ]; then fail "no line matching 'SKIFF-GUEST $regex'"; return; fi
    [ "$number" -gt "$previous" ] || fail "line 'SKIFF-GUEST $regex' out of order"
    previous=$number
  done
}
expect_status() {
  [ "$status" -eq "$1" ] || fail "exit status $status, expected $1"
}
# QEMU's isa-debug-exit turns the byte v into the exit status (v << 1) | 1.
debug_exit_status() { echo $((($1 << 1) | 1)); }

check_common() {  # the lines every successful boot prints, in order
  local first
  first=$(head -n 1 "$work/$current.lines")
  case $first in
    "SKIFF-GUEST boot=pvh" | "SKIFF-GUEST boot=bzimage") ;;
    *) fail "first line is '$first'" ;;
  esac
  expect_match 'e820 0x[0-9a-f]+ 0x[0-9a-f]+ [0-9]+'
  expect_match 'e820-count [1-9][0-9]*'
  local listed counted
  listed=$(grep -c '^SKIFF-GUEST e820 ' "$work/$current.lines")
  counted=$(sed -n 's/^SKIFF-GUEST e820-count //p' "$work/$current.lines")
  [ "$listed" = "$counted" ] || fail "e820-count $counted but $listed entries listed"
  if grep -q '^SKIFF-GUEST error' "$work/$current.lines"; then fail "error lines printed"; fi
}

big=$(expected_initrd "$work/initrd-big")
small=$(expected_initrd "$work/initrd-small")

# 1. PVH on microvm: no firmware tables but the MADT, one CPU, no initrd.
run microvm-pvh 60 -M microvm,x-option-roms=off,rtc=off -kernel "$elf" \
  -append "skiff.exit=3 console=none  spaced=1"
check_common
expect_line "boot=pvh"
expect_line "entry=32"
expect_line "cmdline=skiff.exit=3 console=none  spaced=1"
expect_line "initrd none"
expect_line "madt-cpus=1"
expect_line "cpus-started=1"
expect_line "virtio-mmio-devices=0"
expect_line "action=exit code=3"
expect_status "$(debug_exit_status 3)"

# 2. PVH on microvm with 2 CPUs and a small initrd (hash windows = whole file).
run microvm-pvh-smp 60 -M microvm,x-option-roms=off,rtc=off -smp 2 -kernel "$elf" \
  -initrd "$work/initrd-small" -append "skiff.exit=0x10"
check_common
expect_match "initrd addr=0x[0-9a-f]+ $small"
expect_line "madt-cpus=2"
expect_line "mptable-cpus=2"
expect_line "cpus-started=2"
expect_line "action=exit code=16"
expect_status "$(debug_exit_status 16)"

# 3. PVH on pc (SeaBIOS: ACPI and MP table), 4 sockets so the MP table lists 4 CPUs.
run pc-pvh 120 -M pc -smp 4,sockets=4,cores=1,threads=1 -kernel "$elf" \
  -initrd "$work/initrd-big" -append "skiff.exit=5"
check_common
expect_line "boot=pvh"
expect_match "initrd addr=0x[0-9a-f]+ $big"
expect_match "rsdp=0x[0-9a-f]+ from=boot"
expect_line "madt-cpus=4"
expect_line "mptable-cpus=4"
expect_line "cpus-started=4"
expect_line "action=exit code=5"
expect_status "$(debug_exit_status 5)"

# 4. bzImage on pc: QEMU enters the real-mode setup (entry=16), which gathers E820
#    from the BIOS. Default action: exit 0.
run pc-bzimage 120 -M pc -smp 2,sockets=2,cores=1,threads=1 -kernel "$bzimage" \
  -initrd "$work/initrd-big" -append "quiet skiff.exit=7 skiff.exit=9"
check_common
expect_line "boot=bzimage"
expect_line "entry=16"
expect_line "cmdline=quiet skiff.exit=7 skiff.exit=9"
expect_match "initrd addr=0x[0-9a-f]+ $big"
expect_match "rsdp=0x[0-9a-f]+ from=scan"
expect_line "madt-cpus=2"
expect_line "mptable-cpus=2"
expect_line "cpus-started=2"
expect_line "virtio-mmio-devices=0"
expect_line "action=exit code=9"
expect_status "$(debug_exit_status 9)"

run pc-bzimage-default 120 -M pc -kernel "$bzimage"
check_common
expect_line "cmdline="
expect_line "initrd none"
expect_line "cpus-started=1"
expect_line "action=exit code=0"
expect_status "$(debug_exit_status 0)"

# 5. The other actions. With -no-reboot a reset or triple fault ends QEMU with status 0.
run pc-reboot 120 -M pc -kernel "$bzimage" -append "skiff.action=reboot"
expect_line "action=reboot code=0"
expect_no_line "action-failed"
expect_status 0

run microvm-triple-fault 60 -M microvm,x-option-roms=off,rtc=off -kernel "$elf" \
  -append "skiff.action=triple-fault skiff.exit=4"
expect_line "action=triple-fault code=4"
expect_no_line "action-failed"
expect_status 0

# QEMU's PIIX4 treats SLP_TYP 0 as S5; s4_val=5 makes skiff's S5 value (5) shut down too.
run pc-poweroff 120 -M pc -global PIIX4_PM.s4_val=5 -kernel "$elf" -append "skiff.action=poweroff"
expect_line "action=poweroff code=0"
expect_no_line "action-failed"
expect_status 0

run microvm-halt 3 -M microvm,x-option-roms=off,rtc=off -kernel "$elf" -append "skiff.action=halt"
expect_line "action=halt code=0"
expect_status 124

# An exit request nobody serves: without isa-debug-exit the guest reports and halts.
# An unknown action falls back to exit.
NO_DEBUG_EXIT=1 run microvm-no-exit-port 5 -M microvm,x-option-roms=off,rtc=off -kernel "$elf" \
  -append "skiff.action=bogus skiff.exit=2"
expect_line "error unknown-action"
expect_line "action=exit code=2"
expect_line "action-failed"
expect_status 124

# 6. virtio-mmio on microvm. With ACPI off, QEMU appends one Linux-style
#    "virtio_mmio.device=512@<base>:<irq>" token per transport that has a device (512-byte
#    slots at 0xfeb00000 + 0x200 * i, IRQ 5 + i). Its transports speak the legacy layout
#    (version 1) unless force-legacy is off.
microvm_virtio=(-M microvm,x-option-roms=off,rtc=off,acpi=off -global virtio-mmio.force-legacy=false)
# An entropy device and a balloon (id 5, only listed). Under TCG a poll of the used ring
# takes ~70 ns, and QEMU's main loop fills the buffers only when it gets a CPU: allow
# 20M polls (~1.5 s) instead of the default 200000 (~15 ms here).
run microvm-virtio 60 "${microvm_virtio[@]}" -device virtio-rng-device -device virtio-balloon-device \
  -kernel "$elf" -append "skiff.virtio=1 skiff.virtio-polls=20000000 skiff.exit=6"
check_common
expect_line "virtio-mmio-devices=2"
tokens=$(sed -n 's/^SKIFF-GUEST cmdline=//p' "$work/$current.lines" | tr ' ' '\n' |
  sed -n 's/^virtio_mmio\.device=512@\(0xfeb00[0-9a-f]*\):\([0-9]*\)$/\1 \2/p')
[ "$(echo "$tokens" | grep -c .)" = 2 ] || fail "expected 2 virtio_mmio.device tokens, got '$tokens'"
while read -r base irq; do
  [ -n "$base" ] && expect_match "virtio-mmio base=$base irq=$irq id=(4|5) vendor=0x554d4551"
done <<<"$tokens"
expect_match "virtio-mmio base=0x[0-9a-f]+ irq=[0-9]+ id=4 vendor=0x554d4551"
expect_match "virtio-mmio base=0x[0-9a-f]+ irq=[0-9]+ id=5 vendor=0x554d4551"
expect_match "virtio-rng device-features=0x[0-9a-f]+ features-ok=1"
features=$(sed -n 's/^SKIFF-GUEST virtio-rng device-features=\(0x[0-9a-f]*\) .*/\1/p' "$work/$current.lines")
[ -n "$features" ] && [ $(((features >> 32) & 1)) = 1 ] || fail "device features '$features' lack VIRTIO_F_VERSION_1"
expect_match "virtio-rng queue-num-max=[0-9]+ queue-num=8 status=15"
expect_line "virtio-rng used=2 len0=64 len1=64 nonzero=1 isr=1"
expect_line "virtio-rng isr-after-ack=0"
expect_line "virtio-rng reset-status=0"
expect_order "cpus-started=1" "virtio-mmio-devices=2" "virtio-mmio base=.* id=4 .*" \
  "virtio-rng device-features=.*" "virtio-rng queue-num-max=.*" "virtio-rng used=.*" \
  "virtio-rng isr-after-ack=0" "virtio-rng reset-status=0" "action=exit code=6"
expect_status "$(debug_exit_status 6)"

# A device that never answers (an EGD entropy source on a null chardev): the bounded
# poll gives up with nothing used and no interrupt, and the device still resets.
run microvm-virtio-stuck 60 "${microvm_virtio[@]}" -chardev null,id=silent \
  -object rng-egd,id=silent-rng,chardev=silent -device virtio-rng-device,rng=silent-rng \
  -kernel "$elf" -append "skiff.virtio=1"
check_common
expect_line "virtio-mmio-devices=1"
expect_line "virtio-rng used=0 len0=0 len1=0 nonzero=0 isr=0"
expect_line "virtio-rng isr-after-ack=0"
expect_line "virtio-rng reset-status=0"
expect_status "$(debug_exit_status 0)"

# Without skiff.virtio=1 the devices are only counted, never touched.
run microvm-virtio-off 60 "${microvm_virtio[@]}" -device virtio-rng-device \
  -kernel "$elf" -append "skiff.virtio=0"
check_common
expect_line "virtio-mmio-devices=1"
if grep -q '^SKIFF-GUEST virtio-\(mmio base\|rng\)' "$work/$current.lines"; then fail "device probed"; fi
expect_status "$(debug_exit_status 0)"

# Legacy transports (version 1) are reported, not driven; malformed and unmapped tokens
# are reported and not counted; a token may carry Linux's trailing ":<id>".
run microvm-virtio-errors 60 -M microvm,x-option-roms=off,rtc=off,acpi=off \
  -global virtio-mmio.force-legacy=true -device virtio-rng-device -kernel "$elf" \
  -append "skiff.virtio=1 skiff.virtio-polls=0 virtio_mmio.device=1x@0:1 virtio_mmio.device=4K@0x100000000:3 virtio_mmio.device=0x200@0xfeb00200:6:3"
expect_line "error virtio-mmio-token index=0"
expect_line "error virtio-mmio-range base=0x100000000 size=0x1000"
expect_line "virtio-mmio-devices=2"
expect_line "error bad-virtio-polls"
expect_line "error virtio-mmio-version base=0xfeb00200 value=1"
expect_match "error virtio-mmio-version base=0xfeb00[0-9a-f]00 value=1"
if grep -q '^SKIFF-GUEST virtio-\(mmio base\|rng\)' "$work/$current.lines"; then fail "legacy device driven"; fi
expect_line "action=exit code=0"
expect_status "$(debug_exit_status 0)"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "guest QEMU smoke test: all checks passed"
