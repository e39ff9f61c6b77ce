// SPDX-License-Identifier: Apache-2.0
// A snapshot of a VM's counters: what `GET /vm/stats` returns as JSON and `GET /metrics`
// as Prometheus text, and what embedders read from the library. Plain values, copied out
// of the devices at one moment; counters only grow while the VM lives.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "skiff/state.h"

namespace skiff {

// One vCPU's exits to the VMM by reason. Reasons today (docs/api.md, GET /vm/stats): "io"
// (port I/O), "mmio", "unhandled_io" (accesses to ports/addresses no device claims),
// "interrupted" (EINTR / immediate exits: kicks for pause and stop) and "other". The map
// keeps the API open to new reasons without changing this struct.
struct VcpuStats {
  uint32_t id = 0;
  std::map<std::string, uint64_t> exits;
  bool operator==(const VcpuStats&) const = default;
};

// Time spent serving a disk's requests, submission to completion. Absent while the device
// does not measure it.
struct DiskLatency {
  uint64_t requests = 0;     // requests measured
  uint64_t total_ns = 0;     // sum of their durations
  uint64_t max_ns = 0;       // the longest one since the VM started
  bool operator==(const DiskLatency&) const = default;
};

// How a disk's queue threads busy-poll for work before they sleep (the spec's
// disks[].poll_max_us). Absent while the device does not poll.
struct DiskPolling {
  uint64_t episodes = 0;   // poll windows run
  uint64_t hits = 0;       // times polling found a request or a completion
  uint64_t contended = 0;  // windows cut short: the thread was preempted (shares a CPU)
  uint64_t window_ns = 0;  // the current window (the longest among the queues); 0: not polling
  bool operator==(const DiskPolling&) const = default;
};

// One virtio-blk disk (the spec's disks[].id).
struct DiskStats {
  std::string id;
  uint64_t reads = 0;        // read requests completed OK
  uint64_t writes = 0;       // write requests completed OK
  uint64_t read_bytes = 0;
  uint64_t write_bytes = 0;
  uint64_t flushes = 0;
  uint64_t discards = 0;
  uint64_t write_zeroes = 0;
  uint64_t errors = 0;       // requests answered with an I/O error
  uint64_t unsupported = 0;  // requests answered "unsupported"
  uint64_t throttled = 0;    // times the rate limiter paused a queue
  std::optional<DiskLatency> latency;
  std::optional<DiskPolling> polling;
  bool operator==(const DiskStats&) const = default;
};

// One virtio-net NIC (the spec's nets[].id). rx is host -> guest, tx guest -> host.
struct NetStats {
  std::string id;
  uint64_t rx_bytes = 0;
  uint64_t rx_packets = 0;
  uint64_t rx_dropped = 0;  // frames from the tap no guest buffer could hold
  uint64_t tx_bytes = 0;
  uint64_t tx_packets = 0;
  uint64_t tx_dropped = 0;  // malformed chains and frames the tap refused
  bool operator==(const NetStats&) const = default;
};

// The memory balloon.
struct BalloonStats {
  uint64_t target_mib = 0;  // what the host asked the guest to hold
  uint64_t actual_mib = 0;  // what the guest driver says it holds
  uint64_t bytes_released = 0;  // memory handed back to the host since the VM started
  // The guest's latest memory statistics by name (swap_in, free_memory, ...; memory figures
  // in bytes); empty until the driver sends a set.
  std::map<std::string, uint64_t> guest_stats;
  uint64_t guest_stats_sets = 0;           // sets received so far
  std::optional<double> guest_stats_age_s;  // seconds since the latest set arrived
  bool operator==(const BalloonStats&) const = default;
};

// One open virtio-vsock connection. Ports as the guest sees them: host_port is the
// connection's port on CID 2.
struct VsockConnectionStats {
  uint32_t host_port = 0;
  uint32_t guest_port = 0;
  std::string initiator;  // "host" (a program's CONNECT) or "guest"
  std::string state;      // "connecting", "established" or "closing"
  uint64_t bytes_to_guest = 0;
  uint64_t bytes_to_host = 0;
  bool operator==(const VsockConnectionStats&) const = default;
};

// The virtio-vsock device: totals since the VM started, and its open connections.
struct VsockStats {
  uint32_t guest_cid = 0;
  uint64_t host_connections = 0;   // host programs' connections the guest accepted
  uint64_t guest_connections = 0;  // guest connections a host program accepted
  uint64_t refused = 0;            // refused either way, timed out, or over the connection limit
  uint64_t resets_sent = 0;        // RST packets to the guest
  uint64_t resets_received = 0;    // RST packets from the guest
  uint64_t bytes_to_guest = 0;
  uint64_t bytes_to_host = 0;
  uint64_t bad_packets = 0;        // malformed packets and protocol violations from the guest
  std::vector<VsockConnectionStats> connections;
  bool operator==(const VsockStats&) const = default;
};

struct VmStats {
  VmState state = VmState::created;
  double uptime_s = 0;  // seconds since the VM started; 0 before
  std::vector<VcpuStats> vcpus;
  std::vector<DiskStats> disks;
  std::vector<NetStats> nets;
  std::optional<BalloonStats> balloon;  // absent when the VM has no balloon
  std::optional<VsockStats> vsock;      // absent when the VM has no vsock device
  bool operator==(const VmStats&) const = default;
};

}  // namespace skiff
