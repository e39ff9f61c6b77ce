#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Creates (or removes) a Linux bridge and a persistent tap for a skiff VM, the way libvirt's
# default network attaches guests: the tap is a bridge port, the bridge carries the host's
# address on the guests' subnet, and (optionally) NAT lets guests reach the outside.
#
#   tools/net-bridge.sh up   [--bridge br-skiff] [--tap skiff-web02] [--address 10.0.0.1/24]
#                            [--queues 2] [--user USER] [--nat]
#   tools/net-bridge.sh down [--bridge br-skiff] [--tap skiff-web02] [--nat]
#
# Then run configs/bridged-net.json (its NIC uses tap "skiff-web02" with 2 queue pairs) and,
# in the guest: ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up && ping 10.0.0.1
#
# The tap is created persistent with vnet headers (and multi_queue when --queues > 1), owned
# by --user when given, so skiff can then run without CAP_NET_ADMIN. Needs root and
# iproute2 (and iptables with --nat).
set -euo pipefail

action=${1:-}
[[ $action == up || $action == down ]] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 64; }
shift
bridge=br-skiff tap=skiff-web02 address=10.0.0.1/24 queues=2 user= nat=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bridge) bridge=$2; shift 2 ;;
    --tap) tap=$2; shift 2 ;;
    --address) address=$2; shift 2 ;;
    --queues) queues=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --nat) nat=1; shift ;;
    *) echo "net-bridge.sh: unknown option $1" >&2; exit 64 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "net-bridge.sh: needs root (creating bridges and taps needs CAP_NET_ADMIN)" >&2; exit 77; }
command -v ip >/dev/null || { echo "net-bridge.sh: needs iproute2 (apt-get install iproute2)" >&2; exit 69; }

subnet() {  # 10.0.0.1/24 -> 10.0.0.0/24
  python3 -c "import ipaddress,sys; print(ipaddress.ip_interface(sys.argv[1]).network)" "$address"
}

if [[ $action == up ]]; then
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add name "$bridge" type bridge
    ip addr add "$address" dev "$bridge"
  fi
  ip link set "$bridge" up
  if ! ip link show "$tap" >/dev/null 2>&1; then
    flags=(vnet_hdr)
    [[ $queues -gt 1 ]] && flags+=(multi_queue)
    ip tuntap add dev "$tap" mode tap ${user:+user "$user"} "${flags[@]}"
  fi
  ip link set "$tap" master "$bridge"
  ip link set "$tap" up
  if [[ $nat == 1 ]]; then
    sysctl -q -w net.ipv4.ip_forward=1
    net=$(subnet)
    iptables -t nat -C POSTROUTING -s "$net" ! -o "$bridge" -j MASQUERADE 2>/dev/null ||
      iptables -t nat -A POSTROUTING -s "$net" ! -o "$bridge" -j MASQUERADE
  fi
  echo "bridge $bridge ($address) with tap $tap (${queues} queue(s)) is up"
else
  ip link del "$tap" 2>/dev/null || true
  if [[ $nat == 1 ]]; then
    iptables -t nat -D POSTROUTING -s "$(subnet)" ! -o "$bridge" -j MASQUERADE 2>/dev/null || true
  fi
  # Other VMs' taps may still be ports of the bridge: remove it only when empty.
  if [[ -z $(ls "/sys/class/net/$bridge/brif" 2>/dev/null) ]]; then ip link del "$bridge" 2>/dev/null || true; fi
  echo "tap $tap removed"
fi
