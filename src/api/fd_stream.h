// SPDX-License-Identifier: Apache-2.0
// Reads and writes on a connected socket for the API's HTTP exchanges.
// Every wait is bounded: by the per-call timeout, by a deadline for the whole exchange
// (a client trickling bytes cannot hold the server), and by an optional cancel fd whose
// readability makes every wait fail at once (server shutdown).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string_view>

namespace skiff::api {

class FdStream final {
 public:
  // `fd` stays owned by the caller. `cancel_fd` is -1 or an fd that turns readable to
  // abandon the exchange.
  FdStream(int fd, int cancel_fd, std::chrono::milliseconds io_timeout, std::chrono::steady_clock::time_point deadline);

  // Like read(2)/write(2) once the socket is ready; -1 on cancel, timeout or deadline.
  ssize_t read(char* ptr, size_t size);
  ssize_t write(const char* ptr, size_t size);
  // Writes all of `data`; false when the peer is gone or a wait failed.
  bool write_all(std::string_view data);

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
