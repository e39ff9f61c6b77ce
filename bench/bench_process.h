// SPDX-License-Identifier: Apache-2.0
// What the device benchmarks (blk_bench.cc, net_bench.cc) share: VMMs and tools as child
// processes, the guest's start/end markers timed as their bytes arrive on the child's stdout,
// a profile without perf (per-thread CPU time and context switches from /proc), the host's
// TSC rate and a one-line description of the host. Nothing of libskiff is linked in.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace skiff::bench {

int64_t monotonic_ns();
// "<what>: <strerror(errno)>"
std::string errno_text(std::string_view what);

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  void reset();

 private:
  int fd_ = -1;
};

// CPU placement of every child started from now on (VMMs, fio): a list such as "1" or
// "0,2-3", applied with sched_setaffinity in the child before execve, so that all of the
// child's threads (vCPUs, I/O threads) share those CPUs. Empty: no placement (the default).
// Returns why the list is not usable: malformed, or naming a CPU this process may not use.
std::expected<void, std::string> set_child_cpus(const std::string& list);
// The list given to set_child_cpus, "" when none; and how many CPUs it names.
const std::string& child_cpus();
unsigned child_cpu_count();

// As execvp would find it, but before fork, so a missing program is reported by name.
std::expected<std::string, std::string> resolve_program(const std::string& name);

// A child with stdin on /dev/null, stdout on a pipe we read and stderr in a memfd. It gets
// SIGKILL when the benchmark dies, and when the Child is destroyed.
class Child {
 public:
  static std::expected<Child, std::string> spawn(const std::string& program, const std::vector<std::string>& argv);

  Child() = default;
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { kill_and_reap(); }

  int stdout_fd() const { return stdout_.get(); }
  pid_t pid() const { return pid_; }
  bool alive();
  void kill_and_reap();
  void wait_or_kill(int64_t timeout_ns);
  std::optional<int> exit_status() const { return exit_status_; }
  std::string stderr_text() const;

 private:
  pid_t pid_ = -1;
  UniqueFd stdout_;
  UniqueFd stderr_;
  std::optional<int> exit_status_;
};

// The last `bytes` of text, "..."-prefixed when cut.
std::string tail(const std::string& text, size_t bytes);
// The first line of text, "?" when empty.
std::string first_line(const std::string& text);
// Runs a command to its end (fio, `--version`) and returns its stdout, or why it failed.
std::expected<std::string, std::string> capture(const std::string& program, const std::vector<std::string>& argv,
                                                double timeout_s);

// `key=value` words of a guest line.
std::map<std::string, std::string> fields_of(std::string_view line);
uint64_t field_u64(const std::map<std::string, std::string>& fields, const std::string& key);

// ---- a profile without perf ----------------------------------------------------------------

struct ThreadStat {
  double cpu_s = 0;  // user + system
  uint64_t voluntary = 0;
  uint64_t involuntary = 0;
};
// Summed by thread name (comm; io_uring's workers "iou-wrk-<tid>" are folded to "iou-wrk").
std::map<std::string, ThreadStat> thread_stats(pid_t pid);
std::map<std::string, ThreadStat> stats_delta(const std::map<std::string, ThreadStat>& before,
                                              const std::map<std::string, ThreadStat>& after);

// Host TSC ticks per second. Guests under KVM without TSC scaling (this host has no
// KVM_CAP_TSC_CONTROL) read the host's TSC plus an offset, so the rate is the same.
double calibrate_tsc_hz();
// "Linux <release>, <cpu model>, <n> CPUs, load <1-minute load average>"
std::string describe_host();

// ---- one VMM run, timed between two guest lines ---------------------------------------------

struct MarkedRunHooks {
  // After every chunk of output, with everything read so far (e.g. to act on a "ready" line).
  std::function<void(const std::string& console)> on_output;
  // When the start line has arrived / the end line's first byte has arrived.
  std::function<void()> on_start;
  std::function<void()> on_end;
};

struct MarkedRun {
  std::string error;  // empty when both markers arrived and the VMM's stdout ended
  std::string console;
  std::string stderr_text;
  std::string end_line;  // the end marker's whole line
  double wall_s = 0;       // start line's newline to the end line's first byte, host clock
  double total_run_s = 0;  // the VMM process from spawn to exit
  std::map<std::string, ThreadStat> threads;  // between the markers, by thread name
};

// Runs `program` to its end (at most timeout_s). The clock starts at the read that completed
// `start_line` (which must include its newline) and stops at the read that brought the first
// byte of `end_prefix`. Without them, error says what the guest printed instead (its first
// "SKIFF-GUEST error" line if any).
MarkedRun run_marked(const std::string& program, const std::vector<std::string>& argv, std::string_view start_line,
                     std::string_view end_prefix, double timeout_s, const MarkedRunHooks& hooks = {});

}  // namespace skiff::bench
