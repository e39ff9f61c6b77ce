// SPDX-License-Identifier: Apache-2.0
#include "cli/run_command.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/console_watch.h"
#include "common/unique_fd.h"
#include "config/spec_overrides.h"
#include "devices/legacy/serial.h"
#include "security/filtered_thread.h"
#include "security/privileges.h"
#include "security/seccomp_filter.h"
#include "skiff/exit.h"
#include "skiff/spec.h"
#include "skiff/version.h"
#include "skiff/vm.h"

namespace skiff::cli {
namespace {

using Clock = std::chrono::steady_clock;

// How many console lines the result file keeps.
constexpr size_t kResultConsoleLines = 50;

// Loads the spec (or starts from defaults when only --kernel is given) and applies the
// command-line overrides, which take precedence over the file. Vm::create validates the
// result.
Result<VmSpec> build_spec(const RunOptions& options) {
  VmSpec spec;
  if (!options.spec_path.empty()) {
    auto loaded = load_spec_file(options.spec_path);
    if (!loaded) return std::unexpected(loaded.error());
    spec = std::move(*loaded);
  } else if (!options.overrides.kernel) {
    return config_error("no spec file and no --kernel: give a spec (skiff run vm.json) or at least --kernel");
  }
  config::SpecOverrides overrides = options.overrides;
  overrides.console_to_stdout = options.test_mode;
  if (auto applied = config::apply_spec_overrides(overrides, spec); !applied) return std::unexpected(applied.error());
  return spec;  // Vm::create validates it, files included
}

// SIGINT/SIGTERM/SIGHUP are blocked in every thread and taken by one waiting thread; the
// vCPU threads never see them. The first asks the guest to shut down (Vm::shutdown, a hard
// stop after `shutdown_timeout`), a second one stops the VM at once. With a zero timeout
// the first signal stops it at once.
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
  Result<void> watch(Vm& vm, std::chrono::milliseconds shutdown_timeout, SeccompMode seccomp) {
    auto thread = security::start_filtered_thread("skiff-signals", security::ThreadKind::signals, seccomp, [this, &vm,
                                                                                                  shutdown_timeout] {
      int signal = 0;
      bool asked = false;
      while (sigwait(&signals_, &signal) == 0) {
        if (signal == SIGUSR2) return;  // our own wake-up at exit
        if (!asked && shutdown_timeout.count() > 0) {
          asked = true;
          spdlog::warn("signal {}: asking the guest to shut down, stopping it in {:g} s (signal again to stop now)",
                       strsignal(signal), shutdown_timeout.count() / 1000.0);
          if (auto r = vm.shutdown(shutdown_timeout); r) continue;
        }
        vm.request_stop(VmExit{StopReason::kStopRequested, kExitStopped,
                               fmt::format("stopped by signal {}", strsignal(signal))});
      }
    });
    if (!thread) return std::unexpected(thread.error());
    thread_ = std::move(*thread);
    return {};
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

Result<UniqueFd> open_output_file(const std::string& what, const std::string& path, int flags) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
  if (fd < 0) {
    int err = errno;
    return std::unexpected(Error(ErrorKind::kConfig, fmt::format("{} \"{}\": {}", what, path, std::strerror(err)), err));
  }
  return UniqueFd(fd);
}

// The console when skiff watches it: the spec's destination, the --console-log file and
// the patterns, fed from the serial device (a vCPU thread, under the Serial's lock).
struct WatchedConsole {
  UniqueFd serial_file;
  UniqueFd log_file;
  Serial::OutputSink destination;
  Serial::OutputSink log;
  std::unique_ptr<ConsoleWatch> watch;
  std::atomic<Vm*> vm{nullptr};  // set before the VM starts, so before any output

