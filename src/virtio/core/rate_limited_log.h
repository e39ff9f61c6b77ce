// SPDX-License-Identifier: Apache-2.0
// Log lines caused by the guest (malformed descriptor chains, refused status writes) go
// through a RateLimitedLog so that a broken or hostile driver cannot flood the VMM's log:
// at most `burst` lines per `interval`, then one line saying how many were suppressed.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff::virtio {

class RateLimitedLog {
 public:
  explicit RateLimitedLog(uint32_t burst = 10,
                          std::chrono::steady_clock::duration interval = std::chrono::seconds(10))
      : burst_(burst), interval_(interval) {}

  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    uint64_t suppressed = 0;
    if (!allow(&suppressed)) return;
    std::string line = fmt::format(format, std::forward<Args>(args)...);
    if (suppressed != 0) {
      spdlog::warn("{} ({} similar messages suppressed)", line, suppressed);
    } else {
      spdlog::warn("{}", line);
    }
  }

  // Lines dropped since this object was created.
  uint64_t suppressed_total() const {
    std::lock_guard lock(mutex_);
    return suppressed_total_;
  }

 private:
  // True when a line may be written now; `*suppressed` gets the number of lines dropped
  // since the last one written.
  bool allow(uint64_t* suppressed) {
    std::lock_guard lock(mutex_);
    auto now = std::chrono::steady_clock::now();
    if (now - window_start_ >= interval_) {
      window_start_ = now;
      in_window_ = 0;
    }
    if (in_window_ >= burst_) {
      ++suppressed_since_last_;
      ++suppressed_total_;
      return false;
    }
    ++in_window_;
    *suppressed = std::exchange(suppressed_since_last_, 0);
    return true;
  }

  const uint32_t burst_;
  const std::chrono::steady_clock::duration interval_;
  mutable std::mutex mutex_;
  std::chrono::steady_clock::time_point window_start_{};
  uint32_t in_window_ = 0;
  uint64_t suppressed_since_last_ = 0;
  uint64_t suppressed_total_ = 0;
};

}  // namespace skiff::virtio
