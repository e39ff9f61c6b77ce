// SPDX-License-Identifier: Apache-2.0
// A named thread running an epoll loop over a few file descriptors, dispatching each
// readable fd to its handler. Device I/O runs here, never on vCPU threads. The caller
// decides how the thread starts: skiff's devices pass security::filtered_thread_starter, so
// the thread installs its seccomp filter before it runs any handler (docs/security.md).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "skiff/error.h"

namespace skiff {

class EventLoop {
 public:
  using Handler = std::function<void()>;
  // Starts a thread named `name` that runs `body`. An error means `body` never runs and
  // there is no thread to join.
  using ThreadStarter = std::function<Result<std::thread>(std::string name, std::function<void()> body)>;

  // `thread_name` is at most 15 characters (the kernel's limit), e.g. "skiff-rng0".
  // start() starts the thread with `start_thread`.
  static Result<std::unique_ptr<EventLoop>> create(std::string thread_name, ThreadStarter start_thread);
  ~EventLoop();  // stops and joins
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Calls `on_readable` on the loop thread whenever `fd` is readable (level-triggered:
  // the handler must drain it). Only before start().
  Result<void> add(int fd, Handler on_readable);
  // Starts the thread through the ThreadStarter (which, for a filtered thread, returns once
  // the filter is installed); when that fails no handler runs and the error says why. After
  // stop() the loop can be started again, with the same fds and handlers (a paused device
  // resuming).
  Result<void> start();
  // Ends the loop after the handler running now, if any, and joins the thread. Idempotent.
  // The fds keep what is pending (a signalled eventfd stays signalled) for the next start().
  void stop();

 private:
  EventLoop(std::string thread_name, ThreadStarter start_thread, UniqueFd epoll, UniqueFd stop_event);
  void run();

  std::string thread_name_;
  ThreadStarter start_thread_;
  UniqueFd epoll_;
  UniqueFd stop_event_;
  std::vector<Handler> handlers_;  // indexed by the epoll token
  std::thread thread_;
};

}  // namespace skiff
