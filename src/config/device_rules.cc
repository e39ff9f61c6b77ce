// SPDX-License-Identifier: Apache-2.0
// The host-independent rules for "disks", "nets", "balloon", "vsock" and "api"
// (docs/config.md).
#include <algorithm>
#include <bit>
#include <cctype>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "config/spec_rules.h"

namespace skiff::config {

namespace {

bool is_id_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
}

// Ids name worker threads, log lines and (later) API paths.
Result<void> check_id(const std::string& pointer, const std::string& id, std::set<std::string>& seen) {
  if (id.empty()) {
    return config_error(fmt::format("{}/id: is required: a short unique name such as \"disk0\"", pointer));
  }
  if (id.size() > kMaxDeviceIdLength) {
    return config_error(
        fmt::format("{}/id: must be at most {} characters long, got {}", pointer, kMaxDeviceIdLength, id.size()));
  }
  auto bad = std::ranges::find_if_not(id, is_id_char);
  if (bad != id.end()) {
    return config_error(fmt::format("{}/id: \"{}\" contains character {:#04x}; use only letters, digits, '_' and '-'",
                                    pointer, printable(id), static_cast<unsigned char>(*bad)));
  }
  if (!seen.insert(id).second) {
    return config_error(fmt::format("{}/id: \"{}\" is used by another disk or NIC; ids must be unique", pointer, id));
  }
  return {};
}

Result<void> check_queues(const std::string& pointer, uint16_t queues, uint16_t queue_size, std::string_view what) {
  if (queues < 1 || queues > kMaxDeviceQueues) {
    return config_error(fmt::format("{}/queues: {} is out of range: must be between 1 and {} {}", pointer, queues,
                                    kMaxDeviceQueues, what));
  }
  // §2.7: split queue sizes are powers of two (up to 32768; skiff keeps rings small).
  if (queue_size < 2 || queue_size > kMaxQueueSize || !std::has_single_bit(queue_size)) {
    return config_error(fmt::format("{}/queue_size: {} must be a power of two between 2 and {}", pointer, queue_size,
                                    kMaxQueueSize));
  }
  return {};
}

Result<void> check_disk(const std::string& pointer, const DiskSpec& disk, std::set<std::string>& ids) {
  if (auto result = check_id(pointer, disk.id, ids); !result) return result;
  if (disk.path.empty()) {
    return config_error(fmt::format("{}/path: is required: the disk image file or block device", pointer));
  }
  if (disk.path.native().find('\0') != std::string::npos) {
    return config_error(fmt::format("{}/path: the path contains a NUL character", pointer));
  }
  if (disk.shared && !disk.read_only) {
    return config_error(fmt::format(
        "{}/shared: only read-only disks can be shared with other processes; set \"read_only\": true or "
        "remove \"shared\"",
        pointer));
  }
  if (disk.serial.size() > kMaxDiskSerialBytes) {
    return config_error(fmt::format("{}/serial: must be at most {} bytes (virtio-blk GET_ID), got {}", pointer,
                                    kMaxDiskSerialBytes, disk.serial.size()));
  }
  auto bad = std::ranges::find_if(disk.serial, [](char c) { return c < 0x20 || c > 0x7e; });
  if (bad != disk.serial.end()) {
    return config_error(fmt::format("{}/serial: contains character {:#04x}; use printable ASCII", pointer,
                                    static_cast<unsigned char>(*bad)));
  }
  if (disk.poll_max_us > kMaxDiskPollUs) {
    return config_error(fmt::format("{}/poll_max_us: {} is out of range: must be between 0 (no polling) and {}",
                                    pointer, disk.poll_max_us, kMaxDiskPollUs));
  }
  return check_queues(pointer, disk.queues, disk.queue_size, "(one I/O thread each)");
}

Result<void> check_net(const std::string& pointer, const NetSpec& net, std::set<std::string>& ids,
                       std::set<std::string>& taps) {
  if (auto result = check_id(pointer, net.id, ids); !result) return result;
  if (net.tap.empty() == !net.tap_fd.has_value()) {
    return config_error(fmt::format(
        "{}: give exactly one of \"tap\" (an interface name, created if absent) and \"tap_fd\" (an open tap "
        "file descriptor)",
        pointer));
  }
  if (!net.tap.empty()) {
    if (net.tap.size() > kMaxTapNameLength) {
      return config_error(fmt::format("{}/tap: \"{}\" is {} bytes long; interface names are at most {} bytes",
                                      pointer, printable(net.tap), net.tap.size(), kMaxTapNameLength));
    }
    // What the kernel's dev_valid_name() refuses.
    auto bad = std::ranges::find_if(net.tap, [](char c) {
      return c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)) != 0 || c < 0x20 || c == 0x7f;
    });
    if (bad != net.tap.end() || net.tap == "." || net.tap == "..") {
      return config_error(fmt::format("{}/tap: \"{}\" is not a valid interface name (no '/', ':' or spaces)",
                                      pointer, printable(net.tap)));
    }
    if (!taps.insert(net.tap).second) {
      return config_error(fmt::format("{}/tap: \"{}\" is used by another NIC of this VM", pointer, net.tap));
    }
  }
  if (net.tap_fd && *net.tap_fd < 3) {
    return config_error(fmt::format("{}/tap_fd: {} is stdin, stdout or stderr, not a tap", pointer, *net.tap_fd));
  }
  if (net.mac) {
    const MacAddress& mac = *net.mac;
    if ((mac[0] & 0x01) != 0) {
      return config_error(fmt::format("{}/mac: {} is a multicast address; the first byte must be even", pointer,
                                      format_mac(mac)));
    }
    if (std::ranges::all_of(mac, [](uint8_t b) { return b == 0; })) {
      return config_error(fmt::format("{}/mac: 00:00:00:00:00:00 is not a usable address", pointer));
    }
  }
  if (net.mtu && (*net.mtu < kMinMtu || *net.mtu > kMaxMtu)) {
    return config_error(
        fmt::format("{}/mtu: {} is out of range: must be between {} and {}", pointer, *net.mtu, kMinMtu, kMaxMtu));
  }
  return check_queues(pointer, net.queues, net.queue_size, "queue pairs");
}

