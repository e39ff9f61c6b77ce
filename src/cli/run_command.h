// SPDX-License-Identifier: Apache-2.0
// `skiff run` and `skiff test`: boot a VM and exit with its verdict (docs/exit-codes.md),
// optionally under a time limit and with console patterns, a console log and a result
// file for CI (docs/kernel-ci.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/spec_overrides.h"

namespace CLI {
class App;
}

namespace skiff::cli {

// How long the first SIGTERM/SIGINT/SIGHUP gives the guest to shut down.
inline constexpr double kDefaultShutdownTimeoutSeconds = 10;

struct RunOptions {
  std::string spec_path;
  // --kernel, --initrd, --cmdline, --vcpus, --memory, --balloon-target.
  config::SpecOverrides overrides;

  // Seconds until the VM is stopped with kExitTimeout; 0 or unset: no limit.
  std::optional<double> timeout_seconds;
  std::vector<std::string> expect;   // every one must match a console line for a pass
  std::vector<std::string> fail_on;  // the first console line matching one fails the run
  std::optional<std::string> console_log;
  // SIGTERM/SIGINT/SIGHUP: seconds for a graceful shutdown before the hard stop; 0 = none.
  double shutdown_timeout_seconds = kDefaultShutdownTimeoutSeconds;
  std::optional<std::string> result_json;

  // --seccomp: "enforce", "log" or "off" (docs/security.md).
  std::string seccomp = "enforce";
  // --uid/--gid: the user and group skiff continues as once the VM is built (both or neither).
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;

  // `skiff test`: console to stdout, no console input, a default time limit.
  bool test_mode = false;
};

// The time limit `skiff test` uses when --timeout is not given.
inline constexpr double kTestDefaultTimeoutSeconds = 300;

// Adds the options of `skiff run` / `skiff test` to `command`, bound to `options`.
void add_run_options(CLI::App& command, RunOptions& options);

// Runs the VM and returns the process exit code. `process_start` is when skiff started,
// for the total time in the timings line and the result file.
int run_command(const RunOptions& options, std::chrono::steady_clock::time_point process_start);

}  // namespace skiff::cli
