#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# /init of the OUTER tier-3 VM (booted by QEMU with TCG and an emulated AMD SVM): loads KVM,
# runs skiff once per scenario named on the kernel command line, and powers the VM off.
#   tier3.scenarios=boot1,boot2,reboot,panic,pvpanic,timeout,generic,...   (default: boot1)
#   tier3.timeout=SECONDS                               per-scenario limit (default 240)
#   tier3.seccomp=enforce|log|off                       skiff's --seccomp (default: skiff's own)
# The inner guest's extra command-line words and other settings come from /tier3/env,
# written by make-initramfs.sh.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp

echo "TIER3-OUTER-UP uptime=$(cut -d' ' -f1 /proc/uptime) cpus=$(nproc)"

finish() {
  echo "TIER3-OUTER-END uptime=$(cut -d' ' -f1 /proc/uptime)"
  sync
  poweroff -f
  # Without a working power-off, -no-reboot makes QEMU exit on a reset instead.
  reboot -f
}

scenarios=boot1
timeout=240
# shellcheck disable=SC2013  # words, not lines
for word in $(cat /proc/cmdline); do
  case "$word" in
    tier3.scenarios=*) scenarios=$(echo "${word#tier3.scenarios=}" | tr ',' ' ') ;;
    tier3.timeout=*) timeout=${word#tier3.timeout=} ;;
    tier3.seccomp=*) export SKIFF_SECCOMP="${word#tier3.seccomp=}" ;;
  esac
done

# KVM: irqbypass and kvm first, then the vendor module for this CPU (QEMU gives AMD SVM).
modules=/lib/modules/tier3
vendor=
if grep -qw svm /proc/cpuinfo; then
  vendor=kvm-amd
elif grep -qw vmx /proc/cpuinfo; then
  vendor=kvm-intel
fi
if [ -z "$vendor" ]; then
  echo "TIER3-OUTER-ERROR no svm or vmx flag in the outer VM's /proc/cpuinfo"
  finish
fi
for m in irqbypass kvm "$vendor"; do
  if ! insmod "$modules/$m.ko"; then
    echo "TIER3-OUTER-ERROR insmod $m.ko failed"
    finish
  fi
done
if [ ! -c /dev/kvm ]; then
  echo "TIER3-OUTER-ERROR /dev/kvm did not appear after loading $vendor"
  finish
fi
echo "TIER3-KVM-READY module=$vendor uptime=$(cut -d' ' -f1 /proc/uptime)"
# loop (the virtio-blk scenario's 4 KiB-sector disk) and tun (virtio-net's tap): only those
# scenarios need them, and they say so when they are missing.
for m in loop tun; do
  insmod "$modules/$m.ko" 2>/dev/null || echo "TIER3-OUTER-NOTE insmod $m.ko failed"
done

# shellcheck disable=SC1091
. /tier3/env
export SKIFF INNER_KERNEL INNER_INITRD GENERIC_KERNEL LOSETUP SOCAT INNER_INITRD_VSOCK INNER_MEMORY INNER_EXTRA WORKAROUNDS PANIC_RC HANG_TIMEOUT
export SCENARIO_TIMEOUT="$timeout" LOG_DIR=/tmp/tier3-logs
# shellcheck disable=SC2086
sh /tier3/scenarios.sh $scenarios
finish
