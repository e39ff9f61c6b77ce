// SPDX-License-Identifier: Apache-2.0
// Tier 2: the skiff command's exit codes and error messages, as users and CI scripts see them.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

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

TEST_F(Cli, SigtermShutsTheGuestDownGracefully) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=wait-shutdown"},
                     std::chrono::seconds(60), std::chrono::milliseconds(500));
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("asking the guest to shut down"), std::string::npos) << run.err;
  EXPECT_NE(run.out.find("SKIFF-GUEST shutdown-request=acpi"), std::string::npos) << run.out;
}

TEST_F(Cli, SigtermStopsAGuestThatDoesNotShutDown) {
  auto started = std::chrono::steady_clock::now();
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=halt", "--shutdown-timeout",
                      "1.5"},
                     std::chrono::seconds(60), std::chrono::milliseconds(500));
  EXPECT_EQ(run.exit_code, 75) << run.err;
  EXPECT_NE(run.err.find("did not shut down"), std::string::npos) << run.err;
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(1900));
}

TEST_F(Cli, SigtermWithoutShutdownTimeoutStopsAtOnce) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=halt", "--shutdown-timeout",
                      "0"},
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

// ---- Boot-test features: --timeout, --expect, --fail-on, --console-log, --result-json,
// `skiff test`, and the kernel panic banner (docs/kernel-ci.md, docs/exit-codes.md).
namespace skiff::test {
namespace {

// A scratch directory for output files, removed with its files.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/skiff-cli-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    for (const std::string& file : files_) std::remove(file.c_str());
    if (!path_.empty()) rmdir(path_.c_str());
  }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

TEST_F(Cli, TimeoutStopsAHungGuest) {
  const auto start = std::chrono::steady_clock::now();
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=halt", "--timeout", "2"});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(run.exit_code, 124) << run.err;
  EXPECT_GE(seconds, 1.9);
  EXPECT_LT(seconds, 15.0) << "the time limit must end the run soon after it expires";
  EXPECT_NE(run.err.find("--timeout"), std::string::npos) << run.err;
  EXPECT_NE(run.out.find("SKIFF-GUEST action=halt"), std::string::npos) << run.out;
}

TEST_F(Cli, TimeoutDoesNotChangeAVerdictInTime) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.exit=5", "--timeout", "60"});
  EXPECT_EQ(run.exit_code, 5) << run.err;
}

TEST_F(Cli, TestSubcommandHasATimeLimitAndPrintsTheConsole) {
  auto run = run_cli({"test", "--kernel", SKIFF_TEST_GUEST_BZIMAGE, "--cmdline", "skiff.action=halt", "--timeout",
                      "1.5"});
  EXPECT_EQ(run.exit_code, 124) << run.err;
  EXPECT_NE(run.out.find("SKIFF-GUEST boot=bzimage"), std::string::npos) << run.out;
  auto ok = run_cli({"test", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=poweroff"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("SKIFF-GUEST action=poweroff"), std::string::npos) << ok.out;
}

TEST_F(Cli, ExpectMetPasses) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=poweroff", "--expect",
                      "^SKIFF-GUEST boot=pvh$", "--expect", "cpus-started=[0-9]+"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
}

TEST_F(Cli, ExpectMissedFailsASuccess) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=poweroff", "--expect",
                      "boot=pvh", "--expect", "no such line"});
  EXPECT_EQ(run.exit_code, 74) << run.err;
  EXPECT_NE(run.err.find("\"no such line\""), std::string::npos) << run.err;
  EXPECT_EQ(run.err.find("\"boot=pvh\""), std::string::npos) << "only the missing pattern is named: " << run.err;
}

TEST_F(Cli, ExpectMissedKeepsAGuestFailureCode) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.exit=9", "--expect", "nope"});
  EXPECT_EQ(run.exit_code, 9) << run.err;
}

TEST_F(Cli, FailOnStopsAtTheFirstMatchingLine) {
  // The guest would otherwise halt forever: the match must stop it.
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=halt", "--fail-on",
                      "madt-cpus=", "--timeout", "60"});
  EXPECT_EQ(run.exit_code, 73) << run.err;
  EXPECT_NE(run.err.find("SKIFF-GUEST madt-cpus=1"), std::string::npos) << run.err;
}

TEST_F(Cli, FailOnWithoutMatchChangesNothing) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.exit=0", "--fail-on", "error "});
  EXPECT_EQ(run.exit_code, 0) << run.err;
}

TEST_F(Cli, KernelPanicBannerIsAPanic) {
  // The test guest echoes its command line, so the banner appears on the console; it then
  // powers off, as a kernel with panic=-1 resets: a panic, not a clean power-off.
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline",
                      "skiff.action=poweroff Kernel panic - not syncing: fake for a test"});
  EXPECT_EQ(run.exit_code, 72) << run.err;
  EXPECT_NE(run.err.find("Kernel panic - not syncing: fake for a test"), std::string::npos) << run.err;
}

