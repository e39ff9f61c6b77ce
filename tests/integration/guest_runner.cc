// SPDX-License-Identifier: Apache-2.0
#include "guest_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "memory/guest_memory.h"
#include "skiff/vm.h"

extern char** environ;

namespace skiff::test {

VmOptions test_vm_options() {
  VmOptions options;
  if (const char* mode = std::getenv("SKIFF_SECCOMP"); mode != nullptr) {
    const std::string_view text(mode);
    if (text == "off") options.seccomp = SeccompMode::off;
    if (text == "log") options.seccomp = SeccompMode::log;
  }
  return options;
}

std::optional<std::string> kvm_unavailable_reason() {
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return std::string("/dev/kvm: ") + std::strerror(errno);
  ::close(fd);
  return std::nullopt;
}

std::optional<std::string> GuestReport::value(const std::string& key) const {
  for (const std::string& line : lines) {
    std::istringstream words(line);
    std::string word;
    while (words >> word) {
      if (word.rfind(key + "=", 0) == 0) return word.substr(key.size() + 1);
    }
  }
  return std::nullopt;
}

std::vector<std::string> GuestReport::lines_starting(const std::string& prefix) const {
  std::vector<std::string> out;
  for (const std::string& line : lines) {
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
  }
  return out;
}

GuestReport parse_report(const std::string& console) {
  GuestReport report;
  report.console = console;
  std::istringstream in(console);
  std::string line;
  const std::string prefix = "SKIFF-GUEST ";
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto at = line.find(prefix);
    if (at != std::string::npos) report.lines.push_back(line.substr(at + prefix.size()));
  }
  return report;
}

VmSpec guest_spec(const std::string& kernel, const std::string& cmdline, uint32_t vcpus,
                  uint64_t memory_mib) {
  VmSpec spec;
  spec.name = "tier2";
  spec.machine.vcpus = vcpus;
  spec.machine.memory_mib = memory_mib;
  spec.boot.kernel = kernel;
  spec.boot.cmdline = cmdline;
  spec.serial.mode = SerialMode::kNone;
  spec.serial.input = false;
  return spec;
}

GuestRun run_guest(const VmSpec& spec, std::chrono::seconds timeout) {
  auto console = std::make_shared<std::string>();
  auto console_mutex = std::make_shared<std::mutex>();
  VmOptions options = test_vm_options();
  options.console_output = [console, console_mutex](std::span<const uint8_t> bytes) {
    std::lock_guard lock(*console_mutex);
    console->append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  };
  GuestRun run;
  auto vm = Vm::create(spec, options);
  if (!vm) {
    run.exit = VmExit{StopReason::kVmmError, exit_code_for(vm.error()), vm.error().message()};
    return run;
  }
  if (auto started = (*vm)->start(); !started) {
    run.exit = VmExit{StopReason::kVmmError, exit_code_for(started.error()), started.error().message()};
    return run;
  }
  auto exit = (*vm)->wait_for(timeout);
  if (!exit) {
    run.timed_out = true;
    (*vm)->request_stop(VmExit{StopReason::kStopRequested, kExitStopped, "test timeout"});
    exit = (*vm)->wait();
  }
  run.exit = *exit;
  std::lock_guard lock(*console_mutex);
  run.report = parse_report(*console);
  return run;
}

