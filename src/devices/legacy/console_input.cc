// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/console_input.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>
#include <system_error>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/filtered_thread.h"

namespace skiff {
namespace {

// The terminal in raw mode and its settings from before. Globals so that restore() can
// run in a signal handler: it reads g_saved_termios, written before g_raw_fd was published
// with release order, and takes ownership of the restore with one atomic exchange.
std::atomic<int> g_raw_fd{-1};
struct termios g_saved_termios {};
// Set while a ConsoleInput owns a terminal in raw mode (only one can: one saved state).
std::atomic<bool> g_raw_claimed{false};
static_assert(std::atomic<int>::is_always_lock_free, "restore() must be async-signal-safe");

constexpr size_t kReadChunk = 256;

void close_fd(int fd) {
  if (fd >= 0) ::close(fd);
}

// Raw mode as cfmakeraw(3) describes it, except that OPOST stays on (see the header).
void make_raw(struct termios& tio) {
  tio.c_iflag &= ~static_cast<tcflag_t>(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR |
                                        ICRNL | IXON);
  tio.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
  tio.c_cflag &= ~static_cast<tcflag_t>(CSIZE | PARENB);
  tio.c_cflag |= CS8;
  tio.c_cc[VMIN] = 1;
  tio.c_cc[VTIME] = 0;
}

void write_stderr(std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(STDERR_FILENO, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

void ConsoleInput::restore() noexcept {
  const int fd = g_raw_fd.exchange(-1, std::memory_order_acq_rel);
  if (fd < 0) return;
  while (::tcsetattr(fd, TCSANOW, &g_saved_termios) != 0 && errno == EINTR) {
  }
}

Result<std::unique_ptr<ConsoleInput>> ConsoleInput::start(int fd, std::shared_ptr<Serial> serial,
                                                          StopCallback stop, SeccompMode seccomp) {
  if (!serial) return internal_error("console input: no serial device");
  const int stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0) return std::unexpected(errno_error("console input: eventfd", errno));
  const int space_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (space_fd < 0) {
    const int err = errno;
    close_fd(stop_fd);
    return std::unexpected(errno_error("console input: eventfd", err));
  }

  bool raw = false;
  const bool terminal = ::isatty(fd) == 1;
  if (terminal) {
    // A background job (`skiff run ... &`) would be stopped by SIGTTOU at tcsetattr and by
    // SIGTTIN at the first read: leave such a terminal alone. tcgetpgrp fails when `fd` is
    // not our controlling terminal; that one can be used.
    const pid_t foreground = ::tcgetpgrp(fd);
    if (foreground >= 0 && foreground != ::getpgrp()) {
      spdlog::info("console input: skiff is not in the foreground of its terminal; terminal "
                   "input is not forwarded to the guest");
      close_fd(space_fd);
      return std::unique_ptr<ConsoleInput>(new ConsoleInput(fd, std::move(serial),
                                                            std::move(stop), false, stop_fd,
                                                            -1));
    }

    if (g_raw_claimed.exchange(true)) {
      close_fd(stop_fd);
      close_fd(space_fd);
      return config_error(fmt::format(
          "console input: fd {} is a terminal but another console already holds a terminal "
          "in raw mode",
          fd));
    }
    struct termios saved {};
    if (::tcgetattr(fd, &saved) != 0) {
      const int err = errno;
      g_raw_claimed.store(false);
      close_fd(stop_fd);
      close_fd(space_fd);
      return std::unexpected(errno_error(fmt::format("console input: tcgetattr(fd {})", fd), err));
    }
    struct termios raw_tio = saved;
    make_raw(raw_tio);
    g_saved_termios = saved;
    if (::tcsetattr(fd, TCSANOW, &raw_tio) != 0) {
      const int err = errno;
      g_raw_claimed.store(false);
      close_fd(stop_fd);
      close_fd(space_fd);
      return std::unexpected(
          errno_error(fmt::format("console input: tcsetattr(fd {}) to raw mode", fd), err));
    }
    g_raw_fd.store(fd, std::memory_order_release);
    static std::once_flag atexit_once;
    std::call_once(atexit_once, [] {
      std::atexit([] { ConsoleInput::restore(); });
      std::at_quick_exit([] { ConsoleInput::restore(); });
    });
    raw = true;
  }

  std::unique_ptr<ConsoleInput> console(
      new ConsoleInput(fd, std::move(serial), std::move(stop), raw, stop_fd, space_fd));
  console->serial_->set_input_space_callback([space_fd] {
    const uint64_t one = 1;
    // A full eventfd counter (EAGAIN) still leaves it readable, which is all we need.
    [[maybe_unused]] const ssize_t n = ::write(space_fd, &one, sizeof(one));
  });
  auto thread = security::start_filtered_thread("skiff-console", security::ThreadKind::console, seccomp,
                                                [c = console.get()] { c->run(); });
  // On failure the destructor restores the terminal and closes the eventfds.
  if (!thread) return std::unexpected(thread.error().with_context("console input"));
  console->thread_ = std::move(*thread);
  spdlog::debug("console input: forwarding fd {} to the serial port{}", fd,
                raw ? " (terminal in raw mode; Ctrl-A x quits)" : "");
  return console;
}

ConsoleInput::ConsoleInput(int fd, std::shared_ptr<Serial> serial, StopCallback stop,
                           bool raw_mode, int stop_fd, int space_fd)
    : fd_(fd),
      serial_(std::move(serial)),
      stop_(std::move(stop)),
      raw_mode_(raw_mode),
      stop_fd_(stop_fd),
      space_fd_(space_fd) {}

ConsoleInput::~ConsoleInput() {
  shutdown();
  close_fd(stop_fd_);
  close_fd(space_fd_);
}

void ConsoleInput::shutdown() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  // After this returns the Serial no longer calls into space_fd_.
  if (serial_) serial_->set_input_space_callback({});
  if (raw_mode_) {
    restore();
    raw_mode_ = false;
    g_raw_claimed.store(false);
  }
}

void ConsoleInput::run() {
  std::array<uint8_t, kReadChunk> chunk{};
  std::vector<uint8_t> pending;
  pending.reserve(kReadChunk);
  for (;;) {
    std::array<pollfd, 2> fds{{{.fd = stop_fd_, .events = POLLIN, .revents = 0},
                               {.fd = fd_, .events = POLLIN, .revents = 0}}};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::warn("console input: poll: {}; no more input reaches the guest",
                   std::strerror(errno));
      return;
    }
    if (fds[0].revents != 0) return;
    if ((fds[1].revents & POLLNVAL) != 0) {
      spdlog::debug("console input: fd {} is not open; no input for the guest", fd_);
      return;
    }
    if (fds[1].revents == 0) continue;
    const ssize_t got = ::read(fd_, chunk.data(), chunk.size());
    if (got == 0) {
      spdlog::debug("console input: end of input on fd {}", fd_);
      return;
    }
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      spdlog::warn("console input: read fd {}: {}; no more input reaches the guest", fd_,
                   std::strerror(errno));
      return;
    }
    pending.clear();
    const bool keep_going =
        process_input(std::span<const uint8_t>(chunk.data(), static_cast<size_t>(got)), pending);
    if (!keep_going) {
      // Stop at once, without waiting for the guest to take the bytes typed before.
      if (stop_) {
        stop_(VmExit{.reason = StopReason::kStopRequested,
                     .exit_code = kExitStopped,
                     .detail = "stopped from the console (Ctrl-A x)"});
      }
      return;
    }
    if (!pending.empty() && !deliver(pending)) return;
  }
}

