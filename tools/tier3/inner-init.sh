#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# /init of the INNER tier-3 guest: the initramfs that skiff boots with a Debian kernel.
# Reports what the guest sees on the serial console, then does what the kernel command line
# asks (tier3.action=poweroff|reboot|panic|pvpanic|hang|hwrng|shell) and ends the VM.
# The TIER3-* lines are the markers tools/tier3/scenarios.sh checks.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

echo "TIER3-INNER-UP"
echo "TIER3-NPROC $(nproc)"
echo "TIER3-CPUINFO $(grep -c '^processor' /proc/cpuinfo)"
echo "TIER3-CMDLINE $(cat /proc/cmdline)"
echo "TIER3-MEMTOTAL $(awk '/^MemTotal:/ { print $2 " " $3 }' /proc/meminfo)"
echo "TIER3-KERNEL $(uname -r)"
echo "TIER3-UPTIME $(cut -d' ' -f1 /proc/uptime)"

# The kernel keeps dotted words (module parameters of a module it does not know) out of
# init's arguments and environment, so read the action from /proc/cmdline.
action=poweroff
debug=0
# shellcheck disable=SC2013  # words, not lines
for word in $(cat /proc/cmdline); do
  case "$word" in
    tier3.action=*) action=${word#tier3.action=} ;;
    tier3.debug=1) debug=1 ;;
  esac
done

# tier3.debug=1: what the timer and interrupt set-up looks like (for diagnosing a VMM).
if [ "$debug" = 1 ]; then
  echo "TIER3-DEBUG clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
  for d in /sys/devices/system/clockevents/clockevent*; do
    [ -e "$d/current_device" ] && echo "TIER3-DEBUG ${d##*/} $(cat "$d/current_device")"
  done
  cat /proc/interrupts
  echo "TIER3-DEBUG uptime $(cut -d' ' -f1 /proc/uptime)"
  head -n 3 /proc/interrupts
  grep -E '^(jiffies|now at|  mode|  event_handler|Tick Device|Clock Event Device| set_next_event| next_event)' /proc/timer_list 2>/dev/null
fi
# tier3.action=hwrng: the stock kernel must find skiff's virtio devices (virtio-mmio through
# ACPI, LNRO0005 in the DSDT, as Debian's kernels lack CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES;
# virtio-pci by PCI probing) and read entropy from its virtio-rng.
if [ "$action" = hwrng ]; then
  for m in virtio_ring virtio virtio_mmio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio-rng; do
    insmod "/lib/modules/tier3/$m.ko" || echo "TIER3-INSMOD-FAILED $m"
  done
  # Driver binding is asynchronous to insmod: give it a moment (bounded).
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -e /dev/hwrng ] && [ -n "$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)" ] && break
    sleep 1
  done
  for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/device" ] && echo "TIER3-VIRTIO-DEVICE ${d##*/} id=$(cat "$d/device") driver=$(basename "$(readlink "$d/driver" 2>/dev/null)")"
  done
  echo "TIER3-HWRNG-CURRENT $(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"
  bytes=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | wc -c)
  echo "TIER3-HWRNG-BYTES $bytes"
  grep -E 'virtio|LNRO' /proc/interrupts | sed 's/^/TIER3-IRQ /'
  for d in /sys/bus/pci/devices/*; do
    echo "TIER3-PCI ${d##*/} $(cat "$d/vendor"):$(cat "$d/device") class=$(cat "$d/class") driver=$(basename "$(readlink "$d/driver" 2>/dev/null)")"
  done
  action=poweroff
fi
# tier3.action=pvpanic: bind Linux's pvpanic driver to skiff's pvpanic device (ACPI
# QEMU0001, I/O port 0x505) before panicking, so that the panic reaches skiff through the
# device and not only through the console banner.
if [ "$action" = pvpanic ]; then
  for m in pvpanic pvpanic-mmio; do
    insmod "/lib/modules/tier3/$m.ko" || echo "TIER3-INSMOD-FAILED $m"
  done
  for d in /sys/bus/platform/drivers/pvpanic-mmio/*:*; do
    [ -e "$d" ] && echo "TIER3-PVPANIC-DEVICE ${d##*/} capability=$(cat "$d/capability" 2>/dev/null)"
  done
  action=panic
fi
echo "TIER3-ACTION $action"

case "$action" in
  reboot)
    reboot -f ;;
  panic)
    # sysrq 'c' dereferences NULL in the kernel → oops → panic. skiff sees the panic banner
    # on the console (and, with the pvpanic driver bound, a write to its pvpanic port); with
    # panic=-1 the kernel then resets at once, which skiff reports as the panic it ends.
    echo c > /proc/sysrq-trigger ;;
  hang)
    # A guest that never ends: skiff's --timeout must stop it.
    while :; do sleep 3600; done ;;
  shell)
    sh ;;
esac
poweroff -f
# poweroff -f only returns if the reboot() system call failed.
echo "TIER3-INNER-POWEROFF-FAILED"
sleep 5
