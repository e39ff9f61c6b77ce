// SPDX-License-Identifier: Apache-2.0
// Watching a guest's serial console line by line, for boot tests:
//
//   ConsoleLineSplitter  bytes → lines, whatever the chunking ("\n" ends a line, a "\r"
//                        before it is dropped; overlong lines are cut at kMaxLineBytes).
//   KernelPanicWatch     recognises Linux's panic banner ("Kernel panic - not syncing"),
//                        so that kernels without a pvpanic driver still end with
//                        StopReason::kGuestPanic. Used by the Vm on every console.
//   ConsoleWatch         the CLI's --expect / --fail-on patterns (ECMAScript regexes, each
//                        searched in every line) and the last lines, for the result JSON.
//
// Threads: the serial device calls feed() from a vCPU thread with its own lock held; the
// owner reads the results from another thread. Each class takes its own leaf lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "skiff/error.h"
#include "skiff/exit.h"

namespace skiff {

class ConsoleLineSplitter {
 public:
  // Longer lines are cut there (and the rest starts a new line): the console is guest
  // input and must not grow the buffer without bound. Linux's own limit is 1024 bytes.
  static constexpr size_t kMaxLineBytes = 4096;

  // Appends `bytes` and calls `on_line` once per completed line, in order, without its
  // "\n" (or "\r\n"). Bytes after the last newline wait for the next call.
  void feed(std::span<const uint8_t> bytes, const std::function<void(std::string_view)>& on_line);
  // The bytes after the last newline (an unfinished line).
  std::string_view partial() const { return partial_; }
  // Hands out the unfinished line, if any, as a line of its own (end of the stream).
  std::optional<std::string> take_partial();

 private:
  std::string partial_;
};

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

// An --expect or --fail-on pattern: the text as given and its compiled form.
struct ConsolePattern {
  std::string text;
  std::regex regex;
};

// Compiles `text` as an ECMAScript regular expression. The error (ErrorKind::kConfig)
// names `option` and the pattern, e.g. `--expect "a[": regex error: ...`.
Result<ConsolePattern> compile_console_pattern(std::string_view option, const std::string& text);

class ConsoleWatch {
 public:
  using Clock = std::chrono::steady_clock;

  struct Match {
    std::string pattern;  // the pattern as given
    std::string line;     // the console line it was found in
    Clock::time_point when;
  };

  // `keep_lines`: how many of the last console lines to remember.
  ConsoleWatch(std::vector<ConsolePattern> expect, std::vector<ConsolePattern> fail_on, size_t keep_lines = 50);

  // Feeds console output. Returns the first line that matches a --fail-on pattern, once:
  // later matches are not reported again. Every --expect pattern is searched in every line
  // until it has matched once.
  std::optional<Match> feed(std::span<const uint8_t> bytes);
  // Treats an unfinished last line as complete (call once the VM has stopped).
  std::optional<Match> finish();

  bool all_expectations_met() const;
  // One entry per --expect pattern, in the order given: its first match, if any.
  std::vector<std::optional<Match>> expectations() const;
  std::vector<std::string> missing_expectations() const;
  std::optional<Match> failure() const;
  // The last `keep_lines` lines, oldest first; an unfinished last line is included.
  std::vector<std::string> last_lines() const;
  size_t lines_seen() const;

 private:
  std::optional<Match> on_line(std::string_view line, Clock::time_point now);

  const std::vector<ConsolePattern> expect_;
  const std::vector<ConsolePattern> fail_on_;
  const size_t keep_lines_;

  mutable std::mutex mutex_;
  ConsoleLineSplitter splitter_;
  std::vector<std::optional<Match>> expect_matches_;
  std::optional<Match> failure_;
  std::deque<std::string> last_lines_;
  size_t lines_seen_ = 0;
};

// The final verdict of a run watched by `watch` (docs/exit-codes.md, "Console patterns"):
// a --fail-on match fails even a run the guest ended with success (the stop it requested
// may have lost the race against the guest's own), and a success without every --expect
// seen becomes kExitExpectationMissed. Any other outcome (a guest failure code, a panic, a
// timeout) keeps its own code: it says more than "an expectation was missed".
VmExit apply_console_verdict(VmExit exit, const ConsoleWatch& watch);

}  // namespace skiff
