// SPDX-License-Identifier: Apache-2.0
// Child processes, marker timing and the /proc profile shared by the device benchmarks
// (bench_process.h).
#include "bench_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

extern char** environ;

namespace skiff::bench {

int64_t monotonic_ns() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

std::string errno_text(std::string_view what) { return fmt::format("{}: {}", what, std::strerror(errno)); }


// As execvp would find it, but before fork, so a missing program is reported by name.
std::expected<std::string, std::string> resolve_program(const std::string& name) {
  auto executable = [](const std::string& path) {
    struct stat info {};
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


std::string tail(const std::string& text, size_t bytes) {
  if (text.size() <= bytes) return text;
  return "..." + text.substr(text.size() - bytes);
}

// Runs a command to its end (fio, `--version`), returning stdout; empty on failure.
std::expected<std::string, std::string> capture(const std::string& program, const std::vector<std::string>& argv,
                                                double timeout_s) {
  auto child = Child::spawn(program, argv);
  if (!child) return std::unexpected(child.error());
  std::string output;
  int64_t deadline = monotonic_ns() + static_cast<int64_t>(timeout_s * 1e9);
  while (monotonic_ns() < deadline) {
    pollfd poll_fd{child->stdout_fd(), POLLIN, 0};
    if (poll(&poll_fd, 1, 100) <= 0) continue;
    char buffer[4096];
    ssize_t n = read(child->stdout_fd(), buffer, sizeof buffer);
    if (n <= 0) break;
    output.append(buffer, static_cast<size_t>(n));
  }
  child->wait_or_kill(2'000'000'000);
  if (child->exit_status() != 0) {
    return std::unexpected(fmt::format("{} failed ({}): {}", program,
                                       child->exit_status() ? fmt::format("status {}", *child->exit_status())
                                                            : std::string("killed or timed out"),
                                       tail(child->stderr_text(), 400)));
  }
  return output;
}

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "?" : line;
}


std::map<std::string, std::string> fields_of(std::string_view line) {
  std::map<std::string, std::string> out;
  std::istringstream words{std::string(line)};
  std::string word;
  while (words >> word) {
    auto eq = word.find('=');
    if (eq != std::string::npos) out[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return out;
}

uint64_t field_u64(const std::map<std::string, std::string>& fields, const std::string& key) {
  auto it = fields.find(key);
  return it == fields.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 10);
}


// Summed by thread name (comm; io_uring's workers are "iou-wrk-<tid>", folded to "iou-wrk").
std::map<std::string, ThreadStat> thread_stats(pid_t pid) {
  std::map<std::string, ThreadStat> out;
  std::error_code ignored;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (const auto& entry : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ignored)) {
    std::string dir = entry.path().string();
    std::string comm;
    std::getline(std::ifstream(dir + "/comm"), comm);
    if (comm.starts_with("iou-wrk")) comm = "iou-wrk";
    if (comm.starts_with("iou-sqp")) comm = "iou-sqp";
    std::string stat;
    std::getline(std::ifstream(dir + "/stat"), stat);
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 2));
    std::vector<std::string> f;
    for (std::string word; rest >> word;) f.push_back(word);
    if (f.size() < 13) continue;  // fields 3.. of proc(5); utime, stime are fields 14, 15
    ThreadStat& t = out[comm];
    // schedstat's first field is the time on a CPU in nanoseconds; stat's utime and stime are
    // clock ticks (10 ms), too coarse for CPU time per request in a short run.
    std::string schedstat;
    std::getline(std::ifstream(dir + "/schedstat"), schedstat);
    if (!schedstat.empty()) {
      t.cpu_s += static_cast<double>(std::strtoull(schedstat.c_str(), nullptr, 10)) / 1e9;
    } else {
      t.cpu_s += static_cast<double>(std::strtoull(f[11].c_str(), nullptr, 10) +
                                     std::strtoull(f[12].c_str(), nullptr, 10)) / ticks;
    }
    std::ifstream status(dir + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.starts_with("voluntary_ctxt_switches:")) t.voluntary += std::strtoull(line.c_str() + 24, nullptr, 10);
      if (line.starts_with("nonvoluntary_ctxt_switches:")) {
        t.involuntary += std::strtoull(line.c_str() + 27, nullptr, 10);
      }
    }
  }
  return out;
}