Result<void> check_balloon(const BalloonSpec& balloon, const MachineSpec& machine) {
  if (balloon.target_mib >= machine.memory_mib) {
    return config_error(fmt::format(
        "/balloon/target_mib: {} MiB would take all of the guest's {} MiB; use a smaller target", balloon.target_mib,
        machine.memory_mib));
  }
  constexpr uint32_t kMaxStatsInterval = 24 * 3600;
  if (balloon.stats_interval_s > kMaxStatsInterval) {
    return config_error(fmt::format("/balloon/stats_interval_s: {} is out of range: at most {} (a day); 0 turns "
                                    "statistics off",
                                    balloon.stats_interval_s, kMaxStatsInterval));
  }
  return {};
}

// sockaddr_un::sun_path holds 108 bytes on Linux, the terminating NUL included.
constexpr size_t kMaxSocketPathBytes = 107;
// "<socket>_<port>": an '_' and at most 10 digits (4294967295) after the vsock socket path.
static_assert(kMaxVsockSocketPathBytes + 1 + 10 == kMaxSocketPathBytes);

Result<void> check_api(const ApiSpec& api) {
  const std::string path = api.socket.string();
  if (path.empty()) return config_error("/api/socket: empty; give the path of the API's Unix socket");
  if (path.size() > kMaxSocketPathBytes) {
    return config_error(fmt::format(
        "/api/socket: \"{}\" is {} bytes long, but a Unix socket path can have at most {}; use a shorter path",
        printable(path), path.size(), kMaxSocketPathBytes));
  }
  if (path.back() == '/' || !api.socket.has_filename()) {
    return config_error(fmt::format("/api/socket: \"{}\" names a directory; give a file name for the socket",
                                    printable(path)));
  }
  return {};
}

