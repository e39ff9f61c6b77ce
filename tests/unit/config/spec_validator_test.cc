// SPDX-License-Identifier: Apache-2.0
// validate_spec: the host-independent rules on specs built in code, and the checks of
// host files, CPUs and NUMA nodes against temporary files.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "skiff/spec.h"
#include "unit/config/spec_test_util.h"

namespace skiff {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing_util::TempDir;

class SpecValidator : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_.boot.kernel = dir_.write("vmlinuz", "kernel image");
    spec_.boot.initrd = dir_.write("initrd.cpio", "initrd image");
  }

  void expect_rejected(std::string_view prefix, std::string_view detail) {
    auto result = validate_spec(spec_);
    ASSERT_FALSE(result) << "accepted a spec that should fail with " << prefix;
    EXPECT_EQ(result.error().kind(), ErrorKind::kConfig);
    EXPECT_THAT(result.error().message(), StartsWith(std::string(prefix)));
    EXPECT_THAT(result.error().message(), HasSubstr(std::string(detail)));
  }

  // Runs validate_spec in a child process that has dropped root for `nobody`, so the
  // permission checks are exercised when the tests run as root (as CI does). Returns the
  // error message, or "accepted".
  std::string validate_as_nobody() {
    constexpr uid_t kNobody = 65534;
    // nobody must be able to reach the files inside the scratch directory.
    ::chmod(dir_.path().c_str(), 0755);
    int fds[2];
    if (::pipe(fds) != 0) return "pipe failed";
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      std::string message = "could not drop privileges";
      if (::setresgid(kNobody, kNobody, kNobody) == 0 && ::setresuid(kNobody, kNobody, kNobody) == 0) {
        auto result = validate_spec(spec_);
        message = result ? "accepted" : result.error().message();
      }
      ssize_t written = ::write(fds[1], message.data(), message.size());
      ::_exit(written == static_cast<ssize_t>(message.size()) ? 0 : 1);
    }
    ::close(fds[1]);
    std::string message;
    char buffer[512];
    ssize_t n = 0;
    while ((n = ::read(fds[0], buffer, sizeof(buffer))) > 0) message.append(buffer, static_cast<size_t>(n));
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return message;
  }

  // Permission checks: run directly when unprivileged, in a child as nobody when root.
  void expect_rejected_without_privilege(std::string_view prefix, std::string_view detail) {
    if (::geteuid() != 0) {
      expect_rejected(prefix, detail);
      return;
    }
    std::string message = validate_as_nobody();
    EXPECT_THAT(message, StartsWith(std::string(prefix)));
    EXPECT_THAT(message, HasSubstr(std::string(detail)));
  }

  TempDir dir_;
  VmSpec spec_;
};

TEST_F(SpecValidator, AcceptsAValidSpec) {
  auto result = validate_spec(spec_);
  EXPECT_TRUE(result) << result.error().message();
}

TEST_F(SpecValidator, AcceptsNoInitrd) {
  spec_.boot.initrd.clear();
  auto result = validate_spec(spec_);
  EXPECT_TRUE(result) << result.error().message();
}

// Specs built in code get the same rules as parsed ones, with the same JSON pointers.
TEST_F(SpecValidator, AppliesTheParserRulesToSpecsBuiltInCode) {
  spec_.machine.vcpus = 0;
  expect_rejected("/machine/vcpus: ", "must be between 1 and 254");
  spec_.machine.vcpus = 2;
  spec_.machine.vcpu_affinity = {{0}};
  expect_rejected("/machine/vcpu_affinity: ", "has 1 entries");
  spec_.machine.vcpu_affinity.clear();
  spec_.machine.hugepages = HugePages::k1G;
  spec_.machine.memory_mib = 1536;
  expect_rejected("/machine/memory_mib: ", "use 1024 or 2048");
  spec_.machine.hugepages = HugePages::kNone;
  spec_.name = "";
  expect_rejected("/name: ", "1 to 64 characters");
  spec_.name = "vm";
  spec_.boot.cmdline = std::string("a\0b", 3);
  expect_rejected("/boot/cmdline: ", "NUL character");
  spec_.boot.cmdline.clear();
  spec_.serial = SerialSpec{SerialMode::kFile, "", false};
  expect_rejected("/serial/path: ", "is required");
  spec_.serial = SerialSpec{SerialMode::kNone, dir_.path() / "log", false};
  expect_rejected("/serial/path: ", "is only used with serial.mode \"file\"");
  spec_.serial = SerialSpec{};
  spec_.boot.kernel.clear();
  expect_rejected("/boot/kernel: ", "is required");
}

