// SPDX-License-Identifier: Apache-2.0
// The skiff command: a thin shell over libskiff.
//   skiff run SPEC [overrides]    boot a VM and exit with its verdict
//   skiff test SPEC [overrides]   the same for CI: console to stdout, no input, time limit
//   skiff validate SPEC           check a spec and the files it names
//   skiff host-check [--json]     what this host offers
//   skiff ctl SOCKET COMMAND      control a running VM through its API socket
//   skiff version
#include <chrono>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/ctl_command.h"
#include "cli/host_check.h"
#include "cli/run_command.h"
#include "skiff/exit.h"
#include "skiff/spec.h"
#include "skiff/version.h"
#include "skiff/vm.h"

namespace {

using namespace skiff;

int fail(const Error& error) {
  spdlog::error("{}", error.message());
  return exit_code_for(error);
}

int validate(const std::string& path) {
  auto spec = load_spec_file(path);
  if (!spec) return fail(spec.error());
  if (auto valid = validate_spec(*spec); !valid) return fail(valid.error());
  fmt::print("{}: valid ({} vCPU{}, {} MiB, kernel {})\n", path, spec->machine.vcpus,
             spec->machine.vcpus == 1 ? "" : "s", spec->machine.memory_mib,
             spec->boot.kernel.string());
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  const auto process_start = std::chrono::steady_clock::now();
  // Logs go to stderr: stdout belongs to the guest console.
  auto logger = spdlog::stderr_color_mt("skiff");
  logger->set_pattern("skiff: %^%l%$: %v");
  spdlog::set_default_logger(logger);

  CLI::App app{"skiff: a KVM virtual machine monitor", "skiff"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));

  cli::RunOptions run_options;
  CLI::App* run = app.add_subcommand("run", "boot a VM from a JSON spec and exit with its verdict");
  cli::add_run_options(*run, run_options);

  cli::RunOptions test_options;
  test_options.test_mode = true;
  CLI::App* test = app.add_subcommand(
      "test", fmt::format("boot-test a kernel: `run` with the console on stdout, no console input and a {:g} s "
                          "time limit unless --timeout says otherwise (docs/kernel-ci.md)",
                          cli::kTestDefaultTimeoutSeconds));
  cli::add_run_options(*test, test_options);

  std::string validate_path;
  CLI::App* validate_cmd = app.add_subcommand("validate", "check a spec and the files it names");
  validate_cmd->add_option("spec", validate_path, "VM spec (JSON)")->required();

  bool host_check_json = false;
  CLI::App* host_check = app.add_subcommand("host-check", "report what this host offers skiff");
  host_check->add_flag("--json", host_check_json, "machine-readable output");

  cli::CtlOptions ctl_options;
  CLI::App* ctl = cli::add_ctl_command(app, ctl_options);

  CLI::App* version = app.add_subcommand("version", "print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? kExitOk : kExitUsage;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (*run) return cli::run_command(run_options, process_start);
  if (*test) return cli::run_command(test_options, process_start);
  if (*validate_cmd) return validate(validate_path);
  if (*host_check) return skiff::cli::run_host_check(host_check_json);
  if (*ctl) return cli::run_ctl_command(*ctl, ctl_options);
  if (*version) {
    fmt::print("skiff {}\n", SKIFF_VERSION);
    return kExitOk;
  }
  return kExitUsage;
}