// The CIDs of <linux/vm_sockets.h> that cannot be a guest's address.
std::optional<std::string_view> reserved_cid_name(uint32_t cid) {
  switch (cid) {
    case 0: return "VMADDR_CID_HYPERVISOR";
    case 1: return "VMADDR_CID_LOCAL, the local loopback";
    case 2: return "VMADDR_CID_HOST, the host";
    case std::numeric_limits<uint32_t>::max(): return "VMADDR_CID_ANY";
    default: return std::nullopt;
  }
}

// True when `path` is `socket` followed by "_<decimal port>": the name the vsock device
// connects to for a guest connection to that host port.
bool is_host_port_socket(const std::string& path, const std::string& socket) {
  if (path.size() <= socket.size() + 1 || !path.starts_with(socket) || path[socket.size()] != '_') return false;
  return std::ranges::all_of(std::string_view(path).substr(socket.size() + 1),
                             [](char c) { return c >= '0' && c <= '9'; });
}

Result<void> check_vsock(const VsockSpec& vsock, const std::optional<ApiSpec>& api) {
  if (auto reserved = reserved_cid_name(vsock.guest_cid)) {
    return config_error(fmt::format("/vsock/guest_cid: {} is reserved ({}); use 3 or above, up to {}", vsock.guest_cid,
                                    *reserved, std::numeric_limits<uint32_t>::max() - 1));
  }
  const std::string path = vsock.socket.string();
  if (path.empty()) return config_error("/vsock/socket: empty; give the path of the vsock Unix socket");
  if (path.find('\0') != std::string::npos) {
    return config_error("/vsock/socket: the path contains a NUL character");
  }
  // Guest connections to host port P go to "<socket>_<P>", which must fit sun_path too.
  if (path.size() > kMaxVsockSocketPathBytes) {
    return config_error(fmt::format(
        "/vsock/socket: \"{}\" is {} bytes long, but at most {} are allowed: guest connections to host port P go "
        "to \"<socket>_<P>\", and with a 10-digit port that must still fit a Unix socket path's {} bytes; use a "
        "shorter path",
        printable(path), path.size(), kMaxVsockSocketPathBytes, kMaxSocketPathBytes));
  }
  if (path.back() == '/' || !vsock.socket.has_filename()) {
    return config_error(fmt::format("/vsock/socket: \"{}\" names a directory; give a file name for the socket",
                                    printable(path)));
  }
  if (!api) return {};
  const std::string api_path = api->socket.lexically_normal().string();
  const std::string vsock_path = vsock.socket.lexically_normal().string();
  if (api_path == vsock_path) {
    return config_error(fmt::format("/vsock/socket: \"{}\" is also the API socket (/api/socket); give each its own path",
                                    printable(path)));
  }
  // Otherwise a guest connecting to that host port would be put through to the control API.
  if (is_host_port_socket(api_path, vsock_path)) {
    return config_error(fmt::format(
        "/vsock/socket: the API socket \"{}\" is where guest connections to host port {} would go; move the API "
        "socket or the vsock socket so that the guest cannot reach the control API",
        printable(api->socket.string()), api_path.substr(vsock_path.size() + 1)));
  }
  return {};
}

}  // namespace

Result<void> check_device_rules(const VmSpec& spec) {
  std::set<std::string> ids;
  std::set<std::string> taps;
  for (size_t i = 0; i < spec.disks.size(); ++i) {
    if (auto result = check_disk(fmt::format("/disks/{}", i), spec.disks[i], ids); !result) return result;
  }
  for (size_t i = 0; i < spec.nets.size(); ++i) {
    if (auto result = check_net(fmt::format("/nets/{}", i), spec.nets[i], ids, taps); !result) return result;
  }
  if (spec.balloon) {
    if (auto result = check_balloon(*spec.balloon, spec.machine); !result) return result;
  }
  if (spec.vsock) {
    if (auto result = check_vsock(*spec.vsock, spec.api); !result) return result;
  }
  if (spec.api) return check_api(*spec.api);
  return {};
}

}  // namespace skiff::config
