#!/usr/bin/env bash
# Installs everything skiff needs to build and test, from Debian 12 packages only.
# Usage: tools/install-deps.sh [--tier3]   (run as root)
#   --tier3  also installs what the real-Linux boot tests need (QEMU, busybox, cpio).
set -euo pipefail

want_tier3=0
for arg in "$@"; do
  case "$arg" in
    --tier3) want_tier3=1 ;;
    *) echo "install-deps.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (apt-get install needs it)" >&2
  exit 1
fi

packages=(
  build-essential cmake ninja-build pkg-config
  libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libseccomp-dev liburing-dev
  python3
  # libFuzzer targets (fuzz/): clang >= 16 with its fuzzer runtime
  clang-16 libclang-rt-16-dev
)
if [ "$want_tier3" -eq 1 ]; then
  packages+=(qemu-system-x86 busybox-static cpio)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps.sh: all packages already installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