bool ConsoleInput::process_input(std::span<const uint8_t> bytes, std::vector<uint8_t>& out) {
  for (const uint8_t byte : bytes) {
    if (!escape_pending_) {
      if (byte == kEscapeKey) {
        escape_pending_ = true;
      } else {
        out.push_back(byte);
      }
      continue;
    }
    escape_pending_ = false;
    switch (byte) {
      case kEscapeKey:
        out.push_back(kEscapeKey);
        break;
      case 'x':
      case 'X':
        return false;
      case 'h':
      case 'H':
      case '?':
        write_stderr(
            "\r\nskiff console keys:\r\n"
            "  Ctrl-A x       stop the VM\r\n"
            "  Ctrl-A Ctrl-A  send Ctrl-A to the guest\r\n"
            "  Ctrl-A h       this help\r\n");
        break;
      default:
        // Unknown escapes are dropped, as QEMU does.
        break;
    }
  }
  return true;
}

bool ConsoleInput::deliver(const std::vector<uint8_t>& pending) {
  size_t offset = 0;
  for (;;) {
    offset += serial_->enqueue_input(std::span<const uint8_t>(pending).subspan(offset));
    if (offset >= pending.size()) return true;
    // The receive buffer is full: the Serial writes space_fd_ once the guest has read
    // from it (the wake-up cannot be missed: enqueue_input armed it under the Serial's
    // lock before returning).
    std::array<pollfd, 2> fds{{{.fd = stop_fd_, .events = POLLIN, .revents = 0},
                               {.fd = space_fd_, .events = POLLIN, .revents = 0}}};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::warn("console input: poll: {}; no more input reaches the guest",
                   std::strerror(errno));
      return false;
    }
    if (fds[0].revents != 0) return false;
    if (fds[1].revents != 0) {
      uint64_t count = 0;
      [[maybe_unused]] const ssize_t n = ::read(space_fd_, &count, sizeof(count));
    }
  }
}

}  // namespace skiff
