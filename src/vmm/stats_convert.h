// SPDX-License-Identifier: Apache-2.0
// Copies the devices' own counters into the public VmStats structs, for the Vm's stats().
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "skiff/stats.h"
#include "skiff/vm.h"
#include "vcpu/vcpu_runner.h"
#include "virtio/blk/virtio_blk.h"
#include "virtio/net/virtio_net.h"
#include "virtio/vsock/vsock_muxer.h"

namespace skiff {

VcpuStats to_vcpu_stats(uint32_t id, const VcpuExitCounters& counters);
DiskStats to_disk_stats(std::string id, const virtio::BlkStats& stats);
NetStats to_net_stats(std::string id, const virtio::net::NetCounters& counters);
// `now` dates the guest statistics (guest_stats_age_s).
VsockStats to_vsock_stats(uint32_t guest_cid, const virtio::vsock::MuxerStats& stats);
BalloonStats to_balloon_stats(const BalloonStatus& status, std::chrono::system_clock::time_point now);

}  // namespace skiff
