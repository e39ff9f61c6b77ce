// SPDX-License-Identifier: Apache-2.0
// Recognises Linux's panic banner ("Kernel panic - not syncing") on the serial console, so
// that kernels without a pvpanic driver still end with StopReason::kGuestPanic
// (docs/exit-codes.md, "Kernel panics"). The Vm feeds it every console byte.
//
// Threads: the serial device calls feed() from a vCPU thread with its own lock held; the
// Vm calls reclassify() from whichever thread requests the stop. The watch takes its own
// leaf lock.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "skiff/exit.h"
#include "vmm/console_line_splitter.h"

namespace skiff {

class KernelPanicWatch {
 public:
  // printk's text at the start of panic() (kernel/panic.c), after the log timestamp.
  static constexpr std::string_view kBanner = "Kernel panic - not syncing";
  // What panic() prints last before spinning (panic=0) ...
  static constexpr std::string_view kEndBanner = "---[ end Kernel panic - not syncing";
  // ... or before waiting to reboot (panic=N > 0).
  static constexpr std::string_view kRebooting = "Rebooting in ";

  // Feeds console output. Returns the stop to request when the panic is complete: the end
  // banner, or "Rebooting in N seconds" after the banner (no need to wait N seconds).
  // Returns a stop at most once.
  std::optional<VmExit> feed(std::span<const uint8_t> bytes);
  // Feeds one complete line (what feed() does per line; any unfinished line that feed()
  // holds is left as it is).
  std::optional<VmExit> feed_line(std::string_view line);

  // A stop that follows the banner is a panic whatever its own reason: with panic=-1 or
  // panic=N the kernel resets the machine, a triple fault in the panic path is a crash,
  // and a pvpanic stop gains the banner's text. Returns the replacement, or nullopt when
  // `exit` stands as it is (no banner seen, or a reason the banner does not explain).
  std::optional<VmExit> reclassify(const VmExit& exit) const;

  bool panicked() const;
  // The banner line (timestamp removed), when seen.
  std::optional<std::string> banner() const;

 private:
  std::optional<VmExit> on_line_locked(std::string_view line);

  mutable std::mutex mutex_;
  ConsoleLineSplitter splitter_;
  std::optional<std::string> banner_;
  bool stop_returned_ = false;
};

}  // namespace skiff
