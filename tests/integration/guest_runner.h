// SPDX-License-Identifier: Apache-2.0
// Helpers for tier-2 tests: boot skiff's test guest (tests/guest/README.md describes what it
// prints) through the library or the CLI and read its report.
#pragma once

#include <chrono>
#include <functional>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "skiff/exit.h"
#include "tests/common/hugepage_pool_lock.h"
#include "skiff/spec.h"
#include "skiff/vm.h"

namespace skiff::test {

// Why tier-2 tests cannot run here, or nullopt when /dev/kvm is usable.
std::optional<std::string> kvm_unavailable_reason();

// The VmOptions every tier-2 test uses: the seccomp filters in the mode SKIFF_SECCOMP names
// (enforce when unset), as the skiff command does. The sanitizer stage sets it to off: the
// sanitizers' runtimes make system calls of their own (sigaltstack, /proc reads).
VmOptions test_vm_options();

// The `SKIFF-GUEST key=value` lines of a console transcript.
struct GuestReport {
  std::string console;                          // everything the guest printed
  std::vector<std::string> lines;               // the SKIFF-GUEST lines, prefix removed
  std::optional<std::string> value(const std::string& key) const;  // first `key=value`
  std::vector<std::string> lines_starting(const std::string& prefix) const;
};

GuestReport parse_report(const std::string& console);

// The `key=value` words of one report line ("virtio-balloon inflated=2048 actual=2048").
std::map<std::string, std::string> report_fields(const std::string& line);
uint64_t field_u64(const std::map<std::string, std::string>& fields, const std::string& key);

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

// A guest running through the library while the test talks to it: the test waits for
// report lines as they arrive and acts on the Vm in between (balloon target, pause, ...).
class LiveGuest {
 public:
  // Creates and starts the VM; check error() before anything else.
  explicit LiveGuest(const VmSpec& spec);
  ~LiveGuest();  // stops the VM if it still runs

  const std::optional<std::string>& error() const { return error_; }
  Vm& vm() { return *vm_; }
  // Waits for the next SKIFF-GUEST line (after those already returned) that starts with
  // `prefix`; returns it without the "SKIFF-GUEST " prefix, or nullopt after `timeout` or when
  // the VM stopped first. Lines passed over on the way are not returned again.
  std::optional<std::string> next_line(const std::string& prefix,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(60));
  std::string console() const;
  // Waits for the VM to stop on its own; nullopt (the VM still running) after `timeout`.
  std::optional<VmExit> wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Stops the VM (if still running) and returns how it ended.
  VmExit stop();

 private:
  void on_output(std::span<const uint8_t> bytes);

  std::optional<std::string> error_;
  std::unique_ptr<Vm> vm_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string console_;
  size_t consumed_ = 0;  // bytes of console_ whose lines next_line() has looked at
  std::optional<VmExit> exit_;
};

// Reserves `pages` more 2 MiB hugepages for the test and gives the pool back afterwards.
// Other tests that touch the pool wait meanwhile (HugepagePoolLock).
class HugepageReservation {
 public:
  explicit HugepageReservation(uint64_t pages);
  ~HugepageReservation();
  bool ok() const { return ok_; }

 private:
  testing_support::HugepagePoolLock lock_;  // first: taken before the pool is read
  std::optional<uint64_t> original_;
  bool ok_ = false;
};

// Runs the skiff binary with arguments; captures stdout and stderr.
struct CliRun {
  int exit_code = -1;   // -1 when killed by a signal
  int signal = 0;
  std::string out;
  std::string err;
};
// `while_running`, when given, is called with skiff's pid right after it started (the
// timeout and `sigterm_after` count from when it returns), e.g. to look at /proc.
CliRun run_cli(const std::vector<std::string>& args, std::chrono::seconds timeout = std::chrono::seconds(120),
               std::optional<std::chrono::milliseconds> sigterm_after = std::nullopt,
               const std::function<void(pid_t)>& while_running = {});

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