TEST_F(SpecValidator, MissingKernel) {
  spec_.boot.kernel = dir_.path() / "absent";
  expect_rejected(
      fmt::format("/boot/kernel \"{}\": No such file or directory; ", spec_.boot.kernel.string()),
      "set boot.kernel to a bzImage or ELF vmlinux");
}

TEST_F(SpecValidator, KernelIsADirectory) {
  spec_.boot.kernel = dir_.path();
  expect_rejected(fmt::format("/boot/kernel \"{}\": ", dir_.path().string()),
                  "is a directory, not a file");
}

TEST_F(SpecValidator, KernelIsNotARegularFile) {
  auto fifo = dir_.path() / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  spec_.boot.kernel = fifo;
  expect_rejected("/boot/kernel ", "is not a regular file");
}

TEST_F(SpecValidator, KernelIsEmpty) {
  spec_.boot.kernel = dir_.write("empty", "");
  expect_rejected("/boot/kernel ", "is empty");
}

TEST_F(SpecValidator, KernelIsUnreadable) {
  ASSERT_EQ(::chmod(spec_.boot.kernel.c_str(), 0), 0);
  expect_rejected_without_privilege("/boot/kernel ", "Permission denied");
}

TEST_F(SpecValidator, MissingInitrd) {
  spec_.boot.initrd = dir_.path() / "absent.cpio";
  expect_rejected(
      fmt::format("/boot/initrd \"{}\": No such file or directory; ", spec_.boot.initrd.string()),
      "set boot.initrd to an initramfs image");
}

TEST_F(SpecValidator, InitrdIsADirectory) {
  spec_.boot.initrd = dir_.path();
  expect_rejected("/boot/initrd ", "is a directory, not a file");
}

TEST_F(SpecValidator, InitrdIsEmpty) {
  spec_.boot.initrd = dir_.write("empty.cpio", "");
  expect_rejected("/boot/initrd ", "is empty");
}

TEST_F(SpecValidator, SerialFileInExistingDirectory) {
  spec_.serial = SerialSpec{SerialMode::kFile, dir_.path() / "console.log", false};
  auto result = validate_spec(spec_);
  EXPECT_TRUE(result) << result.error().message();
  // validate_spec only looks: it must not create the file.
  EXPECT_FALSE(std::filesystem::exists(spec_.serial.path));
  dir_.write("console.log", "old output");
  result = validate_spec(spec_);
  EXPECT_TRUE(result) << result.error().message();
}

TEST_F(SpecValidator, SerialFileInMissingDirectory) {
  spec_.serial = SerialSpec{SerialMode::kFile, dir_.path() / "no-such-dir" / "console.log", false};
  expect_rejected("/serial/path ", "No such file or directory");
}

TEST_F(SpecValidator, SerialFileParentIsAFile) {
  auto file = dir_.write("plain", "x");
  spec_.serial = SerialSpec{SerialMode::kFile, file / "console.log", false};
  expect_rejected("/serial/path ", "is not a directory");
}

TEST_F(SpecValidator, SerialFileIsADirectory) {
  spec_.serial = SerialSpec{SerialMode::kFile, dir_.path(), false};
  expect_rejected("/serial/path ", "is a directory, not a file");
}

TEST_F(SpecValidator, SerialFileInReadOnlyDirectory) {
  auto sub = dir_.path() / "ro";
  ASSERT_TRUE(std::filesystem::create_directory(sub));
  ASSERT_EQ(::chmod(sub.c_str(), 0555), 0);
  spec_.serial = SerialSpec{SerialMode::kFile, sub / "console.log", false};
  expect_rejected_without_privilege("/serial/path ", "cannot create a file");
}

