// SPDX-License-Identifier: Apache-2.0
// A Linux tap interface opened through /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR:
// every frame read or written starts with a 12-byte virtio-net header (TUNSETVNETHDRSZ), so
// frames move between the tap and guest buffers without reformatting.
//
// Offload mapping (TUNSETOFFLOAD tells the kernel which frames *we* can take on read, i.e.
// what the guest accepts on its receive queues; frames we write may always carry partial
// checksums and GSO metadata in the header):
//   VIRTIO_NET_F_GUEST_CSUM -> TUN_F_CSUM    (partial checksums)
//   VIRTIO_NET_F_GUEST_TSO4 -> TUN_F_TSO4    (TCPv4 segmentation offload; needs TUN_F_CSUM)
//   VIRTIO_NET_F_GUEST_TSO6 -> TUN_F_TSO6    (TCPv6 segmentation offload; needs TUN_F_CSUM)
//   VIRTIO_NET_F_GUEST_ECN  -> TUN_F_TSO_ECN (TSO frames with CWR set; needs a TSO flag)
// The HOST_* features (guest-to-tap offloads) need no flag: a vnet_hdr tap accepts them.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "skiff/error.h"
#include "virtio/net/net_backend.h"

namespace skiff::virtio::net {

// Interface names are at most IFNAMSIZ - 1 = 15 bytes, not "." or "..", without '/', ':',
// '%' or whitespace. The error says which rule failed.
Result<void> validate_tap_name(std::string_view name);

// The TUN_F_* flags for the driver's acked features (the mapping above).
unsigned tun_offload_flags(uint64_t acked_features);

// The TUN_F_* offload flags skiff may use: TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN.
unsigned tun_offloads_wanted();

class Tap : public NetBackend {
 public:
  // Opens (creating it when absent) the tap `name` with `queues` queues (IFF_MULTI_QUEUE when
  // more than one). A tap skiff creates lives as long as its fds and is brought up; an
  // existing persistent tap is reused as it is. `mtu`, when given, is set with SIOCSIFMTU.
  static Result<std::unique_ptr<Tap>> open(std::string_view name, uint16_t queues,
                                           std::optional<uint32_t> mtu);
  // Adopts an already-open tap fd (duplicated; the caller keeps its own). It must be a tap
  // opened with IFF_VNET_HDR; one fd serves one queue pair, so `queues` must be 1.
  static Result<std::unique_ptr<Tap>> adopt(int fd, uint16_t queues, std::optional<uint32_t> mtu);

  ~Tap() override = default;

  std::string name() const override { return name_; }
  size_t queue_count() const override { return fds_.size(); }
  int queue_fd(size_t queue) const override;
  unsigned supported_offloads() const override { return supported_offloads_; }
  Result<void> set_offloads(unsigned tun_flags) override;
  Result<void> set_queue_enabled(size_t queue, bool enabled) override;
  uint32_t mtu() const override { return mtu_; }

  // True when skiff created the interface (it disappears when the last fd closes).
  bool created() const { return created_; }
  // The flags TUNSETOFFLOAD last applied.
  unsigned offloads() const;

 private:
  Tap(std::string name, std::vector<UniqueFd> fds, bool created);
  // Vnet header size, nonblocking mode, offload probe, MTU and link state, after the fds exist.
  Result<void> configure(std::optional<uint32_t> mtu);

  const std::string name_;
  std::vector<UniqueFd> fds_;
  const bool created_;
  unsigned supported_offloads_ = 0;
  uint32_t mtu_ = 1500;
  mutable std::mutex mutex_;  // guards attached_ and offloads_
  std::vector<bool> attached_;
  unsigned offloads_ = 0;
};

}  // namespace skiff::virtio::net
