// SPDX-License-Identifier: Apache-2.0
// Tier 2: the skiff command's exit codes and error messages, as users and CI scripts see them.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <unistd.h>
#include <cstdio>

#include "guest_runner.h"

namespace skiff::test {
namespace {

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << "needs /dev/kvm: " << *reason;
  }
};

TEST_F(Cli, DebugExitValueBecomesTheExitCode) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.exit=42"});
  EXPECT_EQ(run.exit_code, 42) << run.err;
  EXPECT_NE(run.out.find("SKIFF-GUEST boot=pvh"), std::string::npos) << run.out;
  EXPECT_NE(run.err.find("first console output after"), std::string::npos) << run.err;
}

TEST_F(Cli, DefaultVmPowersOffWithZero) {
  auto run = run_cli({"run", SKIFF_DEFAULT_VM_SPEC});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("SKIFF-GUEST cpus-started=2"), std::string::npos) << run.out;
}

TEST_F(Cli, OverridesWinOverTheSpec) {
  auto run = run_cli({"run", SKIFF_DEFAULT_VM_SPEC, "--vcpus", "3", "--memory", "96M", "--cmdline", "skiff.exit=4"});
  EXPECT_EQ(run.exit_code, 4) << run.err;
  EXPECT_NE(run.out.find("SKIFF-GUEST cpus-started=3"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("SKIFF-GUEST e820 0x100000 0x5f00000 1"), std::string::npos) << run.out;
}

TEST_F(Cli, SigtermStopsTheVm) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=halt"},
                     std::chrono::seconds(60), std::chrono::milliseconds(500));
  EXPECT_EQ(run.exit_code, 75) << run.err;
  EXPECT_NE(run.err.find("signal"), std::string::npos) << run.err;
}

TEST_F(Cli, GuestCrashExitCode) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_BZIMAGE, "--cmdline", "skiff.action=triple-fault"});
  EXPECT_EQ(run.exit_code, 71) << run.err;
  EXPECT_NE(run.err.find("triple fault"), std::string::npos) << run.err;
}

TEST(CliErrors, BadUsageIs64) {
  auto run = run_cli({"run", "--no-such-flag"});
  EXPECT_EQ(run.exit_code, 64) << run.err;
  EXPECT_EQ(run_cli({}).exit_code, 64);
}

TEST(CliErrors, MissingKernelNamesTheField) {
  auto run = run_cli({"run", "--kernel", "/nonexistent/vmlinuz"});
  EXPECT_EQ(run.exit_code, 78) << run.err;
  EXPECT_NE(run.err.find("boot.kernel"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("/nonexistent/vmlinuz"), std::string::npos) << run.err;
}

TEST(CliErrors, GarbageKernelIsRejected) {
  TempFile garbage(std::string(8192, 'x'));
  auto run = run_cli({"run", "--kernel", garbage.path()});
  EXPECT_EQ(run.exit_code, 78) << run.err;
  EXPECT_NE(run.err.find("boot.kernel"), std::string::npos) << run.err;
}

TEST(CliErrors, TruncatedBzImageIsRejected) {
  std::ifstream in(SKIFF_TEST_GUEST_BZIMAGE, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 2048u);
  bytes.resize(bytes.size() / 2);
  TempFile truncated(bytes);
  auto run = run_cli({"run", "--kernel", truncated.path()});
  EXPECT_EQ(run.exit_code, 78) << run.err;
  EXPECT_NE(run.err.find("trunc"), std::string::npos) << run.err;
}

TEST(CliErrors, BadSpecNamesTheJsonPath) {
  TempFile spec(std::string(R"({"machine": {"vcpus": "two"}, "boot": {"kernel": "k"}})"), ".json");
  auto run = run_cli({"validate", spec.path()});
  EXPECT_EQ(run.exit_code, 78) << run.err;
  EXPECT_NE(run.err.find("/machine/vcpus"), std::string::npos) << run.err;
  auto run_it = run_cli({"run", spec.path()});
  EXPECT_EQ(run_it.exit_code, 78) << run_it.err;
}

TEST(CliErrors, BadMemoryOverride) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--memory", "lots"});
  EXPECT_EQ(run.exit_code, 78) << run.err;
  EXPECT_NE(run.err.find("--memory"), std::string::npos) << run.err;
}

TEST(CliErrors, ValidateAcceptsTheDefaultVm) {
  auto run = run_cli({"validate", SKIFF_DEFAULT_VM_SPEC});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("valid"), std::string::npos);
}

TEST(CliInfo, VersionAndHostCheck) {
  auto version = run_cli({"version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out.rfind("skiff ", 0), 0u) << version.out;
  auto check = run_cli({"host-check", "--json"});
  bool kvm_ok = !kvm_unavailable_reason();
  EXPECT_EQ(check.exit_code, kvm_ok ? 0 : 69) << check.err;
  EXPECT_NE(check.out.find("\"hugepages\""), std::string::npos) << check.out;
  EXPECT_NE(check.out.find("\"stock_kernels_directly\""), std::string::npos) << check.out;
}

}  // namespace
}  // namespace skiff::test

namespace skiff::test {
namespace {

TEST_F(Cli, SerialToFileKeepsStdoutClean) {
  char dir[] = "/tmp/skiff-serial-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string log = std::string(dir) + "/console.log";
  const std::string spec_text = R"({"machine": {"vcpus": 1, "memory_mib": 32},
    "boot": {"kernel": ")" + std::string(SKIFF_TEST_GUEST_ELF) + R"(", "cmdline": "skiff.exit=6"},
    "serial": {"mode": "file", "path": ")" + log + R"("}})";
  TempFile spec(spec_text, ".json");
  auto run = run_cli({"run", spec.path()});
  EXPECT_EQ(run.exit_code, 6) << run.err;
  EXPECT_EQ(run.out, "");
  std::ifstream in(log);
  std::string console((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(console.find("SKIFF-GUEST action=exit code=6"), std::string::npos) << console;
  std::remove(log.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace skiff::test
