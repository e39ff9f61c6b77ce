// SPDX-License-Identifier: Apache-2.0
#include "common/event_loop.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff {
namespace {
constexpr uint64_t kStopToken = ~0ull;
}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::create(std::string thread_name, ThreadStarter start_thread) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return std::unexpected(errno_error(fmt::format("{}: epoll_create1", thread_name), errno));
  UniqueFd stop_event(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_event.valid()) return std::unexpected(errno_error(fmt::format("{}: eventfd", thread_name), errno));
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kStopToken;
  if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, stop_event.get(), &event) != 0) {
    return std::unexpected(errno_error(fmt::format("{}: epoll_ctl", thread_name), errno));
  }
  return std::unique_ptr<EventLoop>(
      new EventLoop(std::move(thread_name), std::move(start_thread), std::move(epoll), std::move(stop_event)));
}

EventLoop::EventLoop(std::string thread_name, ThreadStarter start_thread, UniqueFd epoll, UniqueFd stop_event)
    : thread_name_(std::move(thread_name)),
      start_thread_(std::move(start_thread)),
      epoll_(std::move(epoll)),
      stop_event_(std::move(stop_event)) {}

EventLoop::~EventLoop() { stop(); }

Result<void> EventLoop::add(int fd, Handler on_readable) {
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = handlers_.size();
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
    return std::unexpected(errno_error(fmt::format("{}: epoll_ctl add fd {}", thread_name_, fd), errno));
  }
  handlers_.push_back(std::move(on_readable));
  return {};
}

Result<void> EventLoop::start() {
  if (!start_thread_) return internal_error(fmt::format("{}: no way to start the thread was given", thread_name_));
  if (thread_.joinable()) return internal_error(fmt::format("{}: start() on a running loop", thread_name_));
  // A loop stopped before (a paused device) starts again: clear the stop request first.
  uint64_t count = 0;
  while (::read(stop_event_.get(), &count, sizeof(count)) > 0) {
  }
  auto thread = start_thread_(thread_name_, [this] { run(); });
  if (!thread) return std::unexpected(thread.error());
  thread_ = std::move(*thread);
  return {};
}

void EventLoop::stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  if (::write(stop_event_.get(), &one, sizeof(one)) != sizeof(one)) {
    spdlog::error("{}: cannot signal the stop event: {}", thread_name_, std::strerror(errno));
  }
  thread_.join();
}

void EventLoop::run() {
  epoll_event events[8];
  while (true) {
    int count = epoll_wait(epoll_.get(), events, 8, -1);
    if (count < 0) {
      if (errno == EINTR) continue;
      spdlog::error("{}: epoll_wait: {}", thread_name_, std::strerror(errno));
      return;
    }
    for (int i = 0; i < count; ++i) {
      uint64_t token = events[i].data.u64;
      if (token == kStopToken) return;
      if (token < handlers_.size()) handlers_[token]();
    }
  }
}

}  // namespace skiff
