#!/usr/bin/env bash
# Installs everything skiff needs to build and test, from Debian 12 packages only.
# Usage: tools/install-deps.sh [--tests]   (run as root)
#   --tests  also installs what the whole test suite needs beyond building: QEMU, busybox
#            and cpio for the real-Linux (tier 3) boots and the QEMU reference runs, socat for
#            tier 3's virtio-vsock scenario (both ends of its connections), clang 16 with its
#            libFuzzer runtime for the fuzz targets. (--tier3 is the old name.)
set -euo pipefail

want_tests=0
for arg in "$@"; do
  case "$arg" in
    --tests|--tier3) want_tests=1 ;;
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
  libgtest-dev libgmock-dev libseccomp-dev liburing-dev libhttp-parser-dev
  python3
)
if [ "$want_tests" -eq 1 ]; then
  # tier 3 and the QEMU reference runs (socat: tier 3's virtio-vsock scenario); libFuzzer
  # targets (fuzz/) need clang >= 16; fio is the host ceiling in the blk benchmark (its
  # smoke run is a test)
  packages+=(qemu-system-x86 busybox-static cpio socat clang-16 libclang-rt-16-dev fio)
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