std::map<std::string, ThreadStat> stats_delta(const std::map<std::string, ThreadStat>& before,
                                              const std::map<std::string, ThreadStat>& after) {
  std::map<std::string, ThreadStat> out;
  for (const auto& [name, a] : after) {
    ThreadStat d = a;
    if (auto it = before.find(name); it != before.end()) {
      d.cpu_s -= it->second.cpu_s;
      d.voluntary -= std::min(d.voluntary, it->second.voluntary);
      d.involuntary -= std::min(d.involuntary, it->second.involuntary);
    }
    out[name] = d;
  }
  return out;
}


double calibrate_tsc_hz() {
  int64_t t0 = monotonic_ns();
  uint64_t c0 = __rdtsc();
  usleep(200'000);
  int64_t t1 = monotonic_ns();
  uint64_t c1 = __rdtsc();
  return static_cast<double>(c1 - c0) / (static_cast<double>(t1 - t0) / 1e9);
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
  double load = 0;
  std::ifstream("/proc/loadavg") >> load;
  return fmt::format("{} {}, {}, {} CPUs, load {:.1f}", names.sysname, names.release, cpu,
                     sysconf(_SC_NPROCESSORS_ONLN), load);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void UniqueFd::reset() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

namespace {
struct ChildPlacement {
  std::string list;
  cpu_set_t set{};
  unsigned count = 0;
};
ChildPlacement& placement() {
  static ChildPlacement value;
  return value;
}
}  // namespace

std::expected<void, std::string> set_child_cpus(const std::string& list) {
  ChildPlacement next;
  next.list = list;
  CPU_ZERO(&next.set);
  if (!list.empty()) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return std::unexpected(errno_text("sched_getaffinity"));
    size_t at = 0;
    while (at <= list.size()) {
      size_t end = list.find(',', at);
      std::string part = list.substr(at, end == std::string::npos ? std::string::npos : end - at);
      unsigned first = 0;
      unsigned last = 0;
      char extra = 0;
      if (std::sscanf(part.c_str(), "%u-%u%c", &first, &last, &extra) == 2 && first <= last) {
      } else if (std::sscanf(part.c_str(), "%u%c", &first, &extra) == 1) {
        last = first;
      } else {
        return std::unexpected(fmt::format("--cpus {}: \"{}\" is not a CPU number or range (e.g. 1 or 0,2-3)", list, part));
      }
      for (unsigned cpu = first; cpu <= last; ++cpu) {
        if (cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed)) {
          return std::unexpected(fmt::format("--cpus {}: CPU {} is not one this process may run on", list, cpu));
        }
        CPU_SET(cpu, &next.set);
      }
      if (end == std::string::npos) break;
      at = end + 1;
    }
    next.count = static_cast<unsigned>(CPU_COUNT(&next.set));
  }
  placement() = next;
  return {};
}

const std::string& child_cpus() { return placement().list; }
unsigned child_cpu_count() { return placement().count; }

