// SPDX-License-Identifier: Apache-2.0
// An ApiBackend over a Lifecycle and canned stats, recording what the API asked for.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api/api_backend.h"
#include "vmm/lifecycle.h"

namespace skiff::api::testing {

class FakeBackend : public ApiBackend {
 public:
  explicit FakeBackend(VmState initial = VmState::running) : lifecycle(initial) {
    spec_.name = "web01";
    spec_.machine.vcpus = 2;
    spec_.machine.memory_mib = 512;
    spec_.boot.kernel = "/boot/vmlinuz";
    stats_.vcpus = {{0, {{"io", 10}, {"mmio", 20}}}, {1, {{"io", 1}, {"mmio", 2}}}};
    DiskStats disk;
    disk.id = "root";
    disk.reads = 5;
    disk.read_bytes = 5 * 4096;
    disk.latency = DiskLatency{5, 5'000'000, 2'000'000};
    disk.polling = DiskPolling{7, 4, 1, 16'000};
    stats_.disks = {disk};
    NetStats net;
    net.id = "eth0";
    net.rx_packets = 3;
    net.rx_bytes = 180;
    stats_.nets = {net};
    BalloonStats balloon;
    balloon.target_mib = 64;
    balloon.actual_mib = 32;
    balloon.guest_stats = {{"free_memory", 1 << 20}};
    balloon.guest_stats_sets = 1;
    stats_.balloon = balloon;
    VsockStats vsock;
    vsock.guest_cid = 3;
    vsock.host_connections = 2;
    vsock.refused = 1;
    vsock.bytes_to_guest = 100;
    vsock.connections = {VsockConnectionStats{.host_port = 1073741824,
                                              .guest_port = 5000,
                                              .initiator = "host",
                                              .state = "established",
                                              .bytes_to_guest = 100,
                                              .bytes_to_host = 7}};
    stats_.vsock = vsock;
  }

  VmState state() const override { return lifecycle.state(); }
  VmSpec spec() const override { return spec_; }
  double uptime_s() const override { return lifecycle.state() == VmState::created ? 0 : 12.5; }

  Result<void> pause() override { return lifecycle.transition(VmState::paused, "pause"); }
  Result<void> resume() override { return lifecycle.transition(VmState::running, "resume"); }
  Result<void> shutdown(std::chrono::milliseconds timeout) override {
    last_shutdown_timeout = timeout;
    return lifecycle.transition(VmState::stopping, "shut down");
  }
  Result<void> stop() override {
    if (fail_stop) return internal_error("stop: the vCPU threads did not answer");
    if (lifecycle.state() == VmState::created) return lifecycle.transition(VmState::stopped, "stop");
    if (auto stopping = lifecycle.transition(VmState::stopping, "stop"); !stopping && lifecycle.state() != VmState::stopping) {
      return stopping;
    }
    return lifecycle.transition(VmState::stopped, "stop");
  }

  VmStats stats() const override {
    VmStats out = stats_;
    out.state = lifecycle.state();
    out.uptime_s = uptime_s();
    return out;
  }
  Result<void> set_balloon_target_mib(uint64_t mib) override {
    if (mib >= spec_.machine.memory_mib) {
      return config_error("balloon target 4096 MiB is not below the guest's 512 MiB");
    }
    balloon_target = mib;
    return {};
  }

  Lifecycle lifecycle;
  std::optional<std::chrono::milliseconds> last_shutdown_timeout;
  std::optional<uint64_t> balloon_target;
  bool fail_stop = false;

 private:
  VmSpec spec_;
  VmStats stats_;
};

}  // namespace skiff::api::testing
