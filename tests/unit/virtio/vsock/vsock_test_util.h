// SPDX-License-Identifier: Apache-2.0
// Helpers for the virtio-vsock tests: guest packet headers and the host programs' side of
// the Unix sockets (clients of the device's socket, listeners on "<socket>_<port>").
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
#include "virtio/vsock/vsock_packet.h"

namespace skiff::virtio::vsock::testing {

inline constexpr uint32_t kGuestCid = 3;

// A packet as the guest's driver would send it: from the guest CID to the host.
inline PacketHeader guest_packet(uint16_t op, uint32_t guest_port, uint32_t host_port, uint32_t len = 0,
                                 uint32_t buf_alloc = 256 * 1024, uint32_t fwd_cnt = 0) {
  return PacketHeader{.src_cid = kGuestCid,
                      .dst_cid = kHostCid,
                      .src_port = guest_port,
                      .dst_port = host_port,
                      .len = len,
                      .type = kTypeStream,
                      .op = op,
                      .flags = 0,
                      .buf_alloc = buf_alloc,
                      .fwd_cnt = fwd_cnt};
}

inline sockaddr_un unix_address(const std::filesystem::path& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::string text = path.string();
  EXPECT_LT(text.size(), sizeof(address.sun_path));
  std::memcpy(address.sun_path, text.data(), std::min(text.size(), sizeof(address.sun_path) - 1));
  return address;
}

// A blocking client connected to `path`.
inline UniqueFd connect_to(const std::filesystem::path& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address = unix_address(path);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    ADD_FAILURE() << "connect " << path << ": " << std::strerror(errno);
  }
  return fd;
}

// A listening socket at `path` (a host program waiting for the guest).
inline UniqueFd listen_at(const std::filesystem::path& path, int backlog = 512) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address = unix_address(path);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0) << std::strerror(errno);
  EXPECT_EQ(::listen(fd.get(), backlog), 0);
  return fd;
}

inline bool wait_readable(int fd, std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

inline UniqueFd accept_from(int listener) {
  EXPECT_TRUE(wait_readable(listener)) << "nobody connected";
  return UniqueFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

inline void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << std::strerror(errno);
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads until `count` bytes arrived, EOF, or 2 s passed.
inline std::string read_some(int fd, size_t count) {
  std::string out;
  while (out.size() < count) {
    if (!wait_readable(fd)) break;
    char buffer[65536];
    ssize_t n = ::recv(fd, buffer, std::min(sizeof(buffer), count - out.size()), 0);
    if (n <= 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

// True when the peer closed: readable and recv gives 0 (or an error such as ECONNRESET).
inline bool sees_eof(int fd) {
  if (!wait_readable(fd)) return false;
  char byte;
  return ::recv(fd, &byte, 1, MSG_DONTWAIT) <= 0;
}

}  // namespace skiff::virtio::vsock::testing
