// SPDX-License-Identifier: Apache-2.0
// skiff_bench_startup: skiff's time from exec to the first guest output and its RSS
// beyond guest memory, beside `qemu-system-x86_64 -M microvm` booting the same PVH
// guest in the same run (runs alternate between the two). Targets: start-up at most
// one fifth of QEMU's, overhead at most 5 MiB. See docs/benchmarks.md.
//
// Both VMMs are child processes; nothing of libskiff is linked in. Exit code 0 when
// every run worked, whether the targets are met or not; 1 when a VMM failed to run.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "smaps.h"

extern char** environ;

namespace skiff::bench {
namespace {

// The test guest's last report line for skiff.action=halt (tests/guest/guest.c); after
// it the guest sits in `hlt` forever, so the VMM stays alive to be measured.
constexpr std::string_view kHaltLine = "SKIFF-GUEST action=halt";
constexpr std::string_view kGuestLinePrefix = "SKIFF-GUEST ";
// The exiting guest's report line (skiff.action=exit): it then writes 0 to the debug-exit
// port and the VMM ends.
constexpr std::string_view kExitLine = "SKIFF-GUEST action=exit";
constexpr double kStartupTargetRatio = 0.15;  // skiff at most 0.15 x QEMU
constexpr double kExitTargetRatio = 0.25;     // exec -> process exit at most 0.25 x QEMU
constexpr double kOverheadTargetMib = 4.0;
constexpr size_t kStderrTailBytes = 2000;

struct Options {
  std::string skiff = "skiff";
  std::string qemu = "qemu-system-x86_64";
  std::string guest;
  std::string only = "both";
  unsigned runs = 10;
  unsigned warmup = 1;
  unsigned memory_mib = 256;
  unsigned vcpus = 1;
  std::string cmdline = "console=ttyS0 skiff.action=halt";
  std::string qemu_cpu = "host,-arch-capabilities";
  std::vector<std::string> skiff_args;
  std::vector<std::string> qemu_args;
  double timeout_s = 60;
  unsigned settle_ms = 200;
  unsigned top_mappings = 8;
  std::string json_path;
  std::string keep_logs;
};

int64_t monotonic_ns() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

double ns_to_ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }
double kib_to_mib(uint64_t kib) { return static_cast<double>(kib) / 1024.0; }

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string errno_text(std::string_view what) { return fmt::format("{}: {}", what, std::strerror(errno)); }

// Finds a program the way execvp would, but before fork, so that the child only calls
// async-signal-safe functions and a missing program is reported by name.
std::expected<std::string, std::string> resolve_program(const std::string& name) {
  auto executable = [](const std::string& path) {
    struct stat info{};
    return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode) && access(path.c_str(), X_OK) == 0;
  };
  if (name.find('/') != std::string::npos) {
    if (executable(name)) return name;
    return std::unexpected(fmt::format("{}: not an executable file", name));
  }
  const char* path_env = std::getenv("PATH");
  std::string_view dirs = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    size_t colon = dirs.find(':');
    std::string dir(dirs.substr(0, colon));
    std::string candidate = fmt::format("{}/{}", dir.empty() ? "." : dir, name);
    if (executable(candidate)) return candidate;
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return std::unexpected(fmt::format("{}: not found in PATH", name));
}

// Shared with the child across fork: the child stamps the clock right before execve,
// and records execve's errno if it fails.
struct ExecStamp {
  std::atomic<int64_t> before_exec_ns{0};
  std::atomic<int> exec_errno{0};
};
static_assert(std::atomic<int64_t>::is_always_lock_free);

