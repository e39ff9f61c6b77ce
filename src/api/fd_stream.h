// SPDX-License-Identifier: Apache-2.0
// An httplib::Stream over a connected socket, so cpp-httplib's request and response
// parsers run over Unix sockets (Debian's cpp-httplib 0.11 only opens TCP sockets).
// Every wait is bounded: by the per-call timeout, by a deadline for the whole exchange
// (a client trickling bytes cannot hold the server), and by an optional cancel fd whose
// readability makes every wait fail at once (server shutdown).
// Internal to src/api: it includes httplib.h, whose compile definitions must match the
// library's (CMakeLists.txt takes them from pkg-config).
#pragma once

#include <chrono>
#include <string>

#include <httplib.h>

namespace skiff::api {

class FdStream final : public httplib::Stream {
 public:
  // `fd` stays owned by the caller. `cancel_fd` is -1 or an fd that turns readable to
  // abandon the exchange.
  FdStream(int fd, int cancel_fd, std::chrono::milliseconds io_timeout, std::chrono::steady_clock::time_point deadline);

  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return fd_; }

  // Whether a wait failed because of the cancel fd, the timeout or the deadline.
  bool cancelled() const { return cancelled_; }
  bool timed_out() const { return timed_out_; }

 private:
  // Polls for `events` on fd_; false on cancel, timeout, deadline or error.
  bool wait_for(short events) const;

  int fd_;
  int cancel_fd_;
  std::chrono::milliseconds io_timeout_;
  std::chrono::steady_clock::time_point deadline_;
  mutable bool cancelled_ = false;
  mutable bool timed_out_ = false;
};

}  // namespace skiff::api
