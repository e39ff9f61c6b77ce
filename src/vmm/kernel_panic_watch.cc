// SPDX-License-Identifier: Apache-2.0
#include "vmm/kernel_panic_watch.h"

#include <utility>

#include <fmt/format.h>

namespace skiff {

namespace {

// "[    5.123456] Kernel panic - ..." → "Kernel panic - ...": the printk timestamp says
// nothing useful in a one-line stop detail.
std::string_view from(std::string_view line, size_t pos) {
  line.remove_prefix(pos);
  return line;
}

}  // namespace

std::optional<VmExit> KernelPanicWatch::on_line_locked(std::string_view line) {
  if (stop_returned_) return std::nullopt;
  if (size_t end = line.find(kEndBanner); end != std::string_view::npos) {
    // The end banner repeats the banner's text: enough on its own, should the banner
    // itself have been missed.
    if (!banner_) {
      std::string_view text = from(line, end + kEndBanner.size() - kBanner.size());
      if (text.ends_with(" ]---")) text.remove_suffix(5);
      banner_ = std::string(text);
    }
  } else if (!banner_) {
    if (size_t pos = line.find(kBanner); pos != std::string_view::npos) banner_ = std::string(from(line, pos));
    return std::nullopt;
  } else if (line.find(kRebooting) == std::string_view::npos) {
    return std::nullopt;
  }
  stop_returned_ = true;
  return VmExit{StopReason::kGuestPanic, kExitGuestPanic, fmt::format("guest kernel panicked: {}", *banner_)};
}

std::optional<VmExit> KernelPanicWatch::feed(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  std::optional<VmExit> stop;
  splitter_.feed(bytes, [&](std::string_view line) {
    if (auto done = on_line_locked(line); done && !stop) stop = std::move(done);
  });
  return stop;
}

std::optional<VmExit> KernelPanicWatch::feed_line(std::string_view line) {
  std::lock_guard lock(mutex_);
  return on_line_locked(line);
}

std::optional<VmExit> KernelPanicWatch::reclassify(const VmExit& exit) const {
  std::lock_guard lock(mutex_);
  if (!banner_) return std::nullopt;
  switch (exit.reason) {
    case StopReason::kGuestPanic:
      if (exit.detail.find(*banner_) != std::string::npos) return std::nullopt;
      return VmExit{StopReason::kGuestPanic, kExitGuestPanic, fmt::format("{}: {}", exit.detail, *banner_)};
    case StopReason::kGuestReboot:
    case StopReason::kGuestPowerOff:
    case StopReason::kGuestCrash:
      return VmExit{StopReason::kGuestPanic, kExitGuestPanic,
                    fmt::format("guest kernel panicked: {} (then: {})", *banner_, exit.detail)};
    default:
      return std::nullopt;
  }
}

bool KernelPanicWatch::panicked() const {
  std::lock_guard lock(mutex_);
  return banner_.has_value();
}

std::optional<std::string> KernelPanicWatch::banner() const {
  std::lock_guard lock(mutex_);
  return banner_;
}

}  // namespace skiff