TEST_F(Cli, ConsoleLogAndResultJson) {
  TempDir dir;
  const std::string log = dir.file("console.log");
  const std::string result = dir.file("result.json");
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.exit=0", "--expect",
                      "action=exit", "--expect", "missing-marker", "--console-log", log, "--result-json", result});
  EXPECT_EQ(run.exit_code, 74) << run.err;
  EXPECT_NE(run.err.find("timings: first console output after"), std::string::npos) << run.err;

  // The console goes to stdout and, identically, to the log.
  const std::string console = read_text(log);
  EXPECT_NE(console.find("SKIFF-GUEST action=exit code=0"), std::string::npos) << console;
  EXPECT_EQ(console, run.out);

  nlohmann::json json = read_json(result);
  ASSERT_FALSE(json.is_discarded()) << read_text(result);
  EXPECT_EQ(json["verdict"], "fail");
  EXPECT_EQ(json["exit_code"], 74);
  EXPECT_EQ(json["stop_reason"], "debug-exit");
  EXPECT_NE(json["detail"].get<std::string>().find("missing-marker"), std::string::npos) << json.dump(2);
  const auto& timings = json["timings"];
  ASSERT_TRUE(timings["to_first_console_ms"].is_number()) << json.dump(2);
  ASSERT_TRUE(timings["to_verdict_ms"].is_number()) << json.dump(2);
  EXPECT_LE(timings["to_first_console_ms"].get<double>(), timings["to_verdict_ms"].get<double>());
  EXPECT_GE(timings["total_ms"].get<double>(), timings["to_verdict_ms"].get<double>());
  ASSERT_EQ(json["expectations"].size(), 2u);
  EXPECT_EQ(json["expectations"][0]["pattern"], "action=exit");
  EXPECT_EQ(json["expectations"][0]["matched"], true);
  EXPECT_EQ(json["expectations"][0]["line"], "SKIFF-GUEST action=exit code=0");
  EXPECT_TRUE(json["expectations"][0]["at_ms"].is_number());
  EXPECT_EQ(json["expectations"][1]["matched"], false);
  EXPECT_TRUE(json["fail_on_match"].is_null());
  const auto& lines = json["last_console_lines"];
  ASSERT_TRUE(lines.is_array());
  ASSERT_FALSE(lines.empty());
  EXPECT_LE(lines.size(), 50u);
  EXPECT_EQ(lines.back(), "SKIFF-GUEST action=exit code=0");
}

TEST_F(Cli, ResultJsonOfAPassAndOfATimeout) {
  TempDir dir;
  const std::string pass = dir.file("pass.json");
  auto run = run_cli({"test", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=poweroff",
                      "--result-json", pass});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json json = read_json(pass);
  EXPECT_EQ(json["verdict"], "pass");
  EXPECT_EQ(json["exit_code"], 0);
  EXPECT_EQ(json["stop_reason"], "guest-poweroff");
  EXPECT_TRUE(json["expectations"].empty());

  const std::string timeout = dir.file("timeout.json");
  run = run_cli({"test", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=halt", "--timeout", "1",
                 "--result-json", timeout, "--fail-on", "never-printed"});
  EXPECT_EQ(run.exit_code, 124) << run.err;
  json = read_json(timeout);
  EXPECT_EQ(json["verdict"], "timeout");
  EXPECT_EQ(json["stop_reason"], "timeout");
  EXPECT_GE(json["timings"]["to_verdict_ms"].get<double>(), 900.0);
  EXPECT_EQ(json["last_console_lines"].back(), "SKIFF-GUEST action=halt code=0");
}

TEST_F(Cli, ResultJsonOfAFailOnMatch) {
  TempDir dir;
  const std::string result = dir.file("result.json");
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--cmdline", "skiff.action=halt", "--fail-on",
                      "e820-count [0-9]+", "--result-json", result, "--timeout", "60"});
  EXPECT_EQ(run.exit_code, 73) << run.err;
  nlohmann::json json = read_json(result);
  EXPECT_EQ(json["verdict"], "fail");
  EXPECT_EQ(json["stop_reason"], "console-failure");
  EXPECT_EQ(json["fail_on_match"]["pattern"], "e820-count [0-9]+");
  EXPECT_EQ(json["fail_on_match"]["line"].get<std::string>().rfind("SKIFF-GUEST e820-count ", 0), 0u);
}

TEST(CliErrors, BadRegexIsAUsageErrorNamingTheOption) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--fail-on", "ok", "--fail-on", "(unclosed"});
  EXPECT_EQ(run.exit_code, 64) << run.err;
  EXPECT_NE(run.err.find("--fail-on \"(unclosed\""), std::string::npos) << run.err;
  auto expect = run_cli({"test", "--kernel", SKIFF_TEST_GUEST_ELF, "--expect", "a["});
  EXPECT_EQ(expect.exit_code, 64) << expect.err;
  EXPECT_NE(expect.err.find("--expect"), std::string::npos) << expect.err;
}

TEST(CliErrors, BadTimeoutIsAUsageError) {
  EXPECT_EQ(run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--timeout", "soon"}).exit_code, 64);
  EXPECT_EQ(run_cli({"test", "--kernel", SKIFF_TEST_GUEST_ELF, "--timeout", "-3"}).exit_code, 64);
}

TEST(CliErrors, UnwritableResultFileFailsBeforeTheBoot) {
  auto run = run_cli({"run", "--kernel", SKIFF_TEST_GUEST_ELF, "--result-json", "/nonexistent/dir/result.json"});
  EXPECT_EQ(run.exit_code, 78) << run.err;
  EXPECT_NE(run.err.find("--result-json"), std::string::npos) << run.err;
  EXPECT_EQ(run.out, "") << "nothing booted";
}

TEST(CliErrors, ResultJsonOfAConfigError) {
  TempDir dir;
  const std::string result = dir.file("result.json");
  auto run = run_cli({"run", "--kernel", "/nonexistent/vmlinuz", "--result-json", result});
  EXPECT_EQ(run.exit_code, 78) << run.err;
  nlohmann::json json = read_json(result);
  EXPECT_EQ(json["verdict"], "error");
  EXPECT_EQ(json["exit_code"], 78);
  EXPECT_TRUE(json["stop_reason"].is_null());
  EXPECT_NE(json["detail"].get<std::string>().find("/nonexistent/vmlinuz"), std::string::npos);
}

}  // namespace
}  // namespace skiff::test
