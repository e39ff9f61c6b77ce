// SPDX-License-Identifier: Apache-2.0
#include "virtio/net/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "virtio/core/virtio_constants.h"
#include "virtio/net/net_constants.h"

namespace skiff::virtio::net {
namespace {

constexpr const char* kTunDevice = "/dev/net/tun";
// tun's own limit on queues of a multiqueue tap (MAX_TAP_QUEUES).
constexpr uint16_t kMaxTapQueues = 256;

std::string ip_tuntap_hint(std::string_view name, uint16_t queues) {
  return fmt::format("ip tuntap add dev {} mode tap user $USER vnet_hdr{}", name,
                     queues > 1 ? " multi_queue" : "");
}

ifreq make_ifreq(std::string_view name) {
  ifreq request{};
  std::memcpy(request.ifr_name, name.data(), std::min(name.size(), sizeof(request.ifr_name) - 1));
  return request;
}

// SIOC* interface ioctls go through any socket of the current network namespace.
Result<UniqueFd> interface_socket() {
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return std::unexpected(errno_error("socket(AF_INET) for interface ioctls", errno));
  return sock;
}

Result<uint32_t> read_mtu(std::string_view name) {
  auto sock = interface_socket();
  if (!sock) return std::unexpected(sock.error());
  ifreq request = make_ifreq(name);
  // SAFETY: SIOCGIFMTU reads an ifreq we own.
  if (::ioctl(sock->get(), SIOCGIFMTU, &request) != 0) {
    return std::unexpected(errno_error(fmt::format("tap {}: SIOCGIFMTU", name), errno));
  }
  return static_cast<uint32_t>(request.ifr_mtu);
}

Result<void> write_mtu(std::string_view name, uint32_t mtu) {
  auto sock = interface_socket();
  if (!sock) return std::unexpected(sock.error());
  ifreq request = make_ifreq(name);
  request.ifr_mtu = static_cast<int>(mtu);
  // SAFETY: SIOCSIFMTU reads an ifreq we own.
  if (::ioctl(sock->get(), SIOCSIFMTU, &request) != 0) {
    int err = errno;
    if (err == EPERM || err == EACCES) {
      return host_error(fmt::format("tap {}: setting MTU {} needs CAP_NET_ADMIN: run skiff as root, or set it "
                                    "beforehand with `ip link set dev {} mtu {}`",
                                    name, mtu, name, mtu),
                        err);
    }
    if (err == EINVAL) {
      return config_error(fmt::format("tap {}: MTU {} refused by the kernel (out of the interface's range)", name, mtu));
    }
    return std::unexpected(errno_error(fmt::format("tap {}: SIOCSIFMTU {}", name, mtu), err));
  }
  return {};
}

Result<void> bring_up(std::string_view name) {
  auto sock = interface_socket();
  if (!sock) return std::unexpected(sock.error());
  ifreq request = make_ifreq(name);
  // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own.
  if (::ioctl(sock->get(), SIOCGIFFLAGS, &request) != 0) {
    return std::unexpected(errno_error(fmt::format("tap {}: SIOCGIFFLAGS", name), errno));
  }
  if ((request.ifr_flags & IFF_UP) != 0) return {};
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  // SAFETY: as above.
  if (::ioctl(sock->get(), SIOCSIFFLAGS, &request) != 0) {
    return std::unexpected(errno_error(fmt::format("tap {}: bringing the link up (SIOCSIFFLAGS)", name), errno));
  }
  return {};
}

// The largest offload set the tap accepts, from the full set down to none: an older kernel
// refuses unknown flags with EINVAL as a whole.
unsigned probe_offloads(int fd) {
  const unsigned candidates[] = {
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
      TUN_F_CSUM,
  };
  unsigned supported = 0;
  for (unsigned flags : candidates) {
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if (::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) == 0) {
      supported = flags;
      break;
    }
  }
  // Nothing offloaded until the guest acks features (VirtioNet::activate).
  // SAFETY: as above.
  (void)::ioctl(fd, TUNSETOFFLOAD, 0ul);
  return supported;
}

Result<UniqueFd> open_tun_device() {
  UniqueFd fd(::open(kTunDevice, O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (fd.valid()) return fd;
  int err = errno;
  if (err == ENOENT || err == ENODEV || err == ENXIO) {
    return host_error(fmt::format("open {}: {}: the tun driver is missing; load it with `modprobe tun`", kTunDevice,
                                  std::strerror(err)),
                      err);
  }
  if (err == EACCES || err == EPERM) {
    return host_error(fmt::format("open {}: {}: skiff needs read/write access to {} (run as root or adjust its "
                                  "permissions)",
                                  kTunDevice, std::strerror(err), kTunDevice),
                      err);
  }
  return std::unexpected(errno_error(fmt::format("open {}", kTunDevice), err));
}

}  // namespace

Result<void> validate_tap_name(std::string_view name) {
  if (name.empty()) return config_error("tap name is empty");
  if (name.size() > IFNAMSIZ - 1) {
    return config_error(fmt::format("tap name \"{}\" is {} bytes long; interface names have at most {} bytes", name,
                                    name.size(), IFNAMSIZ - 1));
  }
  if (name == "." || name == "..") return config_error(fmt::format("tap name \"{}\" is not a valid interface name", name));
  for (char c : name) {
    if (c == '/' || c == ':' || c == '%' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
        c == '\f' || c == '\0') {
      return config_error(fmt::format("tap name \"{}\" contains '{}', which interface names cannot hold", name,
                                      c == '\0' ? std::string("\\0") : std::string(1, c)));
    }
  }
  return {};
}

unsigned tun_offload_flags(uint64_t acked_features) {
  unsigned flags = 0;
  if (has_feature(acked_features, kFeatureGuestCsum)) {
    flags |= TUN_F_CSUM;
    // The kernel ignores the TSO flags without TUN_F_CSUM, and §5.1.3.1 forbids TSO without
    // GUEST_CSUM anyway.
    if (has_feature(acked_features, kFeatureGuestTso4)) flags |= TUN_F_TSO4;
    if (has_feature(acked_features, kFeatureGuestTso6)) flags |= TUN_F_TSO6;
    if ((flags & (TUN_F_TSO4 | TUN_F_TSO6)) != 0 && has_feature(acked_features, kFeatureGuestEcn)) {
      flags |= TUN_F_TSO_ECN;
    }
  }
  return flags;
}

unsigned tun_offloads_wanted() { return TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN; }

Tap::Tap(std::string name, std::vector<UniqueFd> fds, bool created)
    : name_(std::move(name)), fds_(std::move(fds)), created_(created), attached_(fds_.size(), true) {}

Result<std::unique_ptr<Tap>> Tap::open(std::string_view name, uint16_t queues, std::optional<uint32_t> mtu) {
  if (auto valid = validate_tap_name(name); !valid) return std::unexpected(valid.error());
  if (queues == 0 || queues > kMaxTapQueues) {
    return config_error(fmt::format("tap {}: {} queues; a tap has 1 to {}", name, queues, kMaxTapQueues));
  }
  if (mtu && (*mtu < kMinMtu || *mtu > kMaxMtu)) {
    return config_error(fmt::format("tap {}: MTU {} out of range {}..{}", name, *mtu, kMinMtu, kMaxMtu));
  }
  // Whether the interface existed decides who owns its link state, and the wording of errors.
  const bool existed = ::if_nametoindex(std::string(name).c_str()) != 0;
  std::vector<UniqueFd> fds;
  std::string actual_name(name);
  for (uint16_t i = 0; i < queues; ++i) {
    auto fd = open_tun_device();
    if (!fd) return std::unexpected(fd.error());
    ifreq request = make_ifreq(name);
    request.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (queues > 1 ? IFF_MULTI_QUEUE : 0));
    // SAFETY: TUNSETIFF reads and updates an ifreq we own.
    if (::ioctl(fd->get(), TUNSETIFF, &request) != 0) {
      int err = errno;
      if (err == EPERM || err == EACCES) {
        if (existed) {
          return host_error(fmt::format("tap {}: attaching: {}: the tap belongs to another user or group; run skiff "
                                        "as root (CAP_NET_ADMIN) or recreate it with `{}`",
                                        name, std::strerror(err), ip_tuntap_hint(name, queues)),
                            err);
        }
        return host_error(fmt::format("tap {}: creating: {}: creating a tap needs CAP_NET_ADMIN; run skiff as root, "
                                      "or create the tap beforehand with `{}`",
                                      name, std::strerror(err), ip_tuntap_hint(name, queues)),
                          err);
      }
      if (err == EINVAL && existed) {
        return host_error(fmt::format("tap {}: attaching: {}: the interface exists with other flags than skiff needs "
                                      "(a tap with vnet_hdr, {}); recreate it with `{}`",
                                      name, std::strerror(err), queues > 1 ? "multi_queue" : "without multi_queue",
                                      ip_tuntap_hint(name, queues)),
                          err);
      }
      if (err == EBUSY) {
        return host_error(fmt::format("tap {}: attaching: {}: another process holds the tap{}", name,
                                      std::strerror(err),
                                      queues > 1 ? " (or it has fewer free queues than requested)" : ""),
                          err);
      }
      return std::unexpected(errno_error(fmt::format("tap {}: TUNSETIFF", name), err));
    }
    actual_name = request.ifr_name;
    fds.push_back(std::move(*fd));
  }
  auto tap = std::unique_ptr<Tap>(new Tap(std::move(actual_name), std::move(fds), !existed));
  if (auto configured = tap->configure(mtu); !configured) return std::unexpected(configured.error());
  if (tap->created_) {
    if (auto up = bring_up(tap->name_); !up) return std::unexpected(up.error());
  }
  spdlog::debug("tap {}: {} ({} queue{}, offloads {:#x}, MTU {})", tap->name_, existed ? "attached" : "created",
                queues, queues > 1 ? "s" : "", tap->supported_offloads_, tap->mtu_);
  return tap;
}

Result<std::unique_ptr<Tap>> Tap::adopt(int fd, uint16_t queues, std::optional<uint32_t> mtu) {
  if (queues != 1) {
    return config_error(fmt::format("tap_fd {}: one tap fd serves one queue pair, but {} queues were asked for; "
                                    "multiqueue needs a tap name (skiff opens one fd per queue)",
                                    fd, queues));
  }
  ifreq request{};
  // SAFETY: TUNGETIFF writes an ifreq we own; on a non-tun fd it fails with EBADFD/ENOTTY.
  if (::ioctl(fd, TUNGETIFF, &request) != 0) {
    int err = errno;
    return std::unexpected(Error(ErrorKind::kConfig,
                                 fmt::format("tap_fd {}: not an attached tun/tap fd (TUNGETIFF: {})", fd,
                                             std::strerror(err)),
                                 err));
  }
  if ((request.ifr_flags & TUN_TYPE_MASK) != IFF_TAP) {
    return config_error(fmt::format("tap_fd {} ({}): a tun (layer 3) device, not a tap", fd, request.ifr_name));
  }
  if ((request.ifr_flags & IFF_VNET_HDR) == 0) {
    return config_error(fmt::format("tap_fd {} ({}): opened without IFF_VNET_HDR; skiff needs the virtio-net header",
                                    fd, request.ifr_name));
  }
  if ((request.ifr_flags & IFF_NO_PI) == 0) {
    return config_error(fmt::format("tap_fd {} ({}): opened without IFF_NO_PI", fd, request.ifr_name));
  }
  UniqueFd own(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!own.valid()) return std::unexpected(errno_error(fmt::format("tap_fd {}: dup", fd), errno));
  std::vector<UniqueFd> fds;
  fds.push_back(std::move(own));
  auto tap = std::unique_ptr<Tap>(new Tap(request.ifr_name, std::move(fds), false));
  if (auto configured = tap->configure(mtu); !configured) return std::unexpected(configured.error());
  return tap;
}

Result<void> Tap::configure(std::optional<uint32_t> mtu) {
  for (const UniqueFd& fd : fds_) {
    int header_size = kNetHeaderSize;
    // SAFETY: TUNSETVNETHDRSZ reads an int we own.
    if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &header_size) != 0) {
      return std::unexpected(errno_error(fmt::format("tap {}: TUNSETVNETHDRSZ {}", name_, header_size), errno));
    }
    // The flag lives on the open file description (shared with an embedder's fd).
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
      return std::unexpected(errno_error(fmt::format("tap {}: setting O_NONBLOCK", name_), errno));
    }
  }
  // Offloads are per device: one fd decides for all queues.
  supported_offloads_ = probe_offloads(fds_.front().get());
  if (mtu) {
    if (*mtu < kMinMtu || *mtu > kMaxMtu) {
      return config_error(fmt::format("tap {}: MTU {} out of range {}..{}", name_, *mtu, kMinMtu, kMaxMtu));
    }
    auto current = read_mtu(name_);
    if (!current || *current != *mtu) {
      if (auto set = write_mtu(name_, *mtu); !set) return std::unexpected(set.error());
    }
    mtu_ = *mtu;
  } else if (auto current = read_mtu(name_)) {
    mtu_ = *current;
  } else {
    spdlog::warn("{}; assuming MTU 1500", current.error().message());
  }
  return {};
}

