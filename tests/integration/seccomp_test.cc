// SPDX-License-Identifier: Apache-2.0
// Tier 2: a forbidden system call from one of skiff's own threads kills the VM and names the
// call (docs/security.md, "Modes"). The skiff command runs the test guest with a virtio-blk
// disk on the synchronous engine (skiff.blk=rw: a write, a flush and a read, all through
// pwritev/preadv on the disk's "skiff-vda-q0" worker) while seccomp_shim.c is preloaded: on
// the worker's first pwritev/preadv (or the vCPU's first KVM_RUN) it makes a raw openat or
// socket, which no thread's filter allows, as a device thread taken over by the guest
// would. skiff's production code has no hook for this.
//
//   enforce (default)  the SIGSYS handler writes one line naming the call, its number, the
//                      thread kind and name, and the process dies of SIGSYS;
//   log, off           the call goes through (the shim says so on stderr) and the guest
//                      finishes its test as usual;
//   enforce, no call   the filters let the blk worker and the vCPU do all their real work.
#include <signal.h>
#include <sys/resource.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "guest_runner.h"
#include "skiff/spec.h"

namespace skiff::test {
namespace {

constexpr int kGuestExitCode = 37;  // the guest's skiff.exit: it reached its end
constexpr uint64_t kImageBytes = 1 << 20;
const std::string kDiskId = "vda";
const std::string kBlkThread = "skiff-vda-q0";  // EventLoop "skiff-<disk>-q<queue>"
const std::string kVcpuThread = "skiff-vcpu0";
// What tests/guest/virtio_blk.c prints after skiff.blk=rw went through (README "virtio-blk").
const std::string kRwPassLine =
    "SKIFF-GUEST virtio-blk write-read sector=8 bytes=4096 write-status=0 write-len=1 flush-status=0 "
    "read-status=0 read-len=4097 match=1";
const std::string kReportMarker = "forbidden system call";
const std::string kShimMarker = "skiff-seccomp-shim: ";

// Sets (a value) or removes (nullopt) environment variables for the skiff child that
// run_cli() spawns (it passes this process's environment on) and puts them back afterwards;
// also turns core dumps off for the child, which may die of SIGSYS (a core-dumping signal).
class ChildEnvironment {
 public:
  explicit ChildEnvironment(const std::map<std::string, std::optional<std::string>>& variables) {
    for (const auto& [name, value] : variables) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old == nullptr ? std::nullopt : std::optional<std::string>(old);
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
    if (::getrlimit(RLIMIT_CORE, &core_limit_) == 0) {
      rlimit none = core_limit_;
      none.rlim_cur = 0;
      core_limit_saved_ = ::setrlimit(RLIMIT_CORE, &none) == 0;
    }
  }
  ~ChildEnvironment() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
    if (core_limit_saved_) ::setrlimit(RLIMIT_CORE, &core_limit_);
  }
  ChildEnvironment(const ChildEnvironment&) = delete;
  ChildEnvironment& operator=(const ChildEnvironment&) = delete;

 private:
  std::map<std::string, std::optional<std::string>> saved_;
  rlimit core_limit_{};
  bool core_limit_saved_ = false;
};

std::vector<std::string> lines_containing(const std::string& text, const std::string& needle) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos) out.push_back(line);
  }
  return out;
}

// What the shim asks for: which call, from which thread kind (seccomp_shim.c).
struct Injection {
  std::string call;    // SKIFF_SHIM_FORBIDDEN_CALL; empty: the shim only forwards
  std::string thread;  // SKIFF_SHIM_THREAD: "blk" or "vcpu"
};

class SeccompEnforce : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef SKIFF_TEST_ASAN
    GTEST_SKIP() << "built with AddressSanitizer: ASan refuses a preloaded library ahead of its runtime, "
                    "and the sanitizer stage runs skiff with seccomp off";
