#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the two busybox-static initramfs images of the tier-3 tests.
#
#   make-initramfs.sh inner OUT.cpio.gz [--modules DIR] [--init FILE] [--socat BIN]
#       The guest skiff boots: /init = tools/tier3/inner-init.sh, or FILE with --init (your
#       own test script: see docs/kernel-ci.md). With --modules (the inner
#       kernel's lib/modules/<version>), also the modules the inner /init loads: for the
#       virtio scenarios virtio_ring, virtio, virtio_mmio, virtio_pci and its two helpers,
#       virtio-rng; for the pvpanic scenario pvpanic and pvpanic-mmio; for virtio-blk
#       virtio_blk; for virtio-net failover, net_failover and virtio_net; for virtio-balloon
#       virtio_balloon; for virtio-vsock vsock, vmw_vsock_virtio_transport_common and
#       vmw_vsock_virtio_transport. With --socat, also that socat (VSOCK-LISTEN and
#       VSOCK-CONNECT for the virtio-vsock scenario) at /usr/bin/socat with the shared
#       libraries ldd lists: about 4 MB more gzipped, so run.sh builds a second image with
#       it for that scenario alone and the others keep booting the small one.
#
#   make-initramfs.sh outer OUT.cpio[.gz] --skiff BIN --modules DIR \
#       --inner-kernel VMLINUZ --inner-initrd INNER.cpio.gz [--generic-kernel VMLINUZ] \
#       [--inner-extra "WORDS"] [--workarounds "WORDS"|none] [--inner-memory 256M] [--panic-rc N]
#       [--hang-timeout S] [--socat BIN --vsock-initrd INNER-VSOCK.cpio.gz]
#       The VM QEMU boots: busybox, the KVM modules of the outer kernel (DIR is its
#       lib/modules/<version>) plus loop and tun (virtio-blk's 4 KiB-sector loop device,
#       virtio-net's tap), skiff with its shared libraries, util-linux's losetup with its
#       libraries when this host has it (busybox's cannot set a sector size), the inner kernel(s) and
#       initramfs, tools/tier3/scenarios.sh, and /init = tools/tier3/outer-init.sh. With
#       --socat and --vsock-initrd (the virtio-vsock scenario), also socat with its libraries
#       at /tier3/socat (the host end of the vsock connections) and the inner image that
#       carries the guest's socat.
#       OUT ending in .gz is gzip-compressed, anything else is a plain cpio (faster for
#       QEMU's TCG to unpack).
#
# Needs busybox-static, cpio and gzip (and socat for --socat). Run as root so /dev/console
# can be created (without it the kernel's built-in initramfs provides one).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "make-initramfs.sh: $*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: make-initramfs.sh inner|outer OUT [options] (see the header)"
kind=$1
out=$2
shift 2

skiff='' modules='' init_script='' inner_kernel='' inner_initrd='' generic_kernel='' inner_extra=''
inner_memory=256M panic_rc=72 hang_timeout=45 workarounds='' socat='' vsock_initrd=''
while [ $# -gt 0 ]; do
  case "$1" in
    --skiff) skiff=$2; shift 2 ;;
    --modules) modules=$2; shift 2 ;;
    --init) init_script=$2; shift 2 ;;
    --inner-kernel) inner_kernel=$2; shift 2 ;;
    --inner-initrd) inner_initrd=$2; shift 2 ;;
    --generic-kernel) generic_kernel=$2; shift 2 ;;
    --inner-extra) inner_extra=$2; shift 2 ;;
    --workarounds) workarounds=$2; shift 2 ;;
    --inner-memory) inner_memory=$2; shift 2 ;;
    --panic-rc) panic_rc=$2; shift 2 ;;
    --hang-timeout) hang_timeout=$2; shift 2 ;;
    --socat) socat=$2; shift 2 ;;
    --vsock-initrd) vsock_initrd=$2; shift 2 ;;
    *) die "unknown option '$1'" ;;
  esac
done

busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found (apt-get install busybox-static)"
# The initramfs has no libc: the busybox must be static.
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked; install busybox-static"
fi
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"
if [ -n "$socat" ]; then
  [ -x "$socat" ] || die "--socat BIN: '$socat' is not an executable (apt-get install socat, or tools/install-deps.sh --tests)"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/skiff-tier3-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# Busybox and a link for every applet it has, at the paths it names.
install_busybox() {
  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,root}
  cp "$busybox" "$stage/bin/busybox"
  local applet
  while read -r applet; do
    [ "$applet" = "bin/busybox" ] && continue
    mkdir -p "$stage/$(dirname "$applet")"
    ln -sf /bin/busybox "$stage/$applet"
  done < <("$busybox" --list-full)
  if [ "$(id -u)" -eq 0 ]; then
    mknod -m 600 "$stage/dev/console" c 5 1
    mknod -m 666 "$stage/dev/null" c 1 3
  fi
}

# Copies a file into the stage at the same absolute path (shared libraries).
copy_at_path() {
  local src=$1
  mkdir -p "$stage/$(dirname "$src")"
  cp -L "$src" "$stage/$src"
}

# The shared libraries ldd lists for BIN, and the dynamic loader, at their own paths (those
# already in the stage are kept).
copy_libs() {
  local lib
  while read -r lib; do
    [ -e "$stage/$lib" ] || copy_at_path "$lib"
  done < <(ldd "$1" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }')
}

# Copies a kernel module, decompressing .ko.xz/.ko.zst/.ko.gz (Debian 12 ships plain .ko;
# later releases compress them, and busybox insmod cannot read every format).
copy_module() {
  local name=$1 dest=$stage/lib/modules/tier3 found
  found=$(find "$modules" -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \
            -o -name "$name.ko.gz" | head -n1)
  [ -n "$found" ] || die "module $name not found under $modules"
  mkdir -p "$dest"
  case "$found" in
    *.ko) cp "$found" "$dest/$name.ko" ;;
    *.ko.xz) xz -dc "$found" > "$dest/$name.ko" ;;
    *.ko.zst) zstd -qdc "$found" > "$dest/$name.ko" ;;
    *.ko.gz) gzip -dc "$found" > "$dest/$name.ko" ;;
  esac
}

write_archive() {
  local tmp=$out.tmp
  mkdir -p "$(dirname "$out")"
  case "$out" in
    *.gz) (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6) > "$tmp" ;;
    *) (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$tmp" ;;
  esac
  mv "$tmp" "$out"
  echo "make-initramfs.sh: wrote $out ($(du -h "$out" | cut -f1))" >&2
}

