// SPDX-License-Identifier: Apache-2.0
#include "vmm/console_watch.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace skiff {

// ---- ConsoleLineSplitter -------------------------------------------------------------------

void ConsoleLineSplitter::feed(std::span<const uint8_t> bytes,
                               const std::function<void(std::string_view)>& on_line) {
  for (uint8_t byte : bytes) {
    if (byte == '\n') {
      std::string_view line = partial_;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      on_line(line);
      partial_.clear();
      continue;
    }
    partial_.push_back(static_cast<char>(byte));
    if (partial_.size() >= kMaxLineBytes) {
      on_line(partial_);
      partial_.clear();
    }
  }
}

std::optional<std::string> ConsoleLineSplitter::take_partial() {
  if (partial_.empty()) return std::nullopt;
  std::string line = std::move(partial_);
  partial_.clear();
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

// ---- KernelPanicWatch ----------------------------------------------------------------------

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

// ---- ConsoleWatch --------------------------------------------------------------------------

Result<ConsolePattern> compile_console_pattern(std::string_view option, const std::string& text) {
  try {
    return ConsolePattern{text, std::regex(text, std::regex::ECMAScript)};
  } catch (const std::regex_error& error) {
    return config_error(fmt::format("{} \"{}\": not a valid regular expression (ECMAScript): {}", option, text,
                                    error.what()));
  }
}

ConsoleWatch::ConsoleWatch(std::vector<ConsolePattern> expect, std::vector<ConsolePattern> fail_on,
                           size_t keep_lines)
    : expect_(std::move(expect)),
      fail_on_(std::move(fail_on)),
      keep_lines_(keep_lines),
      expect_matches_(expect_.size()) {}

std::optional<ConsoleWatch::Match> ConsoleWatch::on_line(std::string_view line, Clock::time_point now) {
  ++lines_seen_;
  if (keep_lines_ > 0) {
    if (last_lines_.size() == keep_lines_) last_lines_.pop_front();
    last_lines_.emplace_back(line);
  }
  auto search = [&](const std::regex& regex) {
    // regex_search may throw (e.g. error_complexity on a pathological pattern); a
    // pattern that cannot be evaluated on this line does not match it.
    try {
      return std::regex_search(line.begin(), line.end(), regex);
    } catch (const std::regex_error&) {
      return false;
    }
  };
  for (size_t i = 0; i < expect_.size(); ++i) {
    if (!expect_matches_[i] && search(expect_[i].regex)) {
      expect_matches_[i] = Match{expect_[i].text, std::string(line), now};
    }
  }
  if (failure_) return std::nullopt;
  for (const ConsolePattern& pattern : fail_on_) {
    if (search(pattern.regex)) {
      failure_ = Match{pattern.text, std::string(line), now};
      return failure_;
    }
  }
  return std::nullopt;
}

std::optional<ConsoleWatch::Match> ConsoleWatch::feed(std::span<const uint8_t> bytes) {
  const Clock::time_point now = Clock::now();
  std::lock_guard lock(mutex_);
  std::optional<Match> first;
  splitter_.feed(bytes, [&](std::string_view line) {
    auto failed = on_line(line, now);
    if (failed && !first) first = std::move(failed);
  });
  return first;
}

std::optional<ConsoleWatch::Match> ConsoleWatch::finish() {
  std::lock_guard lock(mutex_);
  auto line = splitter_.take_partial();
  if (!line) return std::nullopt;
  return on_line(*line, Clock::now());
}

bool ConsoleWatch::all_expectations_met() const {
  std::lock_guard lock(mutex_);
  return std::all_of(expect_matches_.begin(), expect_matches_.end(), [](const auto& m) { return m.has_value(); });
}

std::vector<std::optional<ConsoleWatch::Match>> ConsoleWatch::expectations() const {
  std::lock_guard lock(mutex_);
  return expect_matches_;
}

std::vector<std::string> ConsoleWatch::missing_expectations() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> missing;
  for (size_t i = 0; i < expect_.size(); ++i) {
    if (!expect_matches_[i]) missing.push_back(expect_[i].text);
  }
  return missing;
}

std::optional<ConsoleWatch::Match> ConsoleWatch::failure() const {
  std::lock_guard lock(mutex_);
  return failure_;
}

std::vector<std::string> ConsoleWatch::last_lines() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> lines(last_lines_.begin(), last_lines_.end());
  std::string_view partial = splitter_.partial();
  if (!partial.empty() && keep_lines_ > 0) {
    if (lines.size() == keep_lines_) lines.erase(lines.begin());
    lines.emplace_back(partial);
  }
  return lines;
}

size_t ConsoleWatch::lines_seen() const {
  std::lock_guard lock(mutex_);
  return lines_seen_;
}

VmExit apply_console_verdict(VmExit exit, const ConsoleWatch& watch) {
  if (exit.exit_code != kExitOk) return exit;
  if (auto failure = watch.failure()) {
    return VmExit{StopReason::kConsoleFailure, kExitConsoleFailure,
                  fmt::format("{}, but a console line matched --fail-on \"{}\": {}", exit.detail, failure->pattern,
                              failure->line)};
  }
  auto missing = watch.missing_expectations();
  if (missing.empty()) return exit;
  std::string list;
  for (const std::string& pattern : missing) list += fmt::format("{}\"{}\"", list.empty() ? "" : ", ", pattern);
  // The VM's own stop reason stays: it is how the guest ended; the code says what failed.
  return VmExit{exit.reason, kExitExpectationMissed,
                fmt::format("{}, but no console line matched --expect {}", exit.detail, list)};
}

}  // namespace skiff