std::expected<Child, std::string> Child::spawn(const std::string& program, const std::vector<std::string>& argv) {
  Child child;
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
  pid_t pid = fork();
  if (pid < 0) return std::unexpected(errno_text("fork"));
  if (pid == 0) {
    // Only async-signal-safe calls from here to execve.
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // no VM outlives an interrupted benchmark
    if (dup2(null_input.get(), STDIN_FILENO) < 0 || dup2(stdout_write.get(), STDOUT_FILENO) < 0 ||
        dup2(child.stderr_.get(), STDERR_FILENO) < 0) {
      _exit(127);
    }
    if (placement().count > 0 && sched_setaffinity(0, sizeof placement().set, &placement().set) != 0) _exit(126);
    execve(program.c_str(), raw_argv.data(), environ);
    _exit(127);
  }
  child.pid_ = pid;
  return child;
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      stdout_(std::move(other.stdout_)),
      stderr_(std::move(other.stderr_)),
      exit_status_(other.exit_status_) {}

bool Child::alive() {
  if (pid_ < 0) return false;
  int status = 0;
  pid_t done = waitpid(pid_, &status, WNOHANG);
  if (done == 0) return true;
  if (done == pid_ && WIFEXITED(status)) exit_status_ = WEXITSTATUS(status);
  pid_ = -1;
  return false;
}

void Child::kill_and_reap() {
  if (pid_ < 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

void Child::wait_or_kill(int64_t timeout_ns) {
  int64_t deadline = monotonic_ns() + timeout_ns;
  while (alive() && monotonic_ns() < deadline) usleep(1000);
  kill_and_reap();
}

std::string Child::stderr_text() const {
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

MarkedRun run_marked(const std::string& program, const std::vector<std::string>& argv, std::string_view start_line,
                     std::string_view end_prefix, double timeout_s, const MarkedRunHooks& hooks) {
  MarkedRun m;
  int64_t spawned_ns = monotonic_ns();
  auto child = Child::spawn(program, argv);
  if (!child) {
    m.error = child.error();
    return m;
  }
  // (offset of the first byte of a chunk, time it was read)
  std::vector<std::pair<size_t, int64_t>> arrivals;
  std::optional<int64_t> start_ns;
  std::map<std::string, ThreadStat> threads_at_start;
  bool end_seen = false;
  int64_t deadline = spawned_ns + static_cast<int64_t>(timeout_s * 1e9);
  bool eof = false;
  while (!eof && monotonic_ns() < deadline) {
    pollfd poll_fd{child->stdout_fd(), POLLIN, 0};
    if (poll(&poll_fd, 1, 50) <= 0) continue;
    char buffer[4096];
    ssize_t n = read(child->stdout_fd(), buffer, sizeof buffer);
    int64_t now = monotonic_ns();
    if (n <= 0) {
      eof = true;
      break;
    }
    arrivals.emplace_back(m.console.size(), now);
    m.console.append(buffer, static_cast<size_t>(n));
    if (!start_ns) {
      if (m.console.find(start_line) != std::string::npos) {
        start_ns = now;  // the chunk that completed the line
        threads_at_start = thread_stats(child->pid());
        if (hooks.on_start) hooks.on_start();
      }
    } else if (!end_seen && m.console.find(end_prefix) != std::string::npos) {
      m.threads = stats_delta(threads_at_start, thread_stats(child->pid()));
      end_seen = true;
      if (hooks.on_end) hooks.on_end();
    }
    if (hooks.on_output) hooks.on_output(m.console);
  }
  child->wait_or_kill(eof ? 5'000'000'000 : 0);
  m.total_run_s = static_cast<double>(monotonic_ns() - spawned_ns) / 1e9;
  m.stderr_text = child->stderr_text();
  if (!eof) {
    m.error = fmt::format("no end of output within {} s", timeout_s);
    return m;
  }
  size_t end_at = start_ns ? m.console.find(end_prefix, m.console.find(start_line)) : std::string::npos;
  if (end_at == std::string::npos) {
    auto error_at = m.console.find("SKIFF-GUEST error");
    m.error = error_at != std::string::npos
                  ? first_line(m.console.substr(error_at))
                  : fmt::format("the guest printed no '{}' / '{}' lines", start_line.substr(0, start_line.size() - 1),
                                end_prefix);
    return m;
  }
  // The chunk holding the end line's first byte.
  int64_t end_ns = arrivals.front().second;
  for (const auto& [offset, at] : arrivals) {
    if (offset <= end_at) end_ns = at;
  }
  m.end_line = first_line(m.console.substr(end_at));
  m.wall_s = static_cast<double>(end_ns - *start_ns) / 1e9;
  return m;
}

}  // namespace skiff::bench