case "$kind" in
  inner)
    install_busybox
    if [ -n "$modules" ]; then
      [ -d "$modules" ] || die "--modules DIR: $modules is not a directory"
      # In dependency order (each .ko's modinfo depends=): inner-init.sh loads them so.
      for m in virtio_ring virtio virtio_mmio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
               virtio-rng pvpanic pvpanic-mmio virtio_blk failover net_failover virtio_net virtio_balloon \
               vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport; do
        copy_module "$m"
      done
    fi
    # The virtio-vsock scenario's guest program: socat, dynamically linked (Debian has no
    # static build), so with its libraries; the guest's /init runs it from /usr/bin.
    if [ -n "$socat" ]; then
      install -D -m 0755 "$socat" "$stage/usr/bin/socat"
      copy_libs "$socat"
    fi
    if [ -n "$init_script" ]; then
      [ -f "$init_script" ] || die "--init FILE: $init_script not found"
      install -m 0755 "$init_script" "$stage/init"
    else
      install -m 0755 "$here/inner-init.sh" "$stage/init"
    fi
    write_archive
    ;;
  outer)
    [ -x "$skiff" ] || die "--skiff BIN: executable skiff binary needed"
    [ -d "$modules" ] || die "--modules DIR: the kernel's lib/modules/<version> needed"
    [ -f "$inner_kernel" ] || die "--inner-kernel VMLINUZ needed"
    [ -f "$inner_initrd" ] || die "--inner-initrd INNER.cpio.gz needed"
    install_busybox
    for m in irqbypass kvm kvm-amd kvm-intel loop tun; do copy_module "$m"; done

    mkdir -p "$stage/tier3"
    # Without debug information: a smaller archive is faster for TCG to load and unpack.
    if command -v strip >/dev/null; then
      strip --strip-debug -o "$stage/tier3/skiff" "$skiff"
      chmod 0755 "$stage/tier3/skiff"
    else
      install -m 0755 "$skiff" "$stage/tier3/skiff"
    fi
    # The shared libraries ldd lists, and the dynamic loader, at their own paths.
    while read -r lib; do
      copy_at_path "$lib"
    done < <(ldd "$skiff" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }')
    # glibc's backtrace() loads libgcc_s at run time (skiff links libgcc statically, so ldd
    # does not list it): the seccomp violation report prints its call stack with it.
    libgcc_s=$(gcc -print-file-name=libgcc_s.so.1 2>/dev/null || true)
    if [ -n "$libgcc_s" ] && [ -e "$libgcc_s" ]; then
      copy_at_path "$(readlink -f "$libgcc_s")"
    fi
    # util-linux's losetup for `losetup -b 4096` (the virtio-blk scenario's 4 KiB-sector
    # loop device); busybox's has no -b. Without it that part of the scenario fails.
    losetup_path=
    util_losetup=$(command -v losetup || true)
    if [ -n "$util_losetup" ] && "$util_losetup" --help 2>&1 | grep -- --sector-size >/dev/null; then
      install -m 0755 "$util_losetup" "$stage/tier3/losetup"
      copy_libs "$util_losetup"
      losetup_path=/tier3/losetup
    fi
    # The virtio-vsock scenario: socat as the host end of the connections, and the inner
    # image that carries the guest's socat. Without them that scenario fails on "socat".
    socat_path='' vsock_initrd_path=''
    if [ -n "$socat" ] && [ -n "$vsock_initrd" ]; then
      [ -f "$vsock_initrd" ] || die "--vsock-initrd: $vsock_initrd not found"
      install -m 0755 "$socat" "$stage/tier3/socat"
      copy_libs "$socat"
      cp "$vsock_initrd" "$stage/tier3/inner-vsock.cpio.gz"
      socat_path=/tier3/socat vsock_initrd_path=/tier3/inner-vsock.cpio.gz
    fi
    cp "$inner_kernel" "$stage/tier3/vmlinuz"
    cp "$inner_initrd" "$stage/tier3/inner.cpio.gz"
    generic_path=
    if [ -n "$generic_kernel" ]; then
      cp "$generic_kernel" "$stage/tier3/vmlinuz-generic"
      generic_path=/tier3/vmlinuz-generic
    fi
    install -m 0755 "$here/scenarios.sh" "$stage/tier3/scenarios.sh"
    install -m 0755 "$here/outer-init.sh" "$stage/init"
    {
      echo "SKIFF=/tier3/skiff"
      echo "INNER_KERNEL=/tier3/vmlinuz"
      echo "INNER_INITRD=/tier3/inner.cpio.gz"
      echo "GENERIC_KERNEL=$generic_path"
      echo "LOSETUP=$losetup_path"
      echo "SOCAT=$socat_path"
      echo "INNER_INITRD_VSOCK=$vsock_initrd_path"
      printf 'INNER_EXTRA=%q\n' "$inner_extra"
      # Empty: scenarios.sh's default workarounds apply.
      printf 'WORKAROUNDS=%q\n' "$workarounds"
      printf 'INNER_MEMORY=%q\n' "$inner_memory"
      printf 'PANIC_RC=%q\n' "$panic_rc"
      printf 'HANG_TIMEOUT=%q\n' "$hang_timeout"
    } > "$stage/tier3/env"
    write_archive
    ;;
  *) die "first argument must be inner or outer, not '$kind'" ;;
esac
