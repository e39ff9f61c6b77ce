// SPDX-License-Identifier: Apache-2.0
#include "api/fd_stream.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>

namespace skiff::api {

FdStream::FdStream(int fd, int cancel_fd, std::chrono::milliseconds io_timeout,
                   std::chrono::steady_clock::time_point deadline)
    : fd_(fd), cancel_fd_(cancel_fd), io_timeout_(io_timeout), deadline_(deadline) {}

bool FdStream::wait_for(short events) const {
  const auto io_deadline = std::min(std::chrono::steady_clock::now() + io_timeout_, deadline_);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(io_deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out_ = true;
      return false;
    }
    pollfd fds[2] = {{fd_, events, 0}, {cancel_fd_, POLLIN, 0}};
    int count = ::poll(fds, cancel_fd_ >= 0 ? 2 : 1, static_cast<int>(left.count()));
    if (count < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (count == 0) continue;  // the loop's deadline check ends it
    if (cancel_fd_ >= 0 && (fds[1].revents & POLLIN) != 0) {
      cancelled_ = true;
      return false;
    }
    // POLLHUP/POLLERR: let read/write report it (a read returns the remaining bytes, then 0).
    return fds[0].revents != 0;
  }
}

ssize_t FdStream::read(char* ptr, size_t size) {
  if (!wait_for(POLLIN)) return -1;
  for (;;) {
    ssize_t n = ::recv(fd_, ptr, size, 0);
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

ssize_t FdStream::write(const char* ptr, size_t size) {
  if (!wait_for(POLLOUT)) return -1;
  for (;;) {
    // MSG_NOSIGNAL: a client that hung up is an error return, not a SIGPIPE.
    ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

bool FdStream::write_all(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = write(data.data(), data.size());
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace skiff::api