#endif
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << "tier-2 tests need /dev/kvm: " << *reason;
    VmSpec spec = guest_spec(SKIFF_TEST_GUEST_ELF,
                             "skiff.virtio=1 skiff.blk=rw skiff.exit=" + std::to_string(kGuestExitCode), 1, 64);
    spec.serial.mode = SerialMode::kStdout;  // the guest's report on the child's stdout
    spec.serial.input = false;
    DiskSpec disk;
    disk.id = kDiskId;
    disk.path = image_.path();
    disk.io_engine = IoEngine::kSync;  // preadv/pwritev on the worker thread, where the shim hooks
    spec.disks.push_back(disk);
    spec_file_.emplace(spec_to_json(spec), ".json");
  }

  // `skiff run <spec> <flags>` with the shim preloaded.
  CliRun run(const Injection& injection, const std::vector<std::string>& flags = {}) const {
    // SKIFF_SECCOMP would stand in for a missing --seccomp: the default must be the default.
    ChildEnvironment environment({{"LD_PRELOAD", SKIFF_SECCOMP_SHIM_PATH},
                                  {"SKIFF_SHIM_FORBIDDEN_CALL", injection.call},
                                  {"SKIFF_SHIM_THREAD", injection.thread},
                                  {"SKIFF_SECCOMP", std::nullopt}});
    std::vector<std::string> args = {"run", spec_file_->path()};
    args.insert(args.end(), flags.begin(), flags.end());
    return run_cli(args, std::chrono::seconds(120));
  }

  // The process died of SIGSYS after exactly one report naming `call`, the thread kind and
  // the thread's name; the forbidden call never returned to the shim.
  static void expect_killed(const CliRun& result, const std::string& call, const std::string& kind,
                            const std::string& thread) {
    EXPECT_EQ(result.signal, SIGSYS) << "exit code " << result.exit_code << "\n" << result.err;
    EXPECT_EQ(result.exit_code, -1) << result.err;
    auto reports = lines_containing(result.err, kReportMarker);
    ASSERT_EQ(reports.size(), 1u) << result.err;
    const std::string& report = reports.front();
    EXPECT_NE(report.find("skiff: seccomp: "), std::string::npos) << report;
    EXPECT_NE(report.find(kReportMarker + " " + call + " ("), std::string::npos) << report;
    EXPECT_NE(report.find(" " + kind + " thread"), std::string::npos) << report;
    EXPECT_NE(report.find("\"" + thread + "\""), std::string::npos) << report;
    EXPECT_TRUE(lines_containing(result.err, kShimMarker).empty())
        << "the forbidden call returned instead of killing the process:\n"
        << result.err;
  }

  // The guest finished skiff.blk=rw and exited with its code; no report.
  static void expect_guest_passed(const CliRun& result) {
    EXPECT_EQ(result.signal, 0) << result.err;
    EXPECT_EQ(result.exit_code, kGuestExitCode) << result.err << "\n" << result.out;
    EXPECT_NE(result.out.find(kRwPassLine), std::string::npos) << result.out;
    EXPECT_TRUE(lines_containing(result.err, kReportMarker).empty()) << result.err;
  }

  // The shim made `call` from `thread` once and it went through (a non-negative fd).
  static void expect_call_went_through(const CliRun& result, const std::string& call, const std::string& thread) {
    auto lines = lines_containing(result.err, kShimMarker);
    ASSERT_EQ(lines.size(), 1u) << result.err;
    const std::string prefix = kShimMarker + call + " from thread \"" + thread + "\" returned ";
    ASSERT_EQ(lines.front().rfind(prefix, 0), 0u) << lines.front();
    EXPECT_NE(lines.front().substr(prefix.size()).rfind('-', 0), 0u) << "the call failed: " << lines.front();
  }

  TempFile image_{std::vector<uint8_t>(kImageBytes, 0x11), ".img"};
  std::optional<TempFile> spec_file_;
};

TEST_F(SeccompEnforce, OpenatFromTheBlkWorkerKillsTheProcessNamingTheCall) {
  auto result = run({"openat", "blk"});
  expect_killed(result, "openat", "blk_io", kBlkThread);
  // The worker died on the guest's first request, so the guest never saw it complete.
  EXPECT_EQ(result.out.find(kRwPassLine), std::string::npos) << result.out;
}

TEST_F(SeccompEnforce, SocketFromTheBlkWorkerKillsTheProcessNamingTheCall) {
  expect_killed(run({"socket", "blk"}), "socket", "blk_io", kBlkThread);
}

TEST_F(SeccompEnforce, ExplicitEnforceFlagKillsTheProcess) {
  expect_killed(run({"openat", "blk"}, {"--seccomp=enforce"}), "openat", "blk_io", kBlkThread);
}

TEST_F(SeccompEnforce, SocketFromTheVcpuThreadKillsTheProcessNamingTheCall) {
  expect_killed(run({"socket", "vcpu"}), "socket", "vcpu", kVcpuThread);
}

TEST_F(SeccompEnforce, LogModeLetsTheCallThroughAndTheGuestFinishes) {
  auto result = run({"openat", "blk"}, {"--seccomp=log"});
  expect_guest_passed(result);
  expect_call_went_through(result, "openat", kBlkThread);
}

TEST_F(SeccompEnforce, OffModeLetsTheCallThroughAndTheGuestFinishes) {
  auto result = run({"openat", "blk"}, {"--seccomp=off"});
  expect_guest_passed(result);
  expect_call_went_through(result, "openat", kBlkThread);
}

// The control: with the shim loaded but asked for nothing, enforce mode lets the blk worker
// and the vCPU do everything they really do (the sync engine's I/O, the flush, interrupts).
TEST_F(SeccompEnforce, WithoutAForbiddenCallTheGuestFinishes) {
  auto result = run({"", "blk"});
  expect_guest_passed(result);
  EXPECT_TRUE(lines_containing(result.err, kShimMarker).empty()) << result.err;
}

}  // namespace
}  // namespace skiff::test
