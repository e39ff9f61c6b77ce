// SPDX-License-Identifier: Apache-2.0
// What VirtioNet needs from the host side of a NIC: one file descriptor per queue pair that
// carries whole frames, each prefixed with a kNetHeaderSize-byte virtio-net header, plus the
// offload and queue controls of a Linux tap. Tap implements it; tests implement it over
// socketpair(AF_UNIX, SOCK_SEQPACKET), which keeps frame boundaries like a tap does.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

#include "skiff/error.h"

namespace skiff::virtio::net {

class NetBackend {
 public:
  virtual ~NetBackend() = default;

  // Name for log lines and errors (the tap's interface name).
  virtual std::string name() const = 0;
  // Number of queue fds: one per queue pair.
  virtual size_t queue_count() const = 0;
  // A nonblocking fd carrying queue pair `queue`'s frames; pollable for EPOLLIN.
  virtual int queue_fd(size_t queue) const = 0;

  // Reads one frame (header first) into `iov`. Returns the frame's full length, which may
  // exceed the iovecs' total when the frame was truncated (a tap reports the full length),
  // or -1 with errno (EAGAIN: nothing to read).
  virtual ssize_t read_frame(size_t queue, const iovec* iov, int count) {
    return ::readv(queue_fd(queue), iov, count);
  }
  // Writes one frame (header first) gathered from `iov`; -1 with errno on failure.
  virtual ssize_t write_frame(size_t queue, const iovec* iov, int count) {
    return ::writev(queue_fd(queue), iov, count);
  }

  // The TUN_F_* offload flags (linux/if_tun.h) the backend accepts in set_offloads().
  virtual unsigned supported_offloads() const = 0;
  // Which offloaded frames the reader (the guest) accepts: TUNSETOFFLOAD.
  virtual Result<void> set_offloads(unsigned tun_flags) = 0;
  // Attaches (true) or detaches (false) queue `queue` from a multiqueue tap, so the kernel
  // stops steering frames to a queue pair the guest does not use. Idempotent.
  virtual Result<void> set_queue_enabled(size_t queue, bool enabled) = 0;
  // The interface MTU in bytes.
  virtual uint32_t mtu() const = 0;
};

}  // namespace skiff::virtio::net
