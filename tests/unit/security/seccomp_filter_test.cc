// SPDX-License-Identifier: Apache-2.0
// A seccomp filter cannot be removed, so every test that loads one does it in a child
// process (gtest death tests, "threadsafe" style: the child re-executes this binary and
// runs only the statement).
//
// Until the build links libseccomp into skiff_unit_tests (and defines SKIFF_HAVE_SECCOMP),
// only a skipped placeholder is compiled, so the test binary keeps linking.
#include <gtest/gtest.h>

#if defined(SKIFF_HAVE_SECCOMP)

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "security/seccomp_filter.h"

namespace skiff::security {
namespace {

class SeccompFilter : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // The sanitizer runtime makes system calls of its own in every thread (sigaltstack at
    // thread start, /proc reads for reports, LeakSanitizer's tracer at exit) that no filter
    // allows; the plain build runs these tests.
    GTEST_SKIP() << "the sanitizer runtime makes system calls the filters forbid (sigaltstack, /proc reads); "
                    "these tests run in the plain build";
#endif
    GTEST_FLAG_SET(death_test_style, "threadsafe");
  }
};

// In the child: no core file for the expected SIGSYS, then the filter.
void install_or_exit(ThreadKind kind, SeccompMode mode) {
  rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  if (auto installed = install_thread_filter(kind, mode); !installed) {
    std::fprintf(stderr, "install_thread_filter: %s\n", installed.error().message().c_str());
    _exit(2);
  }
}

TEST(SeccompMode, ParsesTheThreeModes) {
  EXPECT_EQ(parse_seccomp_mode("enforce").value(), SeccompMode::enforce);
  EXPECT_EQ(parse_seccomp_mode("log").value(), SeccompMode::log);
  EXPECT_EQ(parse_seccomp_mode("off").value(), SeccompMode::off);
  for (SeccompMode mode : {SeccompMode::enforce, SeccompMode::log, SeccompMode::off}) {
    EXPECT_EQ(parse_seccomp_mode(to_string(mode)).value(), mode);
  }
}

TEST(SeccompMode, RefusesAnythingElseNamingTheChoices) {
  for (const char* text : {"", "Enforce", "ENFORCE", "on", "true", "1", "enforce ", " log", "disabled", "of"}) {
    auto mode = parse_seccomp_mode(text);
    ASSERT_FALSE(mode.has_value()) << '"' << text << '"';
    EXPECT_EQ(mode.error().kind(), ErrorKind::kConfig);
    EXPECT_NE(mode.error().message().find("enforce, log or off"), std::string::npos) << mode.error().message();
    EXPECT_NE(mode.error().message().find("--seccomp"), std::string::npos) << mode.error().message();
  }
}

TEST(ThreadKinds, HaveDistinctNames) {
  std::set<std::string_view> names;
  for (ThreadKind kind : all_thread_kinds()) EXPECT_TRUE(names.insert(to_string(kind)).second) << to_string(kind);
  EXPECT_EQ(to_string(ThreadKind::blk_io), "blk_io");
}

TEST_F(SeccompFilter, ForbiddenSocketKillsTheVcpuThreadWithTheSyscallNamed) {
  EXPECT_EXIT(
      {
        install_or_exit(ThreadKind::vcpu, SeccompMode::enforce);
        ::syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
        _exit(0);  // not reached
      },
      ::testing::KilledBySignal(SIGSYS),
      "skiff: seccomp: forbidden system call socket \\(41\\) in the vcpu thread .*; killing the process");
}

TEST_F(SeccompFilter, ForbiddenExecveKillsBeforeItRuns) {
  EXPECT_EXIT(
      {
        install_or_exit(ThreadKind::vcpu, SeccompMode::enforce);
        char* argv[2];
        argv[0] = const_cast<char*>("/bin/true");
        argv[1] = nullptr;
        ::execve("/bin/true", argv, environ);
        _exit(0);
      },
      ::testing::KilledBySignal(SIGSYS), "forbidden system call execve \\(59\\)");
}

// The acceptance case: a device thread that goes astray takes the VMM down, and
// the report says which call and which thread.
TEST_F(SeccompFilter, ForbiddenCallFromABlockDeviceThreadKillsTheProcess) {
  EXPECT_EXIT(
      {
        install_or_exit(ThreadKind::blk_io, SeccompMode::enforce);
        ::syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY);
        _exit(0);
      },
      ::testing::KilledBySignal(SIGSYS), "forbidden system call openat \\(257\\) in the blk_io thread");
}

TEST_F(SeccompFilter, AnIoctlOutsideTheTableIsNamedWithItsRequest) {
  EXPECT_EXIT(
      {
        install_or_exit(ThreadKind::vcpu, SeccompMode::enforce);
        ::ioctl(0, KVM_CREATE_VM, 0);  // vCPU threads run VMs, they do not make them
        _exit(0);
      },
      ::testing::KilledBySignal(SIGSYS), "forbidden system call ioctl \\(16\\) request 0xae01 in the vcpu thread");
}