// A VMM (or any program) started with stdin on /dev/null, stdout on a pipe we read and
// stderr in a memfd we read when something goes wrong.
class Child {
 public:
  static std::expected<Child, std::string> spawn(const std::string& program, const std::vector<std::string>& argv) {
    Child child;
    // SAFETY: a fresh shared anonymous page, unmapped in the destructor; it holds only
    // lock-free atomics, which are valid in both processes after fork.
    void* page = mmap(nullptr, sizeof(ExecStamp), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return std::unexpected(errno_text("mmap of the exec time stamp"));
    child.stamp_ = new (page) ExecStamp;

    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) return std::unexpected(errno_text("pipe2"));
    child.stdout_ = UniqueFd(pipe_fds[0]);
    UniqueFd stdout_write(pipe_fds[1]);
    child.stderr_ = UniqueFd(memfd_create("skiff-bench-stderr", MFD_CLOEXEC));
    if (child.stderr_.get() < 0) return std::unexpected(errno_text("memfd_create"));
    UniqueFd null_input(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (null_input.get() < 0) return std::unexpected(errno_text("open /dev/null"));

    std::vector<char*> raw_argv;
    for (const std::string& arg : argv) raw_argv.push_back(const_cast<char*>(arg.c_str()));
    raw_argv.push_back(nullptr);

    child.before_fork_ns_ = monotonic_ns();
    pid_t pid = fork();
    if (pid < 0) return std::unexpected(errno_text("fork"));
    if (pid == 0) {
      // Only async-signal-safe calls from here to execve.
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // no VM outlives an interrupted benchmark
      if (dup2(null_input.get(), STDIN_FILENO) < 0 || dup2(stdout_write.get(), STDOUT_FILENO) < 0 ||
          dup2(child.stderr_.get(), STDERR_FILENO) < 0) {
        child.stamp_->exec_errno.store(errno);
        _exit(127);
      }
      timespec now{};
      clock_gettime(CLOCK_MONOTONIC, &now);
      child.stamp_->before_exec_ns.store(int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec);
      execve(program.c_str(), raw_argv.data(), environ);
      child.stamp_->exec_errno.store(errno);
      _exit(127);
    }
    child.pid_ = pid;
    return child;
  }

  Child() = default;
  Child(Child&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)),
        stdout_(std::move(other.stdout_)),
        stderr_(std::move(other.stderr_)),
        stamp_(std::exchange(other.stamp_, nullptr)),
        before_fork_ns_(other.before_fork_ns_) {}
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    kill_and_reap();
    if (stamp_ != nullptr) munmap(stamp_, sizeof(ExecStamp));
  }

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return stdout_.get(); }
  int64_t before_fork_ns() const { return before_fork_ns_; }
  int64_t before_exec_ns() const { return stamp_->before_exec_ns.load(); }
  int exec_errno() const { return stamp_->exec_errno.load(); }

  // True while the child has not exited; records how it ended once it has.
  bool alive() {
    if (pid_ < 0) return false;
    int status = 0;
    pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == 0) return true;
    if (done == pid_) record_exit(status);
    pid_ = -1;
    return false;
  }

  void kill_and_reap() {
    if (pid_ < 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  // Waits until `deadline_ns` for the child to exit by itself; the time its exit was seen
  // (polled every 50 µs: fine enough for millisecond figures, cheap for a 2-CPU host).
  std::optional<int64_t> wait_exit(int64_t deadline_ns) {
    while (alive()) {
      if (monotonic_ns() >= deadline_ns) return std::nullopt;
      usleep(50);
    }
    return monotonic_ns();
  }

  // Waits up to `timeout_ns` for the child to exit by itself, then kills it.
  void wait_or_kill(int64_t timeout_ns) {
    int64_t deadline = monotonic_ns() + timeout_ns;
    while (alive() && monotonic_ns() < deadline) usleep(1000);
    kill_and_reap();
  }

  const std::string& exit_description() const { return exit_description_; }

  std::string stderr_text() const {
    std::string text;
    char buffer[4096];
    off_t offset = 0;
    while (true) {
      ssize_t n = pread(stderr_.get(), buffer, sizeof buffer, offset);
      if (n <= 0) break;
      text.append(buffer, static_cast<size_t>(n));
      offset += n;
    }
    return text;
  }

 private:
  void record_exit(int status) {
    if (WIFEXITED(status)) {
      exit_description_ = fmt::format("exited with status {}", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
      exit_description_ = fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
    }
  }

  pid_t pid_ = -1;
  UniqueFd stdout_;
  UniqueFd stderr_;
  ExecStamp* stamp_ = nullptr;
  int64_t before_fork_ns_ = 0;
  std::string exit_description_;
};

std::string tail(const std::string& text, size_t bytes) {
  if (text.size() <= bytes) return text;
  size_t start = text.size() - bytes;
  size_t newline = text.find('\n', start);
  return "..." + text.substr(newline == std::string::npos ? start : newline);
}

// Runs a short command (`skiff version`, `qemu --version`) and returns its first line.
std::string first_output_line(const std::string& program, const std::vector<std::string>& argv) {
  auto child = Child::spawn(program, argv);
  if (!child) return "?";
  std::string output;
  int64_t deadline = monotonic_ns() + 10'000'000'000;
  while (monotonic_ns() < deadline && output.find('\n') == std::string::npos) {
    pollfd poll_fd{child->stdout_fd(), POLLIN, 0};
    if (poll(&poll_fd, 1, 100) <= 0) continue;
    char buffer[512];
    ssize_t n = read(child->stdout_fd(), buffer, sizeof buffer);
    if (n <= 0) break;
    output.append(buffer, static_cast<size_t>(n));
  }
  child->wait_or_kill(1'000'000'000);
  output = output.substr(0, output.find('\n'));
  return output.empty() ? "?" : output;
}

struct Vmm {
  std::string key;    // "skiff", "qemu"
  std::string label;  // "skiff", "QEMU"
  std::string program;
  std::vector<std::string> argv;
  std::vector<std::string> exit_argv;  // the same VM, its guest ending with the debug-exit port
  std::string version;
};

// One name of a process's memory map and what it holds, for the "where does the memory
// go" listing: all mappings of one file are summed, as are all anonymous ones.
struct MappingGroup {
  std::string name;
  size_t count = 0;
  uint64_t rss_kib = 0;
  uint64_t pss_kib = 0;
};

struct RunResult {
  bool ok = false;
  std::string error;
  double fork_to_exec_ms = 0;    // parent before fork → child right before execve
  double first_output_ms = 0;    // child right before execve → first byte on stdout
  double guest_halted_ms = 0;    // child right before execve → the guest's halt line
  std::optional<double> process_exit_ms;  // exit run: child right before execve → the VMM reaped
  std::optional<MemoryBreakdown> memory;
  std::string memory_error;
  std::vector<MappingGroup> non_guest_groups;  // largest first
  std::string console;
  std::string stderr_text;
};

std::vector<MappingGroup> group_non_guest(const std::vector<Mapping>& mappings, const MemoryBreakdown& memory) {
  std::map<std::string, MappingGroup> groups;
  for (size_t i = 0; i < mappings.size(); ++i) {
    if (std::find(memory.guest_mappings.begin(), memory.guest_mappings.end(), i) != memory.guest_mappings.end()) {
      continue;
    }
    const Mapping& mapping = mappings[i];
    std::string name = mapping.path.empty() ? "[anonymous]" : mapping.path;
    MappingGroup& group = groups[name];
    group.name = name;
    ++group.count;
    group.rss_kib += mapping.rss_kib;
    group.pss_kib += mapping.pss_kib;
  }
  std::vector<MappingGroup> sorted;
  for (auto& [name, group] : groups) sorted.push_back(group);
  std::sort(sorted.begin(), sorted.end(),
            [](const MappingGroup& a, const MappingGroup& b) { return a.rss_kib > b.rss_kib; });
  return sorted;
}

// One boot: spawn, time the first byte and the halt line, let the VMM settle, read its
// memory map, kill it.
RunResult run_once(const Vmm& vmm, const Options& options) {
  RunResult result;
  auto spawned = Child::spawn(vmm.program, vmm.argv);
  if (!spawned) {
    result.error = spawned.error();
    return result;
  }
  Child& child = *spawned;
  const int64_t timeout_ns = static_cast<int64_t>(options.timeout_s * 1e9);
  const int64_t deadline = child.before_fork_ns() + timeout_ns;
  std::optional<int64_t> first_byte_ns;
  std::optional<int64_t> halted_ns;
  std::optional<size_t> halt_line_at;
  bool eof = false;

  // Reads what is there on stdout, waiting at most until `until_ns`.
  auto pump = [&](int64_t until_ns) {
    int64_t left_ns = until_ns - monotonic_ns();
    if (left_ns <= 0) return;
    pollfd poll_fd{child.stdout_fd(), POLLIN, 0};
    int ready = poll(&poll_fd, 1, static_cast<int>((left_ns + 999'999) / 1'000'000));
    if (ready <= 0) return;
    char buffer[4096];
    ssize_t n = read(child.stdout_fd(), buffer, sizeof buffer);
    int64_t now = monotonic_ns();
    if (n <= 0) {
      if (n == 0 || errno != EINTR) eof = true;
      return;
    }
    if (!first_byte_ns) first_byte_ns = now;
    // The UART has no FIFO: output arrives a few bytes per read, so the halt line and
    // its newline may come in different reads.
    size_t search_from = result.console.size() >= kHaltLine.size() ? result.console.size() - kHaltLine.size() + 1 : 0;
    result.console.append(buffer, static_cast<size_t>(n));
    if (!halt_line_at) {
      size_t at = result.console.find(kHaltLine, search_from);
      if (at != std::string::npos) halt_line_at = at;
    }
    if (halt_line_at && !halted_ns && result.console.find('\n', *halt_line_at) != std::string::npos) halted_ns = now;
  };

  while (!halted_ns && !eof && monotonic_ns() < deadline) pump(deadline);
  if (!halted_ns) {
    bool running = child.alive();
    if (child.exec_errno() != 0) {
      result.error = fmt::format("execve {}: {}", vmm.program, std::strerror(child.exec_errno()));
    } else if (!running || eof) {
      child.wait_or_kill(1'000'000'000);
      result.error = fmt::format("{} before the guest's \"{}\" line ({} bytes of console output)",
                                 child.exit_description().empty() ? "closed its output" : child.exit_description(),
                                 kHaltLine, result.console.size());
    } else {
      result.error = fmt::format("no \"{}\" line within {} s ({} bytes of console output)", kHaltLine,
                                 options.timeout_s, result.console.size());
    }
    child.kill_and_reap();
    result.stderr_text = child.stderr_text();
    return result;
  }

  // The guest is halted; give the VMM time to finish whatever it does after boot
  // (threads parking, lazy allocations) so we measure its steady state.
  const int64_t settle_until = monotonic_ns() + int64_t{options.settle_ms} * 1'000'000;
  while (!eof && monotonic_ns() < settle_until) pump(settle_until);
  if (!child.alive()) {
    result.error = fmt::format("{} after the guest halted, before it could be measured", child.exit_description());
    result.stderr_text = child.stderr_text();
    return result;
  }
  auto mappings = read_smaps(child.pid());
  child.kill_and_reap();
  result.stderr_text = child.stderr_text();
  if (!mappings) {
    result.error = mappings.error();
    return result;
  }
  auto memory = split_guest_memory(*mappings, uint64_t{options.memory_mib} << 20);
  if (memory) {
    result.non_guest_groups = group_non_guest(*mappings, *memory);
    result.memory = std::move(*memory);
  } else {
    result.memory_error = memory.error();
  }

  const int64_t exec_ns = child.before_exec_ns();
  result.fork_to_exec_ms = ns_to_ms(exec_ns - child.before_fork_ns());
  result.first_output_ms = ns_to_ms(*first_byte_ns - exec_ns);
  result.guest_halted_ms = ns_to_ms(*halted_ns - exec_ns);
  result.ok = true;
  return result;
}

// A second process per round: the guest prints its report and writes to the debug-exit port;
// the figure is exec -> the VMM's exit as its parent sees it (waitpid), i.e. what a CI job
// that boot-tests a kernel waits for, teardown included.
std::expected<double, std::string> run_exit_once(const Vmm& vmm, const Options& options) {
  auto spawned = Child::spawn(vmm.program, vmm.exit_argv);
  if (!spawned) return std::unexpected(spawned.error());
  Child& child = *spawned;
  const int64_t deadline = child.before_fork_ns() + static_cast<int64_t>(options.timeout_s * 1e9);
  std::string console;
  // Drain stdout to EOF (the pipe must not fill), then wait for the exit itself: a VMM's
  // stdout closes when its files do, before the kernel has finished tearing it down.
  while (monotonic_ns() < deadline) {
    pollfd poll_fd{child.stdout_fd(), POLLIN, 0};
    int left_ms = static_cast<int>((deadline - monotonic_ns() + 999'999) / 1'000'000);
    if (poll(&poll_fd, 1, std::max(left_ms, 1)) <= 0) continue;
    char buffer[4096];
    ssize_t n = read(child.stdout_fd(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    console.append(buffer, static_cast<size_t>(n));
  }
  auto exited = child.wait_exit(deadline);
  if (child.exec_errno() != 0) {
    return std::unexpected(fmt::format("execve {}: {}", vmm.program, std::strerror(child.exec_errno())));
  }
  if (!exited) return std::unexpected(fmt::format("still running after {} s", options.timeout_s));
  if (console.find(kExitLine) == std::string::npos) {
    return std::unexpected(fmt::format("{} without the guest's \"{}\" line ({} bytes of console output); stderr: {}",
                                       child.exit_description(), kExitLine, console.size(),
                                       tail(child.stderr_text(), kStderrTailBytes)));
  }
  return ns_to_ms(*exited - child.before_exec_ns());
}

struct Metric {
  std::string_view key;
  std::string_view label;
  std::function<std::optional<double>(const RunResult&)> value;
};

const std::vector<Metric>& metrics() {
  static const std::vector<Metric> kMetrics = {
      {"first_output_ms", "exec -> first guest output (ms)", [](const RunResult& r) { return std::optional(r.first_output_ms); }},
      {"guest_halted_ms", "exec -> guest halted (ms)", [](const RunResult& r) { return std::optional(r.guest_halted_ms); }},
      {"process_exit_ms", "exec -> exit, exiting guest (ms)", [](const RunResult& r) { return r.process_exit_ms; }},
      {"rss_beyond_guest_mib", "RSS beyond guest RAM (MiB)",
       [](const RunResult& r) -> std::optional<double> {
         if (!r.memory) return std::nullopt;
         return kib_to_mib(r.memory->rss_beyond_guest_kib());
       }},
      {"pss_beyond_guest_mib", "PSS beyond guest RAM (MiB)",
       [](const RunResult& r) -> std::optional<double> {
         if (!r.memory) return std::nullopt;
         return kib_to_mib(r.memory->pss_beyond_guest_kib());
       }},
      {"rss_total_mib", "RSS total (MiB)",
       [](const RunResult& r) -> std::optional<double> {
         if (!r.memory) return std::nullopt;
         return kib_to_mib(r.memory->rss_total_kib);
       }},
      {"rss_guest_mib", "RSS of guest RAM (MiB)",
       [](const RunResult& r) -> std::optional<double> {
         if (!r.memory) return std::nullopt;
         return kib_to_mib(r.memory->rss_guest_kib);
       }},
      {"shared_library_rss_mib", "shared libraries RSS (MiB)",
       [](const RunResult& r) -> std::optional<double> {
         if (!r.memory) return std::nullopt;
         return kib_to_mib(r.memory->shared_library_rss_kib);
       }},
      {"shared_library_pss_mib", "shared libraries PSS (MiB)",
       [](const RunResult& r) -> std::optional<double> {
         if (!r.memory) return std::nullopt;
         return kib_to_mib(r.memory->shared_library_pss_kib);
       }},
  };
  return kMetrics;
}

struct Stats {
  size_t count = 0;
  double median = NAN;
  double min = NAN;
  double max = NAN;
};

Stats stats_of(const std::vector<RunResult>& runs, const Metric& metric) {
  std::vector<double> values;
  for (const RunResult& run : runs) {
    if (!run.ok) continue;
    if (auto value = metric.value(run)) values.push_back(*value);
  }
  Stats stats;
  stats.count = values.size();
  if (values.empty()) return stats;
  std::sort(values.begin(), values.end());
  size_t middle = values.size() / 2;
  stats.median = values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
  stats.min = values.front();
  stats.max = values.back();
  return stats;
}

std::string number(double value, int precision) {
  return std::isnan(value) ? std::string("-") : fmt::format("{:.{}f}", value, precision);
}

struct VmmRuns {
  Vmm vmm;
  std::vector<RunResult> runs;  // measured runs, warm-up excluded
  std::optional<std::string> failure;
};

struct Verdict {
  std::string name;
  std::optional<bool> pass;  // nullopt: not measurable
  std::string text;
};

std::vector<Verdict> verdicts(const VmmRuns* skiff, const VmmRuns* qemu) {
  std::vector<Verdict> out;
  const Metric& startup = metrics()[0];
  const Metric& overhead = metrics()[3];
  const Metric& exit_metric = metrics()[2];

  // skiff's median time against QEMU's, at most `target` times it.
  auto time_ratio = [&](const std::string& name, const Metric& metric, double target) {
    Verdict verdict{name, std::nullopt, ""};
    if (skiff == nullptr || qemu == nullptr) {
      verdict.text = "needs both skiff and QEMU runs";
      return verdict;
    }
    Stats s = stats_of(skiff->runs, metric);
    Stats q = stats_of(qemu->runs, metric);
    if (s.count == 0 || q.count == 0) {
      verdict.text = fmt::format("no successful {} runs", s.count == 0 ? "skiff" : "QEMU");
      return verdict;
    }
    double limit = q.median * target;
    verdict.pass = s.median <= limit;
    verdict.text = fmt::format("{}: skiff {:.2f} ms vs QEMU {:.2f} ms: ratio {:.3f} (target <= {:.3f}, i.e. <= {:.2f} ms{})",
                               metric.label, s.median, q.median, s.median / q.median, target, limit,
                               *verdict.pass ? "" : fmt::format(", {:.2f} ms over", s.median - limit));
    return verdict;
  };
  out.push_back(time_ratio("startup", startup, kStartupTargetRatio));
  out.push_back(time_ratio("exit", exit_metric, kExitTargetRatio));

  Verdict overhead_verdict{"overhead", std::nullopt, ""};
  if (skiff == nullptr) {
    overhead_verdict.text = "needs skiff runs";
  } else {
    Stats s = stats_of(skiff->runs, overhead);
    if (s.count == 0) {
      overhead_verdict.text = "no skiff run with a measured guest RAM mapping";
    } else {
      overhead_verdict.pass = s.median <= kOverheadTargetMib;
      std::string qemu_text;
      if (qemu != nullptr) {
        if (Stats q = stats_of(qemu->runs, overhead); q.count > 0) qemu_text = fmt::format("; QEMU {:.2f} MiB", q.median);
      }
      overhead_verdict.text = fmt::format(
          "skiff {:.2f} MiB beyond guest RAM (target <= {:.1f} MiB{}{})", s.median, kOverheadTargetMib,
          *overhead_verdict.pass ? "" : fmt::format(", {:.0f} KiB over", (s.median - kOverheadTargetMib) * 1024),
          qemu_text);
    }
  }
  out.push_back(overhead_verdict);
  return out;
}

void print_report(const Options& options, const std::vector<VmmRuns>& all, const std::string& host) {
  fmt::print("skiff start-up and memory benchmark: {} run{} per VMM (+{} warm-up), alternating; "
             "guest {} MiB, {} vCPU{}\n",
             options.runs, options.runs == 1 ? "" : "s", options.warmup, options.memory_mib, options.vcpus,
             options.vcpus == 1 ? "" : "s");
  fmt::print("  guest: {} (cmdline \"{}\")\n", options.guest, options.cmdline);
  for (const VmmRuns& v : all) fmt::print("  {:<6} {} ({})\n", v.vmm.label + ":", v.vmm.program, v.vmm.version);
  fmt::print("  host:  {}\n\n", host);

  constexpr int kLabelWidth = 34;
  fmt::print("{:<{}}", "", kLabelWidth);
  for (const VmmRuns& v : all) {
    fmt::print("  {:^26}", fmt::format("{} (n={})", v.vmm.label, stats_of(v.runs, metrics()[0]).count));
  }
  if (all.size() == 2) fmt::print("  {:>11}", fmt::format("{}/{}", all[0].vmm.label, all[1].vmm.label));
  fmt::print("\n{:<{}}", "", kLabelWidth);
  for (size_t i = 0; i < all.size(); ++i) fmt::print("  {:>8} {:>8} {:>8}", "median", "min", "max");
  if (all.size() == 2) fmt::print("  {:>11}", "(medians)");
  fmt::print("\n");
  for (const Metric& metric : metrics()) {
    fmt::print("{:<{}}", metric.label, kLabelWidth);
    std::vector<Stats> row;
    for (const VmmRuns& v : all) {
      Stats s = stats_of(v.runs, metric);
      row.push_back(s);
      fmt::print("  {:>8} {:>8} {:>8}", number(s.median, 2), number(s.min, 2), number(s.max, 2));
    }
    if (row.size() == 2) {
      double ratio = row[1].median > 0 ? row[0].median / row[1].median : NAN;
      fmt::print("  {:>11}", number(ratio, 3));
    }
    fmt::print("\n");
  }

  if (options.top_mappings > 0) {
    for (const VmmRuns& v : all) {
      auto last = std::find_if(v.runs.rbegin(), v.runs.rend(), [](const RunResult& r) { return r.memory.has_value(); });
      if (last == v.runs.rend()) continue;
      fmt::print("\n{}: guest RAM = {}; largest other memory (last run, by mapping name):\n", v.vmm.label,
                 last->memory->guest_method);
      fmt::print("  {:>9} {:>9} {:>4}  {}\n", "Rss KiB", "Pss KiB", "maps", "name");
      for (size_t i = 0; i < last->non_guest_groups.size() && i < options.top_mappings; ++i) {
        const MappingGroup& group = last->non_guest_groups[i];
        fmt::print("  {:>9} {:>9} {:>4}  {}\n", group.rss_kib, group.pss_kib, group.count, group.name);
      }
    }
  }

  const VmmRuns* skiff = nullptr;
  const VmmRuns* qemu = nullptr;
  for (const VmmRuns& v : all) (v.vmm.key == "skiff" ? skiff : qemu) = &v;
  fmt::print("\n");
  for (const Verdict& verdict : verdicts(skiff, qemu)) {
    fmt::print("{:<9} {:<4}  {}\n", verdict.name, verdict.pass ? (*verdict.pass ? "PASS" : "MISS") : "n/a",
               verdict.text);
  }
  for (const VmmRuns& v : all) {
    if (v.failure) fmt::print("FAILED    {}: {}\n", v.vmm.label, *v.failure);
  }
}

nlohmann::json to_json(const Options& options, const std::vector<VmmRuns>& all, const std::string& host,
                       const std::string& date) {
  nlohmann::json out;
  out["date"] = date;
  out["host"] = host;
  out["config"] = {{"runs", options.runs},       {"warmup", options.warmup},     {"memory_mib", options.memory_mib},
                   {"vcpus", options.vcpus},     {"cmdline", options.cmdline},   {"guest", options.guest},
                   {"settle_ms", options.settle_ms}, {"timeout_s", options.timeout_s}};
  out["timing_origin"] = "CLOCK_MONOTONIC in the child right before execve";
  for (const VmmRuns& v : all) {
    nlohmann::json vmm;
    vmm["program"] = v.vmm.program;
    vmm["version"] = v.vmm.version;
    vmm["argv"] = v.vmm.argv;
    if (v.failure) vmm["failure"] = *v.failure;
    for (const Metric& metric : metrics()) {
      Stats s = stats_of(v.runs, metric);
      if (s.count == 0) continue;
      vmm["summary"][std::string(metric.key)] = {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"n", s.count}};
    }
    vmm["runs"] = nlohmann::json::array();
    for (const RunResult& run : v.runs) {
      nlohmann::json r;
      r["ok"] = run.ok;
      if (!run.ok) {
        r["error"] = run.error;
      } else {
        r["fork_to_exec_ms"] = run.fork_to_exec_ms;
        r["first_output_ms"] = run.first_output_ms;
        r["guest_halted_ms"] = run.guest_halted_ms;
        if (run.process_exit_ms) r["process_exit_ms"] = *run.process_exit_ms;
        if (run.memory) {
          const MemoryBreakdown& m = *run.memory;
          r["memory_kib"] = {{"rss_total", m.rss_total_kib},
                             {"pss_total", m.pss_total_kib},
                             {"rss_guest", m.rss_guest_kib},
                             {"pss_guest", m.pss_guest_kib},
                             {"rss_beyond_guest", m.rss_beyond_guest_kib()},
                             {"pss_beyond_guest", m.pss_beyond_guest_kib()},
                             {"shared_library_rss", m.shared_library_rss_kib},
                             {"shared_library_pss", m.shared_library_pss_kib},
                             {"swap", m.swap_kib}};
          r["guest_method"] = m.guest_method;
        } else {
          r["memory_error"] = run.memory_error;
        }
      }
      vmm["runs"].push_back(r);
    }
    auto last = std::find_if(v.runs.rbegin(), v.runs.rend(), [](const RunResult& r) { return r.memory.has_value(); });
    if (last != v.runs.rend()) {
      vmm["last_run_non_guest_mappings"] = nlohmann::json::array();
      for (const MappingGroup& group : last->non_guest_groups) {
        vmm["last_run_non_guest_mappings"].push_back(
            {{"name", group.name}, {"count", group.count}, {"rss_kib", group.rss_kib}, {"pss_kib", group.pss_kib}});
      }
    }
    out["vmms"][v.vmm.key] = vmm;
  }
  const VmmRuns* skiff = nullptr;
  const VmmRuns* qemu = nullptr;
  for (const VmmRuns& v : all) (v.vmm.key == "skiff" ? skiff : qemu) = &v;
  for (const Verdict& verdict : verdicts(skiff, qemu)) {
    out["verdicts"][verdict.name] = {
        {"result", verdict.pass ? (*verdict.pass ? "PASS" : "MISS") : "n/a"}, {"detail", verdict.text}};
  }
  return out;
}

std::string describe_host() {
  utsname names{};
  uname(&names);
  std::string cpu = "?";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.starts_with("model name")) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  return fmt::format("{} {} {}, {}, {} CPUs online", names.sysname, names.release, names.machine, cpu,
                     sysconf(_SC_NPROCESSORS_ONLN));
}

std::string utc_now() {
  time_t now = time(nullptr);
  tm parts{};
  gmtime_r(&now, &parts);
  char text[32];
  strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

void keep_log(const Options& options, const Vmm& vmm, const std::string& run_name, const RunResult& result) {
  if (options.keep_logs.empty()) return;
  std::string base = fmt::format("{}/{}-{}", options.keep_logs, vmm.key, run_name);
  std::ofstream(base + ".out") << result.console;
  std::ofstream(base + ".err") << result.stderr_text;
}

// The halt runs' command line with the guest told to exit at once instead: skiff.quick=1
// skips its report, so the run is the VMM's start-up, one line of output and its exit.
std::string exit_cmdline(const std::string& cmdline) {
  std::string out = cmdline;
  if (size_t at = out.find("skiff.action=halt"); at != std::string::npos) {
    out.replace(at, std::string_view("skiff.action=halt").size(), "skiff.action=exit");
  } else {
    out += " skiff.action=exit";
  }
  return out + " skiff.quick=1";
}

int run(const Options& options) {
  std::vector<VmmRuns> all;
  const std::string memory = fmt::format("{}M", options.memory_mib);
  const std::string vcpus = std::to_string(options.vcpus);
  if (options.only != "qemu") {
    auto program = resolve_program(options.skiff);
    if (!program) {
      fmt::print(stderr, "skiff_bench_startup: --skiff: {}\n", program.error());
      return 1;
    }
    Vmm vmm{"skiff", "skiff", *program, {}, {}, ""};
    vmm.argv = {*program, "run", "--kernel", options.guest, "--memory", memory, "--vcpus", vcpus, "--cmdline", options.cmdline};
    vmm.argv.insert(vmm.argv.end(), options.skiff_args.begin(), options.skiff_args.end());
    vmm.exit_argv = vmm.argv;
    for (std::string& arg : vmm.exit_argv) {
      if (arg == options.cmdline) arg = exit_cmdline(options.cmdline);
    }
    vmm.version = first_output_line(*program, {*program, "version"});
    all.push_back({std::move(vmm), {}, std::nullopt});
  }
  if (options.only != "skiff") {
    auto program = resolve_program(options.qemu);
    if (!program) {
      fmt::print(stderr, "skiff_bench_startup: --qemu: {}\n", program.error());
      return 1;
    }
    Vmm vmm{"qemu", "QEMU", *program, {}, {}, ""};
    // The same machine as skiff's: microvm without option ROMs or RTC, one COM1 16550 on
    // stdout, no default devices, the guest's PVH entry through -kernel.
    vmm.argv = {*program,
                "-M", "microvm,x-option-roms=off,rtc=off,isa-serial=on",
                "-accel", "kvm",
                "-cpu", options.qemu_cpu,
                "-m", memory,
                "-smp", vcpus,
                "-nodefaults", "-no-user-config", "-nographic",
                "-serial", "stdio",
                "-no-reboot",
                "-kernel", options.guest,
                "-append", options.cmdline};
    vmm.argv.insert(vmm.argv.end(), options.qemu_args.begin(), options.qemu_args.end());
    vmm.exit_argv = vmm.argv;
    for (std::string& arg : vmm.exit_argv) {
      if (arg == options.cmdline) arg = exit_cmdline(options.cmdline);
    }
    // The guest's exit port (skiff has it built in); QEMU exits with (value << 1) | 1.
    vmm.exit_argv.insert(vmm.exit_argv.end(), {"-device", "isa-debug-exit,iobase=0xf4,iosize=4"});
    vmm.version = first_output_line(*program, {*program, "--version"});
    all.push_back({std::move(vmm), {}, std::nullopt});
  }
  const std::string host = describe_host();
  const std::string date = utc_now();

  // Alternate the VMMs so that drift on the host (other load, CPU frequency, page cache)
  // affects both alike. Warm-up runs fill the page cache and are not counted.
  for (unsigned round = 0; round < options.warmup + options.runs; ++round) {
    bool warmup = round < options.warmup;
    for (VmmRuns& v : all) {
      if (v.failure) continue;
      RunResult result = run_once(v.vmm, options);
      std::string run_name = warmup ? fmt::format("warmup{}", round + 1) : fmt::format("{}", round - options.warmup + 1);
      keep_log(options, v.vmm, run_name, result);
      std::string progress = fmt::format("{} run {}/{}", v.vmm.label, round - options.warmup + 1, options.runs);
      if (warmup) progress = fmt::format("{} warm-up {}/{}", v.vmm.label, round + 1, options.warmup);
      if (!result.ok) {
        v.failure = fmt::format("{}: {}", progress, result.error);
        fmt::print(stderr, "{}: FAILED: {}\n  command: {}\n", progress, result.error, fmt::join(v.vmm.argv, " "));
        if (!result.stderr_text.empty()) {
          fmt::print(stderr, "  its stderr:\n{}\n", tail(result.stderr_text, kStderrTailBytes));
        }
        continue;
      }
      // The guest may open with a line break (to end a line firmware left open); after
      // that the first bytes must be its own, not something the VMM printed on stdout.
      std::string_view console = result.console;
      console.remove_prefix(std::min(console.find_first_not_of("\r\n"), console.size()));
      if (!console.starts_with(kGuestLinePrefix)) {
        fmt::print(stderr, "{}: warning: the first console bytes are not guest output: \"{}\"\n", progress,
                   console.substr(0, std::min<size_t>(console.find('\n'), 60)));
      }
      std::string memory_text = result.memory ? fmt::format("{:.2f} MiB", kib_to_mib(result.memory->rss_beyond_guest_kib()))
                                              : fmt::format("? ({})", result.memory_error);
      auto exited = run_exit_once(v.vmm, options);
      if (!exited) {
        v.failure = fmt::format("{} (exiting guest): {}", progress, exited.error());
        fmt::print(stderr, "{} (exiting guest): FAILED: {}\n  command: {}\n", progress, exited.error(),
                   fmt::join(v.vmm.exit_argv, " "));
        continue;
      }
      result.process_exit_ms = *exited;
      fmt::print(stderr, "{}: first output {:.2f} ms, guest halted {:.2f} ms, RSS beyond guest {}; exiting guest: "
                 "exec -> exit {:.2f} ms\n", progress, result.first_output_ms, result.guest_halted_ms, memory_text,
                 *exited);
      if (!warmup) v.runs.push_back(std::move(result));
    }
  }

  print_report(options, all, host);
  if (!options.json_path.empty()) {
    std::ofstream json(options.json_path);
    json << to_json(options, all, host, date).dump(2) << "\n";
    if (!json) {
      fmt::print(stderr, "skiff_bench_startup: {}: write failed\n", options.json_path);
      return 1;
    }
  }
  bool failed = std::any_of(all.begin(), all.end(), [](const VmmRuns& v) { return v.failure.has_value(); });
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace skiff::bench

int main(int argc, char** argv) {
  using skiff::bench::Options;
  Options options;
  CLI::App app{
      "skiff start-up and memory benchmark: time from exec to the first guest output and RSS beyond guest "
      "RAM, skiff beside qemu-system-x86_64 -M microvm booting the same PVH guest",
      "skiff_bench_startup"};
  app.add_option("--skiff", options.skiff, "the skiff binary")->capture_default_str();
  app.add_option("--qemu", options.qemu, "the QEMU binary")->capture_default_str();
  app.add_option("--guest", options.guest, "PVH ELF guest that prints 'SKIFF-GUEST action=halt' (tests/guest)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--only", options.only, "run only one VMM")
      ->check(CLI::IsMember({"both", "skiff", "qemu"}))
      ->capture_default_str();
  app.add_option("--runs", options.runs, "measured runs per VMM")->check(CLI::Range(1u, 1000u))->capture_default_str();
  app.add_option("--warmup", options.warmup, "unmeasured runs per VMM first")->capture_default_str();
  app.add_option("--memory-mib", options.memory_mib, "guest RAM in MiB")->check(CLI::Range(16u, 65536u))->capture_default_str();
  app.add_option("--vcpus", options.vcpus, "vCPUs")->check(CLI::Range(1u, 256u))->capture_default_str();
  app.add_option("--cmdline", options.cmdline, "guest command line; must make the guest halt")->capture_default_str();
  app.add_option("--qemu-cpu", options.qemu_cpu,
                 "QEMU -cpu model ('host' alone aborts where KVM refuses MSR 0x10a)")
      ->capture_default_str();
  app.add_option("--skiff-arg", options.skiff_args, "extra argument for 'skiff run' (repeatable)");
  app.add_option("--qemu-arg", options.qemu_args, "extra argument for QEMU (repeatable)");
  app.add_option("--timeout", options.timeout_s, "seconds a run may take to reach the halt line")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--settle-ms", options.settle_ms, "wait after the halt line before reading smaps")
      ->capture_default_str();
  app.add_option("--top-mappings", options.top_mappings, "list this many largest non-guest mappings per VMM")
      ->capture_default_str();
  app.add_option("--json", options.json_path, "also write the results as JSON to this file");
  app.add_option("--keep-logs", options.keep_logs, "directory for each run's console output and stderr")
      ->check(CLI::ExistingDirectory);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  return skiff::bench::run(options);
}
