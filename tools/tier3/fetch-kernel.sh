#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Downloads a Debian kernel package and unpacks it into a cache directory, for the tier-3
# boot tests. The version is resolved from the metapackage at run time, never hard-coded.
#
# Usage: tools/tier3/fetch-kernel.sh [--flavour cloud|generic] CACHE_DIR
#   cloud    linux-image-cloud-amd64 → linux-image-<version>-cloud-amd64 (default)
#   generic  linux-image-amd64       → linux-image-<version>-amd64
#
# Prints two lines on stdout (everything else goes to stderr):
#   VMLINUZ=<path to vmlinuz>
#   MODULES=<path to lib/modules/<version>>
# A second run with the package already unpacked downloads nothing.
# Exit codes: 0 ok, 2 usage, 3 the package could not be resolved or downloaded.
set -euo pipefail

flavour=cloud
cache=
while [ $# -gt 0 ]; do
  case "$1" in
    --flavour) flavour=${2:?--flavour needs cloud or generic}; shift 2 ;;
    --flavour=*) flavour=${1#--flavour=}; shift ;;
    -h|--help) sed -n '3,13p' "$0"; exit 0 ;;
    -*) echo "fetch-kernel.sh: unknown option '$1'" >&2; exit 2 ;;
    *) cache=$1; shift ;;
  esac
done
[ -n "$cache" ] || { echo "fetch-kernel.sh: usage: fetch-kernel.sh [--flavour cloud|generic] CACHE_DIR" >&2; exit 2; }

case "$flavour" in
  cloud) meta=linux-image-cloud-amd64 ;;
  generic) meta=linux-image-amd64 ;;
  *) echo "fetch-kernel.sh: unknown flavour '$flavour' (cloud or generic)" >&2; exit 2 ;;
esac

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# The metapackage depends on exactly one versioned image package, e.g.
# linux-image-6.1.0-56-cloud-amd64. An empty apt cache gives no answer: refresh it once.
resolve() {
  apt-cache depends "$meta" 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1
}
pkg=$(resolve || true)
if [ -z "$pkg" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "fetch-kernel.sh: apt cache does not know $meta; running apt-get update" >&2
    apt-get update -q >&2 || true
  else
    echo "fetch-kernel.sh: apt cache does not know $meta (apt-get update needs root)" >&2
  fi
  pkg=$(resolve || true)
fi
if [ -z "$pkg" ]; then
  echo "fetch-kernel.sh: cannot resolve the image package of $meta (apt-cache depends $meta)" >&2
  exit 3
fi
# linux-image-6.1.0-56-cloud-amd64 → 6.1.0-56-cloud-amd64
kver=${pkg#linux-image-}
root=$cache/$pkg
vmlinuz=$root/boot/vmlinuz-$kver
modules=$root/lib/modules/$kver

if [ ! -f "$root/.unpacked" ]; then
  echo "fetch-kernel.sh: downloading $pkg" >&2
  dl=$cache/download
  rm -rf "$dl" "$root"
  mkdir -p "$dl"
  # apt-get download runs as the _apt user when root; the directory must be writable by it.
  chmod 0777 "$dl"
  if ! (cd "$dl" && apt-get download -q "$pkg" >&2); then
    echo "fetch-kernel.sh: apt-get download $pkg failed" >&2
    exit 3
  fi
  deb=$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" | head -n1)
  [ -n "$deb" ] || { echo "fetch-kernel.sh: no .deb for $pkg after download" >&2; exit 3; }
  mkdir -p "$root.tmp"
  dpkg-deb -x "$deb" "$root.tmp"
  mv "$root.tmp" "$root"
  rm -rf "$dl"
  touch "$root/.unpacked"
fi

[ -f "$vmlinuz" ] || { echo "fetch-kernel.sh: $vmlinuz missing from $pkg" >&2; exit 3; }
[ -d "$modules" ] || { echo "fetch-kernel.sh: $modules missing from $pkg" >&2; exit 3; }
echo "VMLINUZ=$vmlinuz"
echo "MODULES=$modules"
