// SPDX-License-Identifier: Apache-2.0
// Why a VM stopped, and the process exit codes skiff maps that to (docs/exit-codes.md).
#pragma once

#include <functional>
#include <string>

namespace skiff {

enum class StopReason {
  kGuestPowerOff,   // ACPI S5 / KVM_EXIT_SHUTDOWN after a clean power-off
  kGuestReboot,     // i8042 reset, ACPI reset register: the VM ends (reboot-as-exit)
  kDebugExit,       // the guest wrote a code to the debug-exit port
  kGuestCrash,      // triple fault, KVM internal error, failed entry
  kVmmError,        // skiff itself failed while running
  kStopRequested,   // stopped by the host (API, signal, Vm::stop)
};

// Process exit codes of `skiff run`.
inline constexpr int kExitOk = 0;              // guest powered off or rebooted
inline constexpr int kExitUsage = 64;          // bad command line (CLI11 parse errors)
inline constexpr int kExitConfig = 78;         // bad spec, CLI override or input file
inline constexpr int kExitHost = 69;           // host resource missing or refused
inline constexpr int kExitVmm = 70;            // skiff failed at run time
inline constexpr int kExitGuestCrash = 71;     // triple fault, emulation failure, bad entry
inline constexpr int kExitStopped = 75;        // stopped by the host (SIGTERM/SIGINT, API)

struct VmExit {
  StopReason reason = StopReason::kStopRequested;
  int exit_code = kExitStopped;  // the process exit code this maps to
  std::string detail;            // one line for humans: what happened
};

const char* to_string(StopReason reason);

// How a device asks the VM to stop (guest reset, power-off, debug exit). Safe to call from
// any thread, more than once: the first request wins.
using StopCallback = std::function<void(VmExit)>;

}  // namespace skiff
