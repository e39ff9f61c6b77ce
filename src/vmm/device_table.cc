// SPDX-License-Identifier: Apache-2.0
// The table of virtio device kinds (device_registry.h): one row per kind. A new kind adds
// its row at the end (the order fixes PCI slots and MMIO windows, which guests see).
#include <fmt/format.h>

#include "vmm/stats_convert.h"
#include "virtio/balloon/virtio_balloon.h"
#include "virtio/blk/virtio_blk.h"
#include "virtio/net/virtio_net.h"
#include "virtio/rng/virtio_rng.h"
#include "virtio/vsock/virtio_vsock.h"
#include "vmm/balloon_status.h"
#include "vmm/device_registry.h"

namespace skiff {
namespace {

template <typename Device>
const Device& as(const virtio::VirtioDevice& device) {
  // The registry only hands a row the devices that row built.
  return static_cast<const Device&>(device);
}

Result<std::vector<DeviceRequest>> build_rng(const VmSpec& spec, const GuestMemory&) {
  std::vector<DeviceRequest> out;
  if (!spec.rng) return out;
  auto rng = virtio::VirtioRng::create("rng0");
  if (!rng) return std::unexpected(rng.error().with_context("/rng"));
  out.push_back({.device = std::move(*rng), .id = "rng0", .label = "virtio-rng", .spec_path = "/rng",
                 .transport = spec.rng->transport});
  return out;
}

Result<std::vector<DeviceRequest>> build_disks(const VmSpec& spec, const GuestMemory& memory) {
  std::vector<DeviceRequest> out;
  for (size_t i = 0; i < spec.disks.size(); ++i) {
    const DiskSpec& disk = spec.disks[i];
    const std::string path = fmt::format("/disks/{}", i);
    auto blk = virtio::VirtioBlk::create(disk, memory);
    if (!blk) return std::unexpected(blk.error().with_context(fmt::format("{} (\"{}\")", path, disk.id)));
    (*blk)->set_vcpu_count(spec.machine.vcpus);
    out.push_back({.device = std::move(*blk), .id = disk.id, .label = fmt::format("virtio-blk {}", disk.id),
                   .spec_path = path, .transport = disk.transport});
  }
  return out;
}

Result<std::vector<DeviceRequest>> build_nets(const VmSpec& spec, const GuestMemory& memory) {
  std::vector<DeviceRequest> out;
  for (size_t i = 0; i < spec.nets.size(); ++i) {
    const NetSpec& nic = spec.nets[i];
    const std::string path = fmt::format("/nets/{}", i);
    auto net = virtio::net::VirtioNet::create(nic, spec.name, memory);
    if (!net) return std::unexpected(net.error().with_context(fmt::format("{} (\"{}\")", path, nic.id)));
    out.push_back({.device = std::move(*net), .id = nic.id, .label = fmt::format("virtio-net {}", nic.id),
                   .spec_path = path, .transport = nic.transport});
  }
  return out;
}

Result<std::vector<DeviceRequest>> build_balloon(const VmSpec& spec, const GuestMemory& memory) {
  std::vector<DeviceRequest> out;
  if (!spec.balloon) return out;
  auto balloon = virtio::balloon::VirtioBalloon::create(*spec.balloon, memory);
  if (!balloon) return std::unexpected(balloon.error().with_context("/balloon"));
  out.push_back({.device = std::move(*balloon), .id = "balloon", .label = "virtio-balloon", .spec_path = "/balloon",
                 .transport = spec.balloon->transport});
  return out;
}

Result<std::vector<DeviceRequest>> build_vsock(const VmSpec& spec, const GuestMemory&) {
  std::vector<DeviceRequest> out;
  if (!spec.vsock) return out;
  // Binds the socket now: a path another VM answers on fails the VM before it starts.
  auto vsock = virtio::vsock::VirtioVsock::create(spec.vsock->guest_cid, spec.vsock->socket);
  if (!vsock) return std::unexpected(vsock.error());
  out.push_back({.device = std::move(*vsock), .id = "vsock", .label = "virtio-vsock", .spec_path = "/vsock",
                 .transport = spec.vsock->transport});
  return out;
}

const DeviceKind kDeviceKinds[] = {
    {.name = "virtio-rng", .build = build_rng, .collect_stats = {}, .flush = {}},
    {.name = "virtio-blk",
     .build = build_disks,
     .collect_stats =
         [](const virtio::VirtioDevice& device, const std::string& id, VmStats& stats) {
           stats.disks.push_back(to_disk_stats(id, as<virtio::VirtioBlk>(device).stats()));
         },
     // The vCPUs are stopped: what the guest wrote is in the engine's hands. Make it
     // durable before the VM is reported gone, whether or not the guest flushed.
     .flush = [](virtio::VirtioDevice& device) { return static_cast<virtio::VirtioBlk&>(device).flush(); }},
    {.name = "virtio-net",
     .build = build_nets,
     .collect_stats =
         [](const virtio::VirtioDevice& device, const std::string& id, VmStats& stats) {
           stats.nets.push_back(to_net_stats(id, as<virtio::net::VirtioNet>(device).counters()));
         },
     .flush = {}},
    {.name = "virtio-balloon",
     .build = build_balloon,
     .collect_stats =
         [](const virtio::VirtioDevice& device, const std::string&, VmStats& stats) {
           stats.balloon = to_balloon_stats(balloon_status(as<virtio::balloon::VirtioBalloon>(device)),
                                                 std::chrono::system_clock::now());
         },
     .flush = {}},
    {.name = "virtio-vsock",
     .build = build_vsock,
     .collect_stats =
         [](const virtio::VirtioDevice& device, const std::string&, VmStats& stats) {
           const auto& vsock = as<virtio::vsock::VirtioVsock>(device);
           stats.vsock = to_vsock_stats(vsock.guest_cid(), vsock.stats());
         },
     .flush = {}},
};

}  // namespace

std::span<const DeviceKind> device_kinds() { return kDeviceKinds; }

}  // namespace skiff