  void on_output(std::span<const uint8_t> bytes) {
    if (destination) destination(bytes);
    if (log) log(bytes);
    if (auto failure = watch->feed(bytes)) {
      if (Vm* target = vm.load(std::memory_order_acquire)) {
        target->request_stop(VmExit{StopReason::kConsoleFailure, kExitConsoleFailure,
                                    fmt::format("console line matched --fail-on \"{}\": {}", failure->pattern,
                                                failure->line)});
      }
    }
  }
};

Result<std::shared_ptr<WatchedConsole>> watch_console(const RunOptions& options, const VmSpec& spec,
                                                      std::vector<ConsolePattern> expect,
                                                      std::vector<ConsolePattern> fail_on) {
  auto console = std::make_shared<WatchedConsole>();
  switch (spec.serial.mode) {
    case SerialMode::kStdout:
      console->destination = Serial::fd_output_sink(STDOUT_FILENO);
      break;
    case SerialMode::kFile: {
      // As the VM itself would: append to serial.path.
      auto fd = open_output_file("serial.path", spec.serial.path.string(), O_APPEND);
      if (!fd) return std::unexpected(fd.error());
      console->serial_file = std::move(*fd);
      console->destination = Serial::fd_output_sink(console->serial_file.get());
      break;
    }
    case SerialMode::kNone:
      break;
  }
  if (options.console_log) {
    auto fd = open_output_file("--console-log", *options.console_log, O_TRUNC);
    if (!fd) return std::unexpected(fd.error());
    console->log_file = std::move(*fd);
    console->log = Serial::fd_output_sink(console->log_file.get());
  }
  console->watch = std::make_unique<ConsoleWatch>(std::move(expect), std::move(fail_on), kResultConsoleLines);
  return console;
}

std::optional<double> ms_between(std::optional<Clock::time_point> from, std::optional<Clock::time_point> to) {
  if (!from || !to) return std::nullopt;
  // Rounded to 0.1 ms: finer digits are noise.
  return std::round(std::chrono::duration<double, std::milli>(*to - *from).count() * 10) / 10;
}

std::string format_ms(std::optional<double> ms) { return ms ? fmt::format("{:.1f} ms", *ms) : "-"; }

// "pass" / "fail" / "panic" / "crash" / "timeout" / "stopped" / "error" (docs/kernel-ci.md).
const char* verdict_name(const VmExit& exit) {
  if (exit.exit_code == kExitOk) return "pass";
  switch (exit.reason) {
    case StopReason::kGuestPanic: return "panic";
    case StopReason::kGuestCrash: return "crash";
    case StopReason::kTimeout: return "timeout";
    case StopReason::kStopRequested: return "stopped";
    case StopReason::kVmmError: return "error";
    default: return "fail";
  }
}

nlohmann::json json_or_null(std::optional<double> value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

struct Outcome {
  std::string verdict{};
  int exit_code = 0;
  std::optional<StopReason> stop_reason{};
  std::string detail{};
  std::optional<double> to_first_console_ms{};
  std::optional<double> to_verdict_ms{};
  double total_ms = 0;
};

nlohmann::json result_json(const Outcome& outcome, const WatchedConsole* console,
                           std::optional<Clock::time_point> started) {
  nlohmann::json result;
  result["skiff_version"] = SKIFF_VERSION;
  result["verdict"] = outcome.verdict;
  result["exit_code"] = outcome.exit_code;
  result["stop_reason"] = outcome.stop_reason ? nlohmann::json(to_string(*outcome.stop_reason)) : nullptr;
  result["detail"] = outcome.detail;
  result["timings"] = {{"to_first_console_ms", json_or_null(outcome.to_first_console_ms)},
                       {"to_verdict_ms", json_or_null(outcome.to_verdict_ms)},
                       {"total_ms", outcome.total_ms}};
  auto match_json = [&](const ConsoleWatch::Match& match) {
    return nlohmann::json{{"pattern", match.pattern}, {"line", match.line},
                          {"at_ms", json_or_null(ms_between(started, match.when))}};
  };
  nlohmann::json expectations = nlohmann::json::array();
  nlohmann::json failure = nullptr;
  nlohmann::json lines = nlohmann::json::array();
  if (console) {
    const ConsoleWatch& watch = *console->watch;
    auto missing = watch.missing_expectations();
    size_t missing_index = 0;
    for (const auto& match : watch.expectations()) {
      if (match) {
        nlohmann::json entry = match_json(*match);
        entry["matched"] = true;
        expectations.push_back(std::move(entry));
      } else {
        expectations.push_back({{"pattern", missing.at(missing_index++)}, {"matched", false}, {"line", nullptr},
                                {"at_ms", nullptr}});
      }
    }
    if (auto fail = watch.failure()) failure = match_json(*fail);
    for (const std::string& line : watch.last_lines()) lines.push_back(line);
  }
  result["expectations"] = std::move(expectations);
  result["fail_on_match"] = std::move(failure);
  result["last_console_lines"] = std::move(lines);
  return result;
}

// --result-json: opened (and truncated) before the boot so that an unwritable path fails
// early, and written through the same descriptor at the end: once the main thread's seccomp
// filter is in place it cannot open files.
struct ResultFile {
  std::optional<std::string> path;
  UniqueFd fd;
};

void write_result(ResultFile& file, const nlohmann::json& result) {
  if (!file.path) return;
  if (!file.fd.valid()) {  // a failure before the file was opened
    auto opened = open_output_file("--result-json", *file.path, O_TRUNC);
    if (!opened) {
      spdlog::error("{}", opened.error().message());
      return;
    }
    file.fd = std::move(*opened);
  }
  // Invalid UTF-8 from the guest console is replaced, not an exception.
  const std::string text = result.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + '\n';
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(file.fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      spdlog::error("--result-json \"{}\": could not write the result: {}", *file.path,
                    n < 0 ? std::strerror(errno) : "no progress");
      return;
    }
    done += static_cast<size_t>(n);
  }
}

// A failure before the VM ran: one error line, and the result file when asked for.
int fail_before_run(ResultFile& result_file, const Error& error, Clock::time_point process_start) {
  spdlog::error("{}", error.message());
  Outcome outcome{.verdict = "error", .exit_code = exit_code_for(error), .detail = error.message()};
  outcome.total_ms = *ms_between(process_start, Clock::now());
  write_result(result_file, result_json(outcome, nullptr, std::nullopt));
  return outcome.exit_code;
}

}  // namespace

void add_run_options(CLI::App& command, RunOptions& options) {
  command.add_option("spec", options.spec_path, "VM spec (JSON); optional when --kernel is given");
  command.add_option("--kernel", options.overrides.kernel, "kernel image (bzImage or ELF), overrides boot.kernel");
  command.add_option("--initrd", options.overrides.initrd, "initial ramdisk, overrides boot.initrd");
  command.add_option("--cmdline", options.overrides.cmdline, "kernel command line, overrides boot.cmdline");
  command.add_option("--vcpus", options.overrides.vcpus, "number of vCPUs, overrides machine.vcpus");
  command.add_option("--memory", options.overrides.memory, "guest RAM, e.g. 512M or 2G, overrides machine.memory_mib");
  command.add_option("--balloon-target", options.overrides.balloon_target,
                     "initial balloon target, e.g. 256M (MiB when no unit), overrides balloon.target_mib; adds a "
                     "balloon when the spec has none");
  command
      .add_option("--timeout", options.timeout_seconds,
                  options.test_mode
                      ? fmt::format("seconds until the VM is stopped with exit code {} (default {:g}; 0: no limit)",
                                    kExitTimeout, kTestDefaultTimeoutSeconds)
                      : fmt::format("seconds until the VM is stopped with exit code {} (0: no limit)", kExitTimeout))
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            double value = -1;
            size_t used = 0;
            try {
              value = std::stod(text, &used);
            } catch (const std::exception&) {
              used = 0;
            }
            if (used != text.size() || !(value >= 0) || !std::isfinite(value)) {
              return fmt::format("\"{}\" is not a number of seconds (0 or more)", text);
            }
            return {};
          },
          "SECONDS"));
  // One value per occurrence: a pattern never swallows the spec path that follows it.
  command
      .add_option("--expect", options.expect,
                  fmt::format("ECMAScript regex that some console line must match for a pass, else exit code {} "
                              "(repeatable)",
                              kExitExpectationMissed))
      ->allow_extra_args(false);
  command
      .add_option("--fail-on", options.fail_on,
                  fmt::format("ECMAScript regex: the first console line matching it stops the VM with exit code {} "
                              "(repeatable)",
                              kExitConsoleFailure))
      ->allow_extra_args(false);
  command
      .add_option("--shutdown-timeout", options.shutdown_timeout_seconds,
                  fmt::format("on SIGTERM/SIGINT/SIGHUP, seconds the guest gets to shut down (ACPI power button, then "
                              "Ctrl-Alt-Del) before it is stopped with exit code {}; 0: stop at once (default {:g})",
                              kExitStopped, kDefaultShutdownTimeoutSeconds))
      ->check(CLI::Range(0.0, 3600.0));
  command.add_option("--console-log", options.console_log, "also write the guest console to this file");
  command
      .add_option("--seccomp", options.seccomp,
                  "system call filters on every skiff thread: enforce (a forbidden call kills skiff, naming it), "
                  "log (the kernel logs it) or off (docs/security.md)")
      ->envname("SKIFF_SECCOMP")
      ->check(CLI::IsMember({"enforce", "log", "off"}))
      ->default_str("enforce");
  command.add_option("--uid", options.uid,
                     "continue as this user once the VM is built (with --gid; /dev/kvm, taps and disks are opened "
                     "first)");
  command.add_option("--gid", options.gid, "continue as this group once the VM is built (with --uid)");
  command.add_option("--result-json", options.result_json,
                     "write the verdict, exit code, timings and last console lines to this file as JSON");
  command.footer(fmt::format(
      "Exit codes: the guest's debug-exit value; 0 guest power-off/reboot; {} usage; {} host resource; {} VMM "
      "failure; {} guest crash; {} guest kernel panic; {} --fail-on matched; {} --expect not matched; {} stopped "
      "by signal; {} bad spec; {} --timeout. See docs/exit-codes.md.",
      kExitUsage, kExitHost, kExitVmm, kExitGuestCrash, kExitGuestPanic, kExitConsoleFailure,
      kExitExpectationMissed, kExitStopped, kExitConfig, kExitTimeout));
}

