// SPDX-License-Identifier: Apache-2.0
// `skiff ctl SOCKET <command>`: a client of a running VM's control API (docs/api.md).
//   info | pause | resume | shutdown [--timeout S] | stop | stats | balloon MIB | metrics
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace skiff::cli {

// Exit codes of `skiff ctl` besides 0 (the API answered 2xx) and the usual kExitUsage and
// kExitHost (no socket, nothing listening, no answer).
inline constexpr int kCtlExitRefused = 1;  // the API answered 4xx: the request does not fit the VM

struct CtlOptions {
  std::string socket;
  std::optional<double> shutdown_timeout_seconds;  // shutdown --timeout
  uint64_t balloon_mib = 0;                        // balloon MIB
  double request_timeout_seconds = 30;             // --request-timeout: wait for the answer
};

// Adds `ctl` and its commands to `app`; returns the `ctl` subcommand.
CLI::App* add_ctl_command(CLI::App& app, CtlOptions& options);

// Runs the command parsed into `ctl` and returns the process exit code.
int run_ctl_command(const CLI::App& ctl, const CtlOptions& options);

}  // namespace skiff::cli
