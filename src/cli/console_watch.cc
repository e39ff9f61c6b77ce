// SPDX-License-Identifier: Apache-2.0
#include "cli/console_watch.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace skiff::cli {

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

}  // namespace skiff::cli
