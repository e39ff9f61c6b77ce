#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# /init of the INNER tier-3 guest: the initramfs that skiff boots with a Debian kernel.
# Reports what the guest sees on the serial console, then does what the kernel command line
# asks (tier3.action=poweroff|reboot|panic|pvpanic|hang|hwrng|blk|net|balloon|vsock|shell) and ends
# the VM.
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
# tier3.action=blk: skiff's virtio-blk disks on virtio-pci. For each disk: its serial number
# and topology, then 256 KiB of random data written with conv=fsync (a guest flush) and read
# back with O_DIRECT; scenarios.sh compares the checksum with the host's image afterwards.
if [ "$action" = blk ]; then
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    insmod "/lib/modules/tier3/$m.ko" || echo "TIER3-INSMOD-FAILED $m"
  done
  # Probing is asynchronous to insmod; scenarios.sh passes the number of disks.
  want=1
  # shellcheck disable=SC2013  # words, not lines
  for word in $(cat /proc/cmdline); do
    case "$word" in tier3.disks=*) want=${word#tier3.disks=} ;; esac
  done
  for _ in $(seq 1 20); do
    n=0
    for b in /sys/block/vd*; do [ -e "$b" ] && n=$((n + 1)); done
    [ "$n" -ge "$want" ] && break
    sleep 0.5
  done
  for b in /sys/block/vd*; do
    [ -e "$b" ] || { echo "TIER3-BLK-NONE"; break; }
    d=${b##*/}
    q=$b/queue
    serial=$(cat "$b/serial" 2>/dev/null)
    echo "TIER3-BLK-DISK $d serial=$serial size=$(cat "$b/size") lbs=$(cat "$q/logical_block_size") pbs=$(cat "$q/physical_block_size") min_io=$(cat "$q/minimum_io_size") opt_io=$(cat "$q/optimal_io_size") ro=$(cat "$b/ro")"
    # The pattern: 64 blocks of 4 KiB from /dev/urandom, so a lost or misplaced block of
    # either sector size changes the checksum.
    dd if=/dev/urandom of="/tmp/pat.$d" bs=4096 count=64 2>/dev/null
    sum=$(md5sum < "/tmp/pat.$d" | cut -d' ' -f1)
    if dd if="/tmp/pat.$d" of="/dev/$d" bs=4096 conv=fsync 2>/tmp/dd.err; then
      echo "TIER3-BLK-WROTE $d serial=$serial md5=$sum"
    else
      echo "TIER3-BLK-WRITE-FAILED $d $(cat /tmp/dd.err)"
    fi
    # O_DIRECT: past the page cache, from the device.
    back=$(dd if="/dev/$d" bs=4096 count=64 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    if [ "$back" = "$sum" ]; then
      echo "TIER3-BLK-READBACK $d ok"
    else
      echo "TIER3-BLK-READBACK $d mismatch md5=$back"
    fi
  done
  sync
  grep virtio /proc/interrupts | sed 's/^/TIER3-IRQ /'
  action=poweroff
fi
# tier3.action=net: skiff's virtio-net NIC on virtio-pci. The guest takes 10.0.2.2/24 and
# pings the host end of the tap (10.0.2.1, configured by scenarios.sh).
if [ "$action" = net ]; then
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    insmod "/lib/modules/tier3/$m.ko" || echo "TIER3-INSMOD-FAILED $m"
  done
  nic=
  for _ in $(seq 1 20); do
    for n in /sys/class/net/*; do
      [ "${n##*/}" = lo ] || [ ! -e "$n" ] || { nic=${n##*/}; break; }
    done
    [ -n "$nic" ] && break
    sleep 0.5
  done
  if [ -z "$nic" ]; then
    echo "TIER3-NET-NONE"
  else
    echo "TIER3-NET-NIC $nic mac=$(cat "/sys/class/net/$nic/address") mtu=$(cat "/sys/class/net/$nic/mtu") driver=$(basename "$(readlink "/sys/class/net/$nic/device/driver" 2>/dev/null)")"
    ip addr add 10.0.2.2/24 dev "$nic"
    ip link set "$nic" up
    # -w: the host end may take a moment (ARP, the host side's set-up); any reply counts.
    if ping -c 3 -w 20 10.0.2.1 > /tmp/ping.out 2>&1; then
      echo "TIER3-PING ok $(grep -E 'packets transmitted' /tmp/ping.out)"
    else
      echo "TIER3-PING fail $(tr '\n' ' ' < /tmp/ping.out)"
    fi
    # A bigger packet: more than one descriptor's worth on some paths, and checksum offload.
    if ping -c 2 -s 4000 -w 10 10.0.2.1 > /tmp/ping.out 2>&1; then
      echo "TIER3-PING-LARGE ok"
    else
      echo "TIER3-PING-LARGE fail $(tr '\n' ' ' < /tmp/ping.out)"
    fi
    echo "TIER3-NET-STATS $nic rx_packets=$(cat "/sys/class/net/$nic/statistics/rx_packets") tx_packets=$(cat "/sys/class/net/$nic/statistics/tx_packets")"
  fi
  grep virtio /proc/interrupts | sed 's/^/TIER3-IRQ /'
  action=poweroff
fi
# tier3.action=balloon: skiff's virtio-balloon on virtio-pci with an initial target (the
# spec's balloon.target_mib). The guest first fills 160 MiB of tmpfs and frees it, so the
# host has that memory resident and the balloon's pages are likely among it; then it loads
# the driver, which inflates to the target: MemTotal falls by the target, and the host
# (scenarios.sh) sees skiff's resident memory fall.
if [ "$action" = balloon ]; then
  memtotal() { awk '/^MemTotal:/ { print $2 }' /proc/meminfo; }
  before=$(memtotal)
  mkdir -p /mnt/fill
  mount -t tmpfs -o size=200m tmpfs /mnt/fill
  dd if=/dev/zero of=/mnt/fill/zero bs=1M count=160 2>/dev/null
  echo "TIER3-BALLOON-TOUCHED $(du -m /mnt/fill/zero | cut -f1) MiB"
  sleep 2
  rm -f /mnt/fill/zero
  umount /mnt/fill
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon; do
    insmod "/lib/modules/tier3/$m.ko" || echo "TIER3-INSMOD-FAILED $m"
  done
  target_kib=0
  for word in $(cat /proc/cmdline); do
    case "$word" in tier3.balloon_mib=*) target_kib=$((${word#tier3.balloon_mib=} * 1024)) ;; esac
  done
  now=$before
  for _ in $(seq 1 120); do
    now=$(memtotal)
    [ $((before - now)) -ge "$target_kib" ] && break
    sleep 0.5
  done
  for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/device" ] && echo "TIER3-VIRTIO-DEVICE ${d##*/} id=$(cat "$d/device") driver=$(basename "$(readlink "$d/driver" 2>/dev/null)")"
  done
  delta=$((before - now))
  if [ "$delta" -ge "$target_kib" ]; then
    echo "TIER3-BALLOON-INFLATED ok memtotal_before_kib=$before memtotal_kib=$now delta_kib=$delta"
  else
    echo "TIER3-BALLOON-INFLATED short memtotal_before_kib=$before memtotal_kib=$now delta_kib=$delta want_kib=$target_kib"
  fi
  # The host samples skiff's resident memory meanwhile.
  sleep 4
  action=poweroff
fi
# tier3.action=vsock: skiff's virtio-vsock on virtio-pci (guest CID 3), exercised with socat
# (in the image that make-initramfs.sh --socat builds). Host → guest: a listener on port 5000
# echoes one connection back and keeps a copy; scenarios.sh's host end sends 1 MiB through
# skiff's Unix socket once the guest → host transfer is over. Guest → host: 1 MiB from
# /dev/urandom to CID 2 port 5001, which skiff hands to the host's listener on
# <socket>_5001. The guest prints the SHA-256 of what it sent and of what it received; the
# host compares them with its own copies (scenarios.sh, vsock_post).
if [ "$action" = vsock ]; then
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
           vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport; do
    insmod "/lib/modules/tier3/$m.ko" || echo "TIER3-INSMOD-FAILED $m"
  done
  bound=
  for _ in $(seq 1 20); do
    for d in /sys/bus/virtio/devices/*; do
      [ "$(basename "$(readlink "$d/driver" 2>/dev/null)")" = vmw_vsock_virtio_transport ] && bound=1
    done
    [ -n "$bound" ] && break
    sleep 0.5
  done
  for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/device" ] && echo "TIER3-VIRTIO-DEVICE ${d##*/} id=$(cat "$d/device") driver=$(basename "$(readlink "$d/driver" 2>/dev/null)")"
  done
  if ! command -v socat >/dev/null; then
    echo "TIER3-VSOCK-NO-SOCAT (the inner image was built without make-initramfs.sh --socat)"
  elif [ -z "$bound" ]; then
    echo "TIER3-VSOCK-NO-DEVICE"
  else
    # Host → guest. One connection (no fork): socat ends when it is over. -t 60: after the
    # host's end-of-file, wait for tee's last bytes to be echoed instead of socat's 0.5 s.
    socat -t 60 VSOCK-LISTEN:5000,reuseaddr EXEC:'tee /tmp/h2g' 2>/tmp/h2g.err &
    listener=$!
    echo "TIER3-VSOCK-LISTENING port=5000"
    # Guest → host.
    dd if=/dev/urandom of=/tmp/g2h bs=65536 count=16 2>/dev/null
    sum=$(sha256sum < /tmp/g2h | cut -d' ' -f1)
    if socat -u FILE:/tmp/g2h VSOCK-CONNECT:2:5001 2>/tmp/g2h.err; then
      echo "TIER3-VSOCK-G2H-SENT bytes=$(wc -c < /tmp/g2h) sha256=$sum"
    else
      echo "TIER3-VSOCK-G2H-FAILED $(tr '\n' ' ' < /tmp/g2h.err)"
    fi
    # The host connects once it has the guest's data (bounded: 90 s).
    for _ in $(seq 1 180); do
      kill -0 "$listener" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$listener" 2>/dev/null; then
      echo "TIER3-VSOCK-H2G-TIMEOUT received=$( [ -f /tmp/h2g ] && wc -c < /tmp/h2g)"
      kill "$listener"
    fi
    wait "$listener"
    rc=$?
    if [ -f /tmp/h2g ]; then
      echo "TIER3-VSOCK-H2G-RECEIVED bytes=$(wc -c < /tmp/h2g) sha256=$(sha256sum < /tmp/h2g | cut -d' ' -f1) socat_rc=$rc"
    else
      echo "TIER3-VSOCK-H2G-NONE socat_rc=$rc $(tr '\n' ' ' < /tmp/h2g.err)"
    fi
  fi
  grep virtio /proc/interrupts | sed 's/^/TIER3-IRQ /'
  action=poweroff
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