int run_command(const RunOptions& options, Clock::time_point process_start) {
  // Patterns first: a typo in one is a usage error, before anything boots.
  std::vector<ConsolePattern> expect;
  std::vector<ConsolePattern> fail_on;
  for (const auto& [option, texts, patterns] :
       {std::tuple{"--expect", &options.expect, &expect}, std::tuple{"--fail-on", &options.fail_on, &fail_on}}) {
    for (const std::string& text : *texts) {
      auto pattern = compile_console_pattern(option, text);
      if (!pattern) {
        spdlog::error("{}", pattern.error().message());
        return kExitUsage;
      }
      patterns->push_back(std::move(*pattern));
    }
  }
  const double timeout_seconds = options.timeout_seconds.value_or(options.test_mode ? kTestDefaultTimeoutSeconds : 0);

  ResultFile result_file{.path = options.result_json, .fd = {}};
  auto seccomp = security::parse_seccomp_mode(options.seccomp);
  if (!seccomp) return fail_before_run(result_file, seccomp.error().with_context("--seccomp"), process_start);
  if (options.uid.has_value() != options.gid.has_value()) {
    return fail_before_run(result_file,
                           config_error("--uid and --gid go together: give both (e.g. --uid 1000 --gid 1000)").error(),
                           process_start);
  }
  if ((options.uid && *options.uid == 0) || (options.gid && *options.gid == 0)) {
    return fail_before_run(result_file,
                           config_error("--uid/--gid 0 is root: give the unprivileged user and group skiff should "
                                        "continue as")
                               .error(),
                           process_start);
  }

  auto spec = build_spec(options);
  if (!spec) return fail_before_run(result_file, spec.error(), process_start);

  // The result file is opened now so that an unwritable path fails before the boot.
  if (result_file.path) {
    auto fd = open_output_file("--result-json", *result_file.path, O_TRUNC);
    if (!fd) {
      result_file.path.reset();  // nothing more to say to a file that cannot be opened
      return fail_before_run(result_file, fd.error(), process_start);
    }
    result_file.fd = std::move(*fd);
  }

  // skiff reads the console itself only when something needs it; otherwise the VM keeps
  // the spec's serial set-up, interactive input included.
  const bool watched = options.test_mode || !expect.empty() || !fail_on.empty() || options.console_log ||
                       options.result_json;
  std::shared_ptr<WatchedConsole> console;
  VmOptions vm_options;
  vm_options.seccomp = *seccomp;
  // This process ends once the VM is gone: the caller gets the exit code without waiting
  // for KVM's own teardown of the VM (docs/architecture.md, "Exit").
  vm_options.background_kvm_teardown = true;
  if (watched) {
    auto made = watch_console(options, *spec, std::move(expect), std::move(fail_on));
    if (!made) return fail_before_run(result_file, made.error(), process_start);
    console = std::move(*made);
    if (!options.test_mode && spec->serial.mode == SerialMode::kStdout && spec->serial.input &&
        isatty(STDIN_FILENO)) {
      spdlog::info("console input is off while skiff watches the console (--expect, --fail-on, --console-log, "
                   "--result-json)");
    }
    vm_options.console_output = [console](std::span<const uint8_t> bytes) { console->on_output(bytes); };
  }

  SignalWatcher signals;
  auto vm = Vm::create(*spec, std::move(vm_options));
  if (!vm) return fail_before_run(result_file, vm.error(), process_start);
  if (console) console->vm.store(vm->get(), std::memory_order_release);
  // Everything privileged is done: /dev/kvm, the taps, the disks, the kernel, the console
  // files and the API socket are open. No thread has a filter yet (glibc makes every
  // thread repeat the credential change, which no filter allows).
  if (options.uid) {
    if (auto dropped = security::drop_privileges(*options.uid, *options.gid); !dropped) {
      return fail_before_run(result_file, dropped.error().with_context("--uid/--gid"), process_start);
    }
    spdlog::debug("continuing as uid {} gid {}", *options.uid, *options.gid);
  }
  if (auto watching = signals.watch(
          **vm, std::chrono::milliseconds(static_cast<int64_t>(options.shutdown_timeout_seconds * 1000)), *seccomp);
      !watching) {
    return fail_before_run(result_file, watching.error(), process_start);
  }
  if (auto started = (*vm)->start(); !started) return fail_before_run(result_file, started.error(), process_start);
  // From here the main thread only waits, reports and tears down.
  if (auto filtered = security::install_thread_filter(security::ThreadKind::main, *seccomp); !filtered) {
    (*vm)->request_stop(VmExit{StopReason::kVmmError, kExitVmm, filtered.error().with_context("main thread").message()});
  }

  VmExit exit;
  if (timeout_seconds > 0) {
    const auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::duration<double>(timeout_seconds));
    if (auto stopped = (*vm)->wait_for(limit)) {
      exit = std::move(*stopped);
    } else {
      (*vm)->request_stop(VmExit{StopReason::kTimeout, kExitTimeout,
                                 fmt::format("no verdict from the guest within {:g} s (--timeout)", timeout_seconds)});
      exit = (*vm)->wait();
    }
  } else {
    exit = (*vm)->wait();
  }
  // wait() joined the vCPU threads: the console is quiet from here on.
  const int vm_exit_code = exit.exit_code;
  if (console) {
    console->watch->finish();
    exit = apply_console_verdict(std::move(exit), *console->watch);
  }

  const VmTimings timings = (*vm)->timings();
  Outcome outcome{.verdict = verdict_name(exit), .exit_code = exit.exit_code, .stop_reason = exit.reason,
                  .detail = exit.detail};
  outcome.to_first_console_ms = ms_between(timings.started, timings.first_console_output);
  outcome.to_verdict_ms = ms_between(timings.started, timings.stopped);
  outcome.total_ms = *ms_between(process_start, Clock::now());

  // The guest's own verdict and a stop from outside are news; anything else is a failure.
  const bool guest_or_user = exit.reason == StopReason::kDebugExit || exit.reason == StopReason::kStopRequested;
  if (exit.exit_code == kExitOk || (guest_or_user && exit.exit_code == vm_exit_code)) {
    spdlog::info("{} (exit code {})", exit.detail, exit.exit_code);
  } else {
    spdlog::error("{} (exit code {})", exit.detail, exit.exit_code);
  }
  spdlog::info("timings: first console output after {}, verdict after {} (from VM start); {:.1f} ms in total",
               format_ms(outcome.to_first_console_ms), format_ms(outcome.to_verdict_ms), outcome.total_ms);
  write_result(result_file, result_json(outcome, console.get(), timings.started));
  return exit.exit_code;
}

}  // namespace skiff::cli