std::map<std::string, std::string> report_fields(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream words(line);
  std::string word;
  while (words >> word) {
    auto eq = word.find('=');
    if (eq != std::string::npos) out[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return out;
}

uint64_t field_u64(const std::map<std::string, std::string>& fields, const std::string& key) {
  auto it = fields.find(key);
  if (it == fields.end()) return 0;
  return std::strtoull(it->second.c_str(), nullptr, 0);
}

LiveGuest::LiveGuest(const VmSpec& spec) {
  VmOptions options = test_vm_options();
  options.console_output = [this](std::span<const uint8_t> bytes) { on_output(bytes); };
  auto vm = Vm::create(spec, options);
  if (!vm) {
    error_ = vm.error().message();
    return;
  }
  vm_ = std::move(*vm);
  if (auto started = vm_->start(); !started) error_ = started.error().message();
}

LiveGuest::~LiveGuest() {
  if (vm_) stop();
}

void LiveGuest::on_output(std::span<const uint8_t> bytes) {
  {
    std::lock_guard lock(mutex_);
    console_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  changed_.notify_all();
}

std::optional<std::string> LiveGuest::next_line(const std::string& prefix, std::chrono::milliseconds timeout) {
  const std::string marker = "SKIFF-GUEST ";
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mutex_);
  for (;;) {
    // Whole lines only: a line still being printed is looked at once it is complete.
    size_t end;
    while ((end = console_.find('\n', consumed_)) != std::string::npos) {
      std::string line = console_.substr(consumed_, end - consumed_);
      consumed_ = end + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      auto at = line.find(marker);
      if (at == std::string::npos) continue;
      line = line.substr(at + marker.size());
      if (line.starts_with(prefix)) return line;
    }
    if (exit_) return std::nullopt;  // stopped before this scan: nothing more will come
    if (vm_) {
      lock.unlock();
      auto exit = vm_->wait_for(std::chrono::milliseconds(0));
      lock.lock();
      if (exit) {
        exit_ = exit;
        continue;  // one more scan for what the guest printed last
      }
    }
    if (changed_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(100))) ==
            std::cv_status::timeout &&
        std::chrono::steady_clock::now() >= deadline) {
      return std::nullopt;
    }
  }
}

std::string LiveGuest::console() const {
  std::lock_guard lock(mutex_);
  return console_;
}

std::optional<VmExit> LiveGuest::wait(std::chrono::milliseconds timeout) { return vm_->wait_for(timeout); }

VmExit LiveGuest::stop() {
  vm_->request_stop(VmExit{StopReason::kStopRequested, kExitStopped, "stopped by the test"});
  return vm_->wait();
}

HugepageReservation::HugepageReservation(uint64_t pages) {
  auto pool = read_hugepage_pool(2 << 20);
  if (!pool) return;
  original_ = pool->total;
  std::ofstream("/proc/sys/vm/nr_hugepages") << (pool->total + pages);
  auto after = read_hugepage_pool(2 << 20);
  ok_ = after && after->available() >= pages;
}

HugepageReservation::~HugepageReservation() {
  if (original_) std::ofstream("/proc/sys/vm/nr_hugepages") << *original_;
}

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}
}  // namespace

CliRun run_cli(const std::vector<std::string>& args, std::chrono::seconds timeout,
               std::optional<std::chrono::milliseconds> sigterm_after,
               const std::function<void(pid_t)>& while_running) {
  CliRun result;
  char out_path[] = "/tmp/skiff-cli-out-XXXXXX";
  char err_path[] = "/tmp/skiff-cli-err-XXXXXX";
  int out_fd = mkstemp(out_path);
  int err_fd = mkstemp(err_path);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  std::vector<std::string> argv_strings = {SKIFF_CLI_PATH};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int spawn_error = posix_spawn(&pid, SKIFF_CLI_PATH, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out_fd);
  close(err_fd);
  if (spawn_error != 0) {
    result.err = std::string("posix_spawn: ") + std::strerror(spawn_error);
    return result;
  }
  if (while_running) while_running(pid);
  auto start = std::chrono::steady_clock::now();
  bool sent_term = false;
  int status = 0;
  while (true) {
    pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    auto elapsed = std::chrono::steady_clock::now() - start;
    if (sigterm_after && !sent_term && elapsed >= *sigterm_after) {
      kill(pid, SIGTERM);
      sent_term = true;
    }
    if (elapsed >= timeout) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  unlink(out_path);
  unlink(err_path);
  return result;
}

TempFile::TempFile(const std::vector<uint8_t>& bytes, const std::string& suffix) {
  std::string pattern = "/tmp/skiff-test-XXXXXX" + suffix;
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  int fd = mkstemps(name.data(), static_cast<int>(suffix.size()));
  path_ = name.data();
  size_t done = 0;
  while (fd >= 0 && done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  if (fd >= 0) ::close(fd);
}

TempFile::TempFile(const std::string& text, const std::string& suffix)
    : TempFile(std::vector<uint8_t>(text.begin(), text.end()), suffix) {}

TempFile::~TempFile() { unlink(path_.c_str()); }

uint64_t fnv1a(const uint8_t* data, size_t size) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    hash ^= data[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

}  // namespace skiff::test
