// SPDX-License-Identifier: Apache-2.0
#include "security/filtered_thread.h"

#include <pthread.h>

#include <future>
#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace skiff::security {

Result<std::thread> start_filtered_thread(std::string name, ThreadKind kind, SeccompMode mode,
                                          std::function<void()> body) {
  std::promise<Result<void>> filtered;
  std::future<Result<void>> installed = filtered.get_future();
  std::thread thread;
  try {
    thread = std::thread([name, kind, mode, body = std::move(body), filtered = std::move(filtered)]() mutable {
      pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
      // Before `body`: from there on the thread handles data from the guest or a client.
      auto result = install_thread_filter(kind, mode);
      const bool ok = result.has_value();
      filtered.set_value(std::move(result));
      if (ok) body();
    });
  } catch (const std::system_error& error) {
    return internal_error(fmt::format("{}: cannot start the thread: {}", name, error.what()), error.code().value());
  }
  if (Result<void> result = installed.get(); !result) {
    thread.join();
    return std::unexpected(result.error().with_context(name));
  }
  return thread;
}

EventLoop::ThreadStarter filtered_thread_starter(ThreadKind kind, SeccompMode mode) {
  return [kind, mode](std::string name, std::function<void()> body) {
    return start_filtered_thread(std::move(name), kind, mode, std::move(body));
  };
}

}  // namespace skiff::security
