#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Boots the bzImage on /dev/kvm through its 64-bit (+0x200) and 32-bit (code32_start)
# entries with kvm_boot.py, the entries QEMU cannot reach. Exit 77 without /dev/kvm.
# usage: kvm_entries.sh GUEST_BZIMAGE [PYTHON3]
set -u
bzimage=$1
python=${2:-python3}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

head -c 10000 /dev/zero | tr '\0' 'k' >"$work/initrd"
for entry in 64 32; do
  "$python" "$here/kvm_boot.py" "$bzimage" --entry "$entry" --cmdline "skiff.exit=$entry a=b" \
    --initrd "$work/initrd" >"$work/out" 2>&1
  status=$?
  if [ "$status" -eq 77 ]; then cat "$work/out"; exit 77; fi
  for line in "boot=bzimage" "entry=$entry" "cmdline=skiff.exit=$entry a=b" "e820-count 4" \
      "madt-cpus=none" "cpus-started=1" "virtio-mmio-devices=0" "action=exit code=$entry"; do
    grep -qxF "SKIFF-GUEST $line" "$work/out" || { echo "entry $entry: missing '$line'"; failures=$((failures + 1)); }
  done
  grep -qE '^SKIFF-GUEST initrd addr=0x2000000 size=10000 head_fnv1a=0x[0-9a-f]{16} tail_fnv1a=0x[0-9a-f]{16}$' \
    "$work/out" || { echo "entry $entry: bad initrd line"; failures=$((failures + 1)); }
  [ "$status" -eq "$entry" ] || { echo "entry $entry: exit status $status"; failures=$((failures + 1)); }
  if [ "$failures" -ne 0 ]; then cat "$work/out"; exit 1; fi
done
echo "guest /dev/kvm entries 64 and 32: all checks passed"
