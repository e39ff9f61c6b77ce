// SPDX-License-Identifier: Apache-2.0
// Helpers for tier-2 tests: boot skiff's test guest (tests/guest/README.md describes what it
// prints) through the library or the CLI and read its report.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "skiff/exit.h"
#include "skiff/spec.h"

namespace skiff::test {

// Why tier-2 tests cannot run here, or nullopt when /dev/kvm is usable.
std::optional<std::string> kvm_unavailable_reason();

// The `SKIFF-GUEST key=value` lines of a console transcript.
struct GuestReport {
  std::string console;                          // everything the guest printed
  std::vector<std::string> lines;               // the SKIFF-GUEST lines, prefix removed
  std::optional<std::string> value(const std::string& key) const;  // first `key=value`
  std::vector<std::string> lines_starting(const std::string& prefix) const;
};

GuestReport parse_report(const std::string& console);

struct GuestRun {
  VmExit exit;
  GuestReport report;
  bool timed_out = false;
};

// A spec for the test guest with `vcpus` and `memory_mib`.
VmSpec guest_spec(const std::string& kernel, const std::string& cmdline, uint32_t vcpus = 1,
                  uint64_t memory_mib = 64);

// Boots through the library, capturing the console; stops the VM after `timeout`.
GuestRun run_guest(const VmSpec& spec, std::chrono::seconds timeout = std::chrono::seconds(120));

// Runs the skiff binary with arguments; captures stdout and stderr.
struct CliRun {
  int exit_code = -1;   // -1 when killed by a signal
  int signal = 0;
  std::string out;
  std::string err;
};
CliRun run_cli(const std::vector<std::string>& args, std::chrono::seconds timeout = std::chrono::seconds(120),
               std::optional<std::chrono::milliseconds> sigterm_after = std::nullopt);

// A scratch file with the given bytes, removed with the object.
class TempFile {
 public:
  explicit TempFile(const std::vector<uint8_t>& bytes, const std::string& suffix = "");
  explicit TempFile(const std::string& text, const std::string& suffix = "");
  ~TempFile();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

uint64_t fnv1a(const uint8_t* data, size_t size);

}  // namespace skiff::test
