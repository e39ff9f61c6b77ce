// SPDX-License-Identifier: Apache-2.0
#include "config/spec_overrides.h"

#include <array>
#include <cctype>
#include <limits>
#include <string>

#include <fmt/format.h>

namespace skiff::config {

namespace {

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

Result<uint64_t> parse_memory_size(std::string_view text) {
  auto fail = [&](std::string_view reason) {
    return config_error(
        fmt::format("memory size \"{}\": {}; write e.g. 512, 512M, 512MiB or 2G", text, reason));
  };
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return fail("expected a number of MiB, optionally followed by M or G");

  uint64_t number = 0;
  for (size_t i = 0; i < digits; ++i) {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (number > (std::numeric_limits<uint64_t>::max() - digit) / 10) return fail("too large");
    number = number * 10 + digit;
  }

  struct Unit {
    std::string_view suffix;
    uint64_t mib;
  };
  constexpr std::array<Unit, 7> kUnits = {{
      {"", 1},
      {"M", 1},
      {"MiB", 1},
      {"G", 1024},
      {"GiB", 1024},
      {"T", 1024 * 1024},
      {"TiB", 1024 * 1024},
  }};
  std::string_view suffix = text.substr(digits);
  for (const Unit& unit : kUnits) {
    if (!equals_ignoring_case(suffix, unit.suffix)) continue;
    if (number == 0) return fail("must be greater than zero");
    if (number > std::numeric_limits<uint64_t>::max() / unit.mib) return fail("too large");
    return number * unit.mib;
  }
  if (equals_ignoring_case(suffix, "K") || equals_ignoring_case(suffix, "KiB")) {
    return fail("guest memory is sized in whole MiB");
  }
  return fail(fmt::format("unknown unit \"{}\" (use M, MiB, G or GiB)", suffix));
}

Result<void> apply_spec_overrides(const SpecOverrides& overrides, VmSpec& spec) {
  if (overrides.kernel) spec.boot.kernel = *overrides.kernel;
  if (overrides.initrd) spec.boot.initrd = *overrides.initrd;
  if (overrides.cmdline) spec.boot.cmdline = *overrides.cmdline;
  if (overrides.vcpus) spec.machine.vcpus = *overrides.vcpus;
  if (overrides.memory) {
    auto mib = parse_memory_size(*overrides.memory);
    if (!mib) return std::unexpected(mib.error().with_context("--memory"));
    spec.machine.memory_mib = *mib;
  }
  if (overrides.balloon_target) {
    // "0" is a valid target (an empty balloon); parse_memory_size refuses 0 on purpose.
    uint64_t mib = 0;
    if (*overrides.balloon_target != "0") {
      auto parsed = parse_memory_size(*overrides.balloon_target);
      if (!parsed) return std::unexpected(parsed.error().with_context("--balloon-target"));
      mib = *parsed;
    }
    if (!spec.balloon) spec.balloon = BalloonSpec{};
    spec.balloon->target_mib = mib;  // validated against machine.memory_mib with the spec
  }
  if (overrides.console_to_stdout) {
    spec.serial.mode = SerialMode::kStdout;
    spec.serial.input = false;
  }
  return {};
}

}  // namespace skiff::config