TEST_F(SpecValidator, VsockSocketInWritableDirectory) {
  spec_.vsock = VsockSpec{3, dir_.path() / "vm.vsock", VirtioTransport::kPci};
  auto result = validate_spec(spec_);
  EXPECT_TRUE(result) << result.error().message();
  // validate_spec only looks: the device makes the socket when the VM starts.
  EXPECT_FALSE(std::filesystem::exists(spec_.vsock->socket));
}

TEST_F(SpecValidator, VsockSocketDirectoryMissing) {
  auto missing = dir_.path() / "no-such-dir";
  spec_.vsock = VsockSpec{3, missing / "vm.vsock", VirtioTransport::kPci};
  expect_rejected(fmt::format("/vsock/socket \"{}\": ", spec_.vsock->socket.string()),
                  fmt::format("the directory \"{}\" does not exist; create it (e.g. mkdir -p {})", missing.string(),
                              missing.string()));
}

TEST_F(SpecValidator, VsockSocketDirectoryIsAFile) {
  auto file = dir_.write("plain", "x");
  spec_.vsock = VsockSpec{3, file / "vm.vsock", VirtioTransport::kPci};
  expect_rejected("/vsock/socket ", fmt::format("\"{}\" is not a directory", file.string()));
}

TEST_F(SpecValidator, VsockSocketDirectoryUnreachable) {
  // A file in the middle of the path: stat fails with ENOTDIR rather than ENOENT.
  auto file = dir_.write("plain", "x");
  spec_.vsock = VsockSpec{3, file / "sub" / "vm.vsock", VirtioTransport::kPci};
  expect_rejected("/vsock/socket ", "Not a directory; check the path and its permissions");
}

TEST_F(SpecValidator, VsockSocketDirectoryNotWritable) {
  auto sub = dir_.path() / "ro";
  ASSERT_TRUE(std::filesystem::create_directory(sub));
  ASSERT_EQ(::chmod(sub.c_str(), 0500), 0);
  spec_.vsock = VsockSpec{3, sub / "vm.vsock", VirtioTransport::kPci};
  // Root passes access(); as root the check runs in a child that has become nobody.
  expect_rejected_without_privilege("/vsock/socket ", "skiff cannot create the socket in");
  if (::geteuid() != 0) {
    expect_rejected("/vsock/socket ", "Permission denied; make the directory writable");
  }
}

TEST_F(SpecValidator, AffinityOnHostCpu0) {
  spec_.machine.vcpu_affinity = {{0}};
  auto result = validate_spec(spec_);
  EXPECT_TRUE(result) << result.error().message();
}

TEST_F(SpecValidator, AffinityOnAbsentHostCpu) {
  if (std::filesystem::exists("/sys/devices/system/cpu/cpu1023")) {
    GTEST_SKIP() << "this host has 1024 CPUs";
  }
  spec_.machine.vcpus = 2;
  spec_.machine.vcpu_affinity = {{0}, {0, 1023}};
  expect_rejected("/machine/vcpu_affinity/1/1: ", "host CPU 1023 does not exist on this host");
}

TEST_F(SpecValidator, AbsentNumaNode) {
  if (std::filesystem::exists("/sys/devices/system/node/node1023")) {
    GTEST_SKIP() << "this host has NUMA node 1023";
  }
  spec_.machine.numa_node = 1023;
  expect_rejected("/machine/numa_node: ", "host NUMA node 1023 does not exist");
}

TEST_F(SpecValidator, PresentNumaNode) {
  if (!std::filesystem::exists("/sys/devices/system/node/node0")) {
    GTEST_SKIP() << "the kernel exposes no NUMA nodes";
  }
  spec_.machine.numa_node = 0;
  auto result = validate_spec(spec_);
  EXPECT_TRUE(result) << result.error().message();
}

}  // namespace
}  // namespace skiff
