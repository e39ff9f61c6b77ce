// SPDX-License-Identifier: Apache-2.0
// Why a VM stopped, and the process exit codes skiff maps that to (docs/exit-codes.md).
#pragma once

#include <string>

namespace skiff {

enum class StopReason {
  kGuestPowerOff,   // ACPI S5 / KVM_EXIT_SHUTDOWN after a clean power-off
  kGuestReboot,     // i8042 reset, ACPI reset register: the VM ends (reboot-as-exit)
  kDebugExit,       // the guest wrote a code to the debug-exit port
  kGuestCrash,      // triple fault, KVM internal error, failed entry
  kVmmError,        // skiff itself failed while running
  kStopRequested,   // stopped by the host (API, signal, Vm::stop)
  kGuestPanic,      // the guest kernel panicked: pvpanic write, or its panic banner on the console
  kTimeout,         // the host's time limit ran out (`skiff run --timeout`)
  kConsoleFailure,  // a console line matched a failure pattern (`skiff run --fail-on`)
};

// Process exit codes of `skiff run` / `skiff test` and of exit_code_for() (the table in
// docs/exit-codes.md). skiff's own codes are 64-79 and 124; a guest's debug-exit codes 0-63
// never collide. The values follow sysexits.h where one fits (64, 69, 70, 75, 78) and
// coreutils' `timeout` for 124; the rest count up from 71; 77 stays free because ctest
// reads it as "skipped".
inline constexpr int kExitOk = 0;                  // guest powered off or rebooted
inline constexpr int kExitUsage = 64;              // bad command line (CLI11 errors, bad regex)
inline constexpr int kExitConfig = 78;             // bad spec, CLI override or input file
inline constexpr int kExitHost = 69;               // host resource missing or refused
inline constexpr int kExitVmm = 70;                // skiff failed at run time
inline constexpr int kExitGuestCrash = 71;         // triple fault, emulation failure, bad entry
inline constexpr int kExitGuestPanic = 72;         // guest kernel panic (pvpanic or console banner)
inline constexpr int kExitConsoleFailure = 73;     // a --fail-on pattern matched a console line
inline constexpr int kExitExpectationMissed = 74;  // the guest succeeded, but an --expect never matched
inline constexpr int kExitStopped = 75;            // stopped by the host (SIGTERM/SIGINT, API)
inline constexpr int kExitState = 76;              // the VM's state refused a request (ErrorKind::kState)
inline constexpr int kExitTimeout = 124;           // --timeout ran out before the guest's verdict

struct VmExit {
  StopReason reason = StopReason::kStopRequested;
  int exit_code = kExitStopped;  // the process exit code this maps to
  std::string detail;            // one line for humans: what happened
};

const char* to_string(StopReason reason);

}  // namespace skiff