TEST_F(SeccompFilter, AllowedCallsStillWork) {
  EXPECT_EXIT(
      {
        install_or_exit(ThreadKind::vcpu, SeccompMode::enforce);
        // KVM_RUN is allowed by the filter; the kernel then refuses the bad fd.
        const bool ioctl_reached_kernel = ::ioctl(-1, KVM_RUN, 0) == -1 && errno == EBADF;
        const bool wrote = ::write(STDERR_FILENO, "filtered and alive\n", 19) == 19;
        const bool pid = ::getpid() > 0;
        _exit(ioctl_reached_kernel && wrote && pid ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "filtered and alive");
}

TEST_F(SeccompFilter, ThreadsStartUnderTheFilterOfThreadCreatingKinds) {
  // glibc's clone3 gets ENOSYS and falls back to clone with pthread_create's flags.
  for (ThreadKind kind : {ThreadKind::main, ThreadKind::device_manager, ThreadKind::signals, ThreadKind::api}) {
    EXPECT_EXIT(
        {
          // glibc installs its SIGCANCEL/SIGSETXID handlers (rt_sigaction) at the process's
          // first pthread_create; in skiff main has started threads long before any filter.
          std::thread([] {}).join();
          install_or_exit(kind, SeccompMode::enforce);
          bool ran = false;
          std::thread worker([&ran] {
            pthread_setname_np(pthread_self(), "skiff-test");
            // The child installs its own (narrower) filter on top of the inherited one.
            ran = install_thread_filter(ThreadKind::shutdown_timer, SeccompMode::enforce).has_value();
          });
          worker.join();
          _exit(ran ? 0 : 1);
        },
        ::testing::ExitedWithCode(0), "")
        << to_string(kind);
  }
}

TEST_F(SeccompFilter, VcpuThreadsStartNoThreads) {
  // Device workers are started by the device manager thread, so a vCPU thread the guest
  // took over cannot start threads (nor io_uring rings, nor open the workers' files).
  EXPECT_EXIT(
      {
        std::thread([] {}).join();
        install_or_exit(ThreadKind::vcpu, SeccompMode::enforce);
        std::thread([] {}).join();
        _exit(0);
      },
      // glibc blocks every signal around clone, so the kernel kills at once, without the
      // handler's report: the death itself is the proof.
      ::testing::KilledBySignal(SIGSYS), "");
}

TEST_F(SeccompFilter, NewProcessesCannotBeCloned) {
  EXPECT_EXIT(
      {
        install_or_exit(ThreadKind::vcpu, SeccompMode::enforce);
        ::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);  // fork()'s flags
        _exit(0);
      },
      ::testing::KilledBySignal(SIGSYS), "forbidden system call clone \\(56\\)");
}

TEST_F(SeccompFilter, ExecutableMappingsAreForbidden) {
  EXPECT_EXIT(
      {
        install_or_exit(ThreadKind::net_io, SeccompMode::enforce);
        ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        _exit(0);
      },
      ::testing::KilledBySignal(SIGSYS), "forbidden system call mmap \\(9\\) in the net_io thread");
}

TEST_F(SeccompFilter, LogModeLetsAForbiddenCallThrough) {
  EXPECT_EXIT(
      {
        install_or_exit(ThreadKind::vcpu, SeccompMode::log);
        const int fd = static_cast<int>(::syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0));
        _exit(fd >= 0 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(SeccompFilter, OffInstallsNothing) {
  EXPECT_EXIT(
      {
        install_or_exit(ThreadKind::vcpu, SeccompMode::off);
        const bool no_filter = ::prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 0;
        const bool no_nnp = ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0;
        const int fd = static_cast<int>(::syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0));
        _exit(no_filter && no_nnp && fd >= 0 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(SeccompFilter, EnforceSetsNoNewPrivsAndAppliesToTheCallingThreadOnly) {
  EXPECT_EXIT(
      {
        // A thread that exists before the filter is not filtered by it, and can read the
        // filtered thread's status (the filtered one may not open files).
        std::atomic<pid_t> filtered_tid{0};
        std::atomic<bool> installed{false};
        bool ok = false;
        std::thread other([&] {
          while (!installed.load()) std::this_thread::yield();
          std::ifstream in("/proc/self/task/" + std::to_string(filtered_tid.load()) + "/status");
          std::stringstream status;
          status << in.rdbuf();
          const bool nnp = status.str().find("NoNewPrivs:\t1") != std::string::npos;
          const bool filter = status.str().find("Seccomp:\t2") != std::string::npos;
          ok = nnp && filter && ::syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0) >= 0;
        });
        filtered_tid = static_cast<pid_t>(::syscall(SYS_gettid));
        install_or_exit(ThreadKind::vcpu, SeccompMode::enforce);
        installed = true;
        other.join();
        _exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(SeccompFilter, EveryKindsFilterLoads) {
  for (ThreadKind kind : all_thread_kinds()) {
    for (SeccompMode mode : {SeccompMode::enforce, SeccompMode::log}) {
      EXPECT_EXIT(
          {
            install_or_exit(kind, mode);  // exits 2 with the error when the filter cannot be built or loaded
            _exit(0);
          },
          ::testing::ExitedWithCode(0), "")
          << to_string(kind) << " " << to_string(mode);
    }
  }
}

}  // namespace
}  // namespace skiff::security

#else  // !SKIFF_HAVE_SECCOMP

TEST(SeccompFilter, NeedsLibseccomp) {
  GTEST_SKIP() << "skiff_unit_tests is not linked with libseccomp: link `seccomp` and define SKIFF_HAVE_SECCOMP "
                  "(docs/security.md)";
}

#endif