int Tap::queue_fd(size_t queue) const { return queue < fds_.size() ? fds_[queue].get() : -1; }

unsigned Tap::offloads() const {
  std::lock_guard lock(mutex_);
  return offloads_;
}

Result<void> Tap::set_offloads(unsigned tun_flags) {
  std::lock_guard lock(mutex_);
  if ((tun_flags & ~supported_offloads_) != 0) {
    return internal_error(fmt::format("tap {}: offloads {:#x} asked, only {:#x} supported", name_, tun_flags,
                                      supported_offloads_));
  }
  // SAFETY: TUNSETOFFLOAD takes its argument by value.
  if (::ioctl(fds_.front().get(), TUNSETOFFLOAD, static_cast<unsigned long>(tun_flags)) != 0) {
    return std::unexpected(errno_error(fmt::format("tap {}: TUNSETOFFLOAD {:#x}", name_, tun_flags), errno));
  }
  offloads_ = tun_flags;
  return {};
}

Result<void> Tap::set_queue_enabled(size_t queue, bool enabled) {
  std::lock_guard lock(mutex_);
  if (queue >= fds_.size()) return internal_error(fmt::format("tap {}: no queue {}", name_, queue));
  // A single-queue tap has nothing to steer.
  if (fds_.size() == 1 || attached_[queue] == enabled) return {};
  ifreq request{};
  request.ifr_flags = static_cast<short>(enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE);
  // SAFETY: TUNSETQUEUE reads an ifreq we own.
  if (::ioctl(fds_[queue].get(), TUNSETQUEUE, &request) != 0) {
    return std::unexpected(errno_error(
        fmt::format("tap {}: {} queue {} (TUNSETQUEUE)", name_, enabled ? "attaching" : "detaching", queue), errno));
  }
  attached_[queue] = enabled;
  return {};
}

}  // namespace skiff::virtio::net
