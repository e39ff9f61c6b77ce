// SPDX-License-Identifier: Apache-2.0
// The skiff command: a thin shell over libskiff.
//   skiff run SPEC [overrides]    boot a VM and exit with its verdict
//   skiff validate SPEC           check a spec and the files it names
//   skiff host-check [--json]     what this host offers
//   skiff version
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/host_check.h"
#include "config/spec_overrides.h"
#include "skiff/exit.h"
#include "skiff/spec.h"
#include "skiff/version.h"
#include "skiff/vm.h"

namespace {

using namespace skiff;

struct RunOptions {
  std::string spec_path;
  std::optional<std::string> kernel;
  std::optional<std::string> initrd;
  std::optional<std::string> cmdline;
  std::optional<uint32_t> vcpus;
  std::optional<std::string> memory;
};

int fail(const Error& error) {
  spdlog::error("{}", error.message());
  return exit_code_for(error);
}

// Loads the spec (or starts from defaults when only --kernel is given) and applies the
// command-line overrides, which take precedence over the file. Vm::create validates the
// result.
Result<VmSpec> build_spec(const RunOptions& options) {
  VmSpec spec;
  if (!options.spec_path.empty()) {
    auto loaded = load_spec_file(options.spec_path);
    if (!loaded) return std::unexpected(loaded.error());
    spec = std::move(*loaded);
  } else if (!options.kernel) {
    return config_error("no spec file and no --kernel: give a spec (skiff run vm.json) or at least --kernel");
  }
  if (options.kernel) spec.boot.kernel = *options.kernel;
  if (options.initrd) spec.boot.initrd = *options.initrd;
  if (options.cmdline) spec.boot.cmdline = *options.cmdline;
  if (options.vcpus) spec.machine.vcpus = *options.vcpus;
  if (options.memory) {
    auto mib = skiff::config::parse_memory_size(*options.memory);
    if (!mib) return std::unexpected(mib.error().with_context("--memory"));
    spec.machine.memory_mib = *mib;
  }
  return spec;  // Vm::create validates it, files included
}

// SIGINT/SIGTERM/SIGHUP are blocked in every thread and taken by one waiting thread,
// which asks the VM to stop; the vCPU threads never see them.
class SignalWatcher {
 public:
  SignalWatcher() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    sigaddset(&signals_, SIGHUP);
    sigaddset(&signals_, SIGUSR2);  // our own wake-up at exit
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
  }
  void watch(Vm& vm) {
    thread_ = std::thread([this, &vm] {
      pthread_setname_np(pthread_self(), "skiff-signals");
      int signal = 0;
      while (sigwait(&signals_, &signal) == 0) {
        if (signal == SIGUSR2) return;  // our own wake-up at exit
        vm.request_stop(VmExit{StopReason::kStopRequested, kExitStopped,
                               fmt::format("stopped by signal {}", strsignal(signal))});
      }
    });
  }
  ~SignalWatcher() {
    if (thread_.joinable()) {
      // Wake the waiting thread with a signal it also waits for.
      pthread_kill(thread_.native_handle(), SIGUSR2);
      thread_.join();
    }
  }

 private:
  sigset_t signals_;
  std::thread thread_;
};

int run_vm(const RunOptions& options) {
  auto spec = build_spec(options);
  if (!spec) return fail(spec.error());

  SignalWatcher signals;
  auto vm = Vm::create(*spec);
  if (!vm) return fail(vm.error());
  signals.watch(**vm);
  if (auto started = (*vm)->start(); !started) return fail(started.error());
  VmExit exit = (*vm)->wait();
  VmTimings timings = (*vm)->timings();

  auto ms = [&](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(t - timings.created).count();
  };
  std::string first_output = timings.first_console_output
                                 ? fmt::format("{:.1f} ms", ms(*timings.first_console_output))
                                 : std::string("none");
  std::string total = timings.stopped ? fmt::format("{:.1f} ms", ms(*timings.stopped)) : "?";
  switch (exit.reason) {
    case StopReason::kGuestCrash:
    case StopReason::kVmmError:
      spdlog::error("{} (exit code {})", exit.detail, exit.exit_code);
      break;
    default:
      spdlog::info("{} (exit code {})", exit.detail, exit.exit_code);
      break;
  }
  spdlog::info("first console output after {}, VM ran {} in total", first_output, total);
  return exit.exit_code;
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
  // Logs go to stderr: stdout belongs to the guest console.
  auto logger = spdlog::stderr_color_mt("skiff");
  logger->set_pattern("skiff: %^%l%$: %v");
  spdlog::set_default_logger(logger);

  CLI::App app{"skiff: a KVM virtual machine monitor", "skiff"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));

  RunOptions run_options;
  CLI::App* run = app.add_subcommand("run", "boot a VM from a JSON spec and exit with its verdict");
  run->add_option("spec", run_options.spec_path, "VM spec (JSON); optional when --kernel is given");
  run->add_option("--kernel", run_options.kernel, "kernel image (bzImage or ELF), overrides boot.kernel");
  run->add_option("--initrd", run_options.initrd, "initial ramdisk, overrides boot.initrd");
  run->add_option("--cmdline", run_options.cmdline, "kernel command line, overrides boot.cmdline");
  run->add_option("--vcpus", run_options.vcpus, "number of vCPUs, overrides machine.vcpus");
  run->add_option("--memory", run_options.memory, "guest RAM, e.g. 512M or 2G, overrides machine.memory_mib");
  run->footer(
      "Exit codes: the guest's debug-exit value; 0 guest power-off/reboot; 64 usage; "
      "69 host resource; 70 VMM failure; 71 guest crash; 75 stopped by signal; 78 bad spec. "
      "See docs/exit-codes.md.");

  std::string validate_path;
  CLI::App* validate_cmd = app.add_subcommand("validate", "check a spec and the files it names");
  validate_cmd->add_option("spec", validate_path, "VM spec (JSON)")->required();

  bool host_check_json = false;
  CLI::App* host_check = app.add_subcommand("host-check", "report what this host offers skiff");
  host_check->add_flag("--json", host_check_json, "machine-readable output");

  CLI::App* version = app.add_subcommand("version", "print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? kExitOk : kExitUsage;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (*run) return run_vm(run_options);
  if (*validate_cmd) return validate(validate_path);
  if (*host_check) return skiff::cli::run_host_check(host_check_json);
  if (*version) {
    fmt::print("skiff {}\n", SKIFF_VERSION);
    return kExitOk;
  }
  return kExitUsage;
}
