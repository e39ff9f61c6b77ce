// SPDX-License-Identifier: Apache-2.0
#include "vmm/stats_convert.h"

#include <utility>

namespace skiff {

VcpuStats to_vcpu_stats(uint32_t id, const VcpuExitCounters& counters) {
  VcpuStats out;
  out.id = id;
  out.exits = {{"io", counters.io.load(std::memory_order_relaxed)},
               {"mmio", counters.mmio.load(std::memory_order_relaxed)},
               {"unhandled_io", counters.unhandled_io.load(std::memory_order_relaxed)},
               {"interrupted", counters.interrupted.load(std::memory_order_relaxed)},
               {"other", counters.other.load(std::memory_order_relaxed)}};
  return out;
}

DiskStats to_disk_stats(std::string id, const virtio::BlkStats& stats) {
  DiskStats out;
  out.id = std::move(id);
  out.reads = stats.reads;
  out.writes = stats.writes;
  out.read_bytes = stats.read_bytes;
  out.write_bytes = stats.write_bytes;
  out.flushes = stats.flushes;
  out.discards = stats.discards;
  out.write_zeroes = stats.write_zeroes;
  out.errors = stats.errors;
  out.unsupported = stats.unsupported;
  out.throttled = stats.throttled;
  out.latency = DiskLatency{stats.timed_requests, stats.latency_total_ns, stats.latency_max_ns};
  out.polling = DiskPolling{stats.poll_episodes, stats.poll_hits, stats.poll_contended, stats.poll_window_ns};
  return out;
}

NetStats to_net_stats(std::string id, const virtio::net::NetCounters& counters) {
  NetStats out;
  out.id = std::move(id);
  out.rx_bytes = counters.rx_bytes;
  out.rx_packets = counters.rx_packets;
  out.rx_dropped = counters.rx_dropped;
  out.tx_bytes = counters.tx_bytes;
  out.tx_packets = counters.tx_packets;
  out.tx_dropped = counters.tx_dropped;
  return out;
}

VsockStats to_vsock_stats(uint32_t guest_cid, const virtio::vsock::MuxerStats& stats) {
  VsockStats out;
  out.guest_cid = guest_cid;
  out.host_connections = stats.host_connections;
  out.guest_connections = stats.guest_connections;
  out.refused = stats.refused;
  out.resets_sent = stats.resets_sent;
  out.resets_received = stats.resets_received;
  out.bytes_to_guest = stats.bytes_to_guest;
  out.bytes_to_host = stats.bytes_to_host;
  out.bad_packets = stats.bad_packets;
  for (const auto& connection : stats.connections) {
    out.connections.push_back(VsockConnectionStats{.host_port = connection.host_port,
                                                   .guest_port = connection.guest_port,
                                                   .initiator = connection.host_initiated ? "host" : "guest",
                                                   .state = connection.state,
                                                   .bytes_to_guest = connection.bytes_to_guest,
                                                   .bytes_to_host = connection.bytes_to_host});
  }
  return out;
}

BalloonStats to_balloon_stats(const BalloonStatus& status, std::chrono::system_clock::time_point now) {
  BalloonStats out;
  out.target_mib = status.target_mib();
  out.actual_mib = status.actual_mib();
  out.bytes_released = status.bytes_released;
  out.guest_stats = status.guest_stats;
  out.guest_stats_sets = status.stats_sets;
  if (status.stats_received_at) {
    // The system clock may step backwards; an age is never negative.
    double age = std::chrono::duration<double>(now - *status.stats_received_at).count();
    out.guest_stats_age_s = age < 0 ? 0 : age;
  }
  return out;
}

}  // namespace skiff
