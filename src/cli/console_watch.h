// SPDX-License-Identifier: Apache-2.0
// The boot-test side of `skiff run` / `skiff test`: the --expect / --fail-on patterns
// (ECMAScript regexes, each searched in every console line), the last lines for the result
// JSON, and the verdict they give a run (docs/exit-codes.md, "Console patterns"). The Vm's
// own console reading, the panic banner, is vmm/kernel_panic_watch.h.
//
// Threads: the serial device calls feed() from a vCPU thread with its own lock held; the
// CLI reads the results from its main thread. ConsoleWatch takes its own leaf lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "skiff/error.h"
#include "skiff/exit.h"
#include "vmm/console_line_splitter.h"

namespace skiff::cli {

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

}  // namespace skiff::cli
