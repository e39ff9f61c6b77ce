// SPDX-License-Identifier: Apache-2.0
#include "api/metrics.h"

#include <array>
#include <cstdint>
#include <functional>

#include <fmt/format.h>

namespace skiff::api {

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

// Appends one metric family at a time: HELP and TYPE once, then its samples.
class MetricWriter {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void sample(std::string_view name, std::string_view labels, uint64_t value) {
    fmt::format_to(std::back_inserter(out_), "{}{}{}{} {}\n", name, labels.empty() ? "" : "{", labels,
                   labels.empty() ? "" : "}", value);
  }
  void sample(std::string_view name, std::string_view labels, double value) {
    fmt::format_to(std::back_inserter(out_), "{}{}{}{} {}\n", name, labels.empty() ? "" : "{", labels,
                   labels.empty() ? "" : "}", value);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string label(std::string_view name, std::string_view value) {
  return fmt::format("{}=\"{}\"", name, escape_label_value(value));
}

template <typename Device>
struct CounterField {
  std::string_view name;
  std::string_view help;
  uint64_t Device::*field;
};

constexpr std::array<CounterField<DiskStats>, 10> kDiskCounters = {{
    {"skiff_disk_reads_total", "Read requests completed successfully.", &DiskStats::reads},
    {"skiff_disk_writes_total", "Write requests completed successfully.", &DiskStats::writes},
    {"skiff_disk_read_bytes_total", "Bytes read by the guest.", &DiskStats::read_bytes},
    {"skiff_disk_write_bytes_total", "Bytes written by the guest.", &DiskStats::write_bytes},
    {"skiff_disk_flushes_total", "Flush requests completed.", &DiskStats::flushes},
    {"skiff_disk_discards_total", "Discard requests completed.", &DiskStats::discards},
    {"skiff_disk_write_zeroes_total", "Write-zeroes requests completed.", &DiskStats::write_zeroes},
    {"skiff_disk_errors_total", "Requests answered with an I/O error.", &DiskStats::errors},
    {"skiff_disk_unsupported_total", "Requests answered as unsupported.", &DiskStats::unsupported},
    {"skiff_disk_throttled_total", "Times the rate limiter paused a queue.", &DiskStats::throttled},
}};

constexpr std::array<CounterField<NetStats>, 6> kNetCounters = {{
    {"skiff_net_rx_bytes_total", "Bytes delivered from the tap to the guest.", &NetStats::rx_bytes},
    {"skiff_net_rx_packets_total", "Frames delivered from the tap to the guest.", &NetStats::rx_packets},
    {"skiff_net_rx_dropped_total", "Frames from the tap no guest buffer could hold.", &NetStats::rx_dropped},
    {"skiff_net_tx_bytes_total", "Bytes sent by the guest to the tap.", &NetStats::tx_bytes},
    {"skiff_net_tx_packets_total", "Frames sent by the guest to the tap.", &NetStats::tx_packets},
    {"skiff_net_tx_dropped_total", "Malformed guest frames and frames the tap refused.", &NetStats::tx_dropped},
}};

constexpr std::array<CounterField<VsockStats>, 8> kVsockCounters = {{
    {"skiff_vsock_host_connections_total", "Host programs' connections the guest accepted.",
     &VsockStats::host_connections},
    {"skiff_vsock_guest_connections_total", "Guest connections a host program accepted.",
     &VsockStats::guest_connections},
    {"skiff_vsock_refused_total", "Connections refused either way, timed out, or over the limit.",
     &VsockStats::refused},
    {"skiff_vsock_resets_sent_total", "RST packets sent to the guest.", &VsockStats::resets_sent},
    {"skiff_vsock_resets_received_total", "RST packets received from the guest.", &VsockStats::resets_received},
    {"skiff_vsock_bytes_to_guest_total", "Bytes from host programs to the guest.", &VsockStats::bytes_to_guest},
    {"skiff_vsock_bytes_to_host_total", "Bytes from the guest to host programs.", &VsockStats::bytes_to_host},
    {"skiff_vsock_bad_packets_total", "Malformed packets and protocol violations from the guest.",
     &VsockStats::bad_packets},
}};

constexpr double kNanosecondsPerSecond = 1e9;
constexpr uint64_t kBytesPerMib = uint64_t{1} << 20;

}  // namespace

std::string format_prometheus_metrics(const VmStats& stats) {
  MetricWriter out;

  out.family("skiff_vm_state", "gauge", "1 for the state the VM is in, 0 for the others.");
  for (VmState state : {VmState::created, VmState::running, VmState::paused, VmState::stopping, VmState::stopped}) {
    out.sample("skiff_vm_state", label("state", to_string(state)), uint64_t{state == stats.state ? 1u : 0u});
  }
  out.family("skiff_vm_uptime_seconds", "gauge", "Seconds since the VM started.");
  out.sample("skiff_vm_uptime_seconds", "", stats.uptime_s);

  if (!stats.vcpus.empty()) {
    out.family("skiff_vcpu_exits_total", "counter", "vCPU exits to the VMM by reason.");
    for (const VcpuStats& vcpu : stats.vcpus) {
      for (const auto& [reason, count] : vcpu.exits) {
        out.sample("skiff_vcpu_exits_total",
                   fmt::format("{},{}", label("vcpu", fmt::format("{}", vcpu.id)), label("reason", reason)), count);
      }
    }
  }

  if (!stats.disks.empty()) {
    for (const auto& counter : kDiskCounters) {
      out.family(counter.name, "counter", counter.help);
      for (const DiskStats& disk : stats.disks) out.sample(counter.name, label("disk", disk.id), disk.*counter.field);
    }
    bool any_latency = false;
    for (const DiskStats& disk : stats.disks) any_latency = any_latency || disk.latency.has_value();
    if (any_latency) {
      // A summary without quantiles: _sum and _count give the mean over any interval.
      out.family("skiff_disk_request_duration_seconds", "summary", "Time from submission to completion of requests.");
      for (const DiskStats& disk : stats.disks) {
        if (!disk.latency) continue;
        out.sample("skiff_disk_request_duration_seconds_sum", label("disk", disk.id),
                   static_cast<double>(disk.latency->total_ns) / kNanosecondsPerSecond);
        out.sample("skiff_disk_request_duration_seconds_count", label("disk", disk.id), disk.latency->requests);
      }
      out.family("skiff_disk_request_duration_max_seconds", "gauge", "The longest request since the VM started.");
      for (const DiskStats& disk : stats.disks) {
        if (!disk.latency) continue;
        out.sample("skiff_disk_request_duration_max_seconds", label("disk", disk.id),
                   static_cast<double>(disk.latency->max_ns) / kNanosecondsPerSecond);
      }
    }
    bool any_polling = false;
    for (const DiskStats& disk : stats.disks) any_polling = any_polling || disk.polling.has_value();
    if (any_polling) {
      // The families come one after another (the text format wants a family's samples together).
      const auto polling_family = [&](std::string_view name, std::string_view type, std::string_view help,
                                      auto value) {
        out.family(name, type, help);
        for (const DiskStats& disk : stats.disks) {
          if (disk.polling) out.sample(name, label("disk", disk.id), value(*disk.polling));
        }
      };
      polling_family("skiff_disk_poll_episodes_total", "counter", "Busy-poll windows the queue threads ran.",
                     [](const DiskPolling& p) { return p.episodes; });
      polling_family("skiff_disk_poll_hits_total", "counter", "Requests or completions found by busy polling.",
                     [](const DiskPolling& p) { return p.hits; });
      polling_family("skiff_disk_poll_contended_total", "counter",
                     "Busy-poll windows cut short because the thread was preempted.",
                     [](const DiskPolling& p) { return p.contended; });
      polling_family("skiff_disk_poll_window_seconds", "gauge", "The current busy-poll window (0: not polling).",
                     [](const DiskPolling& p) { return static_cast<double>(p.window_ns) / kNanosecondsPerSecond; });
    }
  }

  if (!stats.nets.empty()) {
    for (const auto& counter : kNetCounters) {
      out.family(counter.name, "counter", counter.help);
      for (const NetStats& net : stats.nets) out.sample(counter.name, label("net", net.id), net.*counter.field);
    }
  }

  if (stats.balloon) {
    const BalloonStats& balloon = *stats.balloon;
    out.family("skiff_balloon_target_bytes", "gauge", "Memory the host asked the guest to give back.");
    out.sample("skiff_balloon_target_bytes", "", balloon.target_mib * kBytesPerMib);
    out.family("skiff_balloon_actual_bytes", "gauge", "Memory the guest's balloon driver holds.");
    out.sample("skiff_balloon_actual_bytes", "", balloon.actual_mib * kBytesPerMib);
    out.family("skiff_balloon_released_bytes_total", "counter", "Memory handed back to the host since the VM started.");
    out.sample("skiff_balloon_released_bytes_total", "", balloon.bytes_released);
    if (!balloon.guest_stats.empty()) {
      out.family("skiff_balloon_guest_stat", "gauge",
                 "The guest's latest memory statistics (memory figures in bytes, others counts).");
      for (const auto& [name, value] : balloon.guest_stats) {
        out.sample("skiff_balloon_guest_stat", label("name", name), value);
      }
    }
  }
  if (stats.vsock) {
    const VsockStats& vsock = *stats.vsock;
    for (const auto& counter : kVsockCounters) {
      out.family(counter.name, "counter", counter.help);
      out.sample(counter.name, "", vsock.*counter.field);
    }
    out.family("skiff_vsock_connections", "gauge", "Open vsock connections.");
    out.sample("skiff_vsock_connections", "", static_cast<uint64_t>(vsock.connections.size()));
    // Per connection: at most the device's connection limit (256) of each.
    const auto connection_label = [](const VsockConnectionStats& c) {
      return fmt::format("{},{},{}", label("host_port", fmt::format("{}", c.host_port)),
                         label("guest_port", fmt::format("{}", c.guest_port)), label("initiator", c.initiator));
    };
    if (!vsock.connections.empty()) {
      out.family("skiff_vsock_connection_bytes_to_guest_total", "counter", "Bytes to the guest on one connection.");
      for (const VsockConnectionStats& c : vsock.connections) {
        out.sample("skiff_vsock_connection_bytes_to_guest_total", connection_label(c), c.bytes_to_guest);
      }
      out.family("skiff_vsock_connection_bytes_to_host_total", "counter", "Bytes to the host on one connection.");
      for (const VsockConnectionStats& c : vsock.connections) {
        out.sample("skiff_vsock_connection_bytes_to_host_total", connection_label(c), c.bytes_to_host);
      }
    }
  }
  return out.take();
}

}  // namespace skiff::api
