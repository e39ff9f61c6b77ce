// SPDX-License-Identifier: Apache-2.0
// The bad-input table: every malformed input a user can hand `skiff run` (spec, command
// line, kernel image, initrd, disk path, tap, API socket, host resources), each with the
// exit code and the words of the one clear message it must get. Guest-side bad input
// (descriptor chains, requests, PFNs, config writes) is covered by the unit tests and the
// fuzz targets; tests/bad_inputs.md lists where.
//
// Each case writes its spec into a scratch directory ({dir} in the texts below; {kernel} is
// the test guest) and runs the skiff binary. The message check: stderr has exactly one
// "skiff: error:" line and it contains every expected fragment.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "guest_runner.h"
#include "skiff/exit.h"

namespace skiff::test {
namespace {

struct BadInput {
  const char* name;
  std::string spec;                 // JSON written to {dir}/vm.json; empty: no spec file
  std::vector<std::string> args;    // after "run"; "{spec}" is the spec file's path
  int exit_code;
  std::vector<std::string> message;  // fragments of the one error line
  bool needs_root = false;
};

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// A spec around `extra` top-level members, booting the test guest.
std::string spec_with(const std::string& extra) {
  return R"({"boot": {"kernel": "{kernel}", "cmdline": "skiff.exit=0"}, "serial": {"input": false})" +
         (extra.empty() ? std::string() : ", " + extra) + "}";
}

std::vector<BadInput> cases() {
  const std::string run_spec = "{spec}";
  return {
      // ---- the spec file
      {"SpecMissing", "", {"{dir}/absent.json"}, kExitConfig, {"spec file", "absent.json", "No such file"}},
      {"SpecNotJson", "{\"boot\": {", {run_spec}, kExitConfig, {"line", "column"}},
      {"SpecUnknownKey", spec_with(R"("machine": {"vcpu": 2})"), {run_spec}, kExitConfig,
       {"/machine/vcpu", "unknown key"}},
      {"SpecWrongType", spec_with(R"("machine": {"vcpus": "two"})"), {run_spec}, kExitConfig,
       {"/machine/vcpus", "expected an unsigned integer"}},
      {"SpecZeroVcpus", spec_with(R"("machine": {"vcpus": 0})"), {run_spec}, kExitConfig, {"/machine/vcpus"}},
      {"SpecDuplicateKey", R"({"boot": {"kernel": "{kernel}"}, "boot": {"kernel": "{kernel}"}})", {run_spec},
       kExitConfig, {"/boot", "duplicate key"}},
      {"SpecNoKernel", R"({"boot": {}})", {run_spec}, kExitConfig, {"boot", "kernel"}},
      // ---- images
      {"KernelMissing", R"({"boot": {"kernel": "{dir}/vmlinuz"}})", {run_spec}, kExitConfig,
       {"/boot/kernel", "vmlinuz"}},
      {"KernelNotAnImage", R"({"boot": {"kernel": "{dir}/garbage"}})", {run_spec}, kExitConfig,
       {"kernel image", "not a bzImage or ELF64"}},
      {"KernelTruncatedElf", R"({"boot": {"kernel": "{dir}/truncated.elf"}})", {run_spec}, kExitConfig,
       {"kernel"}},
      {"KernelIsADirectory", R"({"boot": {"kernel": "{dir}"}})", {run_spec}, kExitConfig, {"/boot/kernel"}},
      {"InitrdMissing", R"({"boot": {"kernel": "{kernel}", "initrd": "{dir}/initrd.img"}})", {run_spec},
       kExitConfig, {"/boot/initrd", "initrd.img"}},
      // ---- command line
      {"CliUnknownOption", "", {"--kernel", "{kernel}", "--bogus"}, kExitUsage, {}},
      {"CliNoSpecNoKernel", "", {}, kExitConfig, {"no spec file and no --kernel"}},
      {"CliMemoryUnit", "", {"--kernel", "{kernel}", "--memory", "12X"}, kExitConfig,
       {"--memory", "unknown unit"}},
      {"CliMemoryTooSmall", "", {"--kernel", "{kernel}", "--memory", "1M"}, kExitConfig, {"memory_mib"}},
      {"CliTimeoutNotANumber", "", {"--kernel", "{kernel}", "--timeout", "soon"}, kExitUsage, {}},
      {"CliBadRegex", "", {"--kernel", "{kernel}", "--expect", "(unclosed"}, kExitUsage, {"--expect"}},
      {"CliBalloonTargetTooBig", "", {"--kernel", "{kernel}", "--memory", "64M", "--balloon-target", "64M"},
       kExitConfig, {"/balloon/target_mib", "would take all"}},
      // ---- disks
      {"DiskMissing", spec_with(R"("disks": [{"id": "d0", "path": "{dir}/disk.img"}])"), {run_spec}, kExitConfig,
       {"/disks/0/path", "truncate -s"}},
      {"DiskIsADirectory", spec_with(R"("disks": [{"id": "d0", "path": "{dir}"}])"), {run_spec}, kExitConfig,
       {"/disks/0/path", "neither a regular file nor a block device"}},
      {"DiskCharacterDevice", spec_with(R"("disks": [{"id": "d0", "path": "/dev/null"}])"), {run_spec},
       kExitConfig, {"/disks/0/path", "neither a regular file nor a block device"}},
      {"DiskSerialTooLong", spec_with(R"("disks": [{"id": "d0", "path": "{dir}/ok.img", "serial": "123456789012345678901"}])"),
       {run_spec}, kExitConfig, {"/disks/0/serial", "at most 20 bytes"}},
      {"DiskSharedWritable", spec_with(R"("disks": [{"id": "d0", "path": "{dir}/ok.img", "shared": true}])"),
       {run_spec}, kExitConfig, {"/disks/0/shared", "read-only"}},
      // ---- taps
      {"TapNameTooLong", spec_with(R"("nets": [{"id": "n0", "tap": "abcdefghijklmnop"}])"), {run_spec},
       kExitConfig, {"/nets/0/tap", "at most 15 bytes"}},
      {"TapFdNotATap", spec_with(R"("nets": [{"id": "n0", "tap_fd": 0}])"), {run_spec}, kExitConfig,
       {"/nets/0/tap_fd"}},
      {"MacSyntax", spec_with(R"("nets": [{"id": "n0", "tap": "t0", "mac": "52:54:00:12:34"}])"), {run_spec},
       kExitConfig, {"/nets/0/mac", "is not a MAC address"}},
      {"MtuOutOfRange", spec_with(R"("nets": [{"id": "n0", "tap": "t0", "mtu": 20}])"), {run_spec}, kExitConfig,
       {"/nets/0/mtu", "between 68 and 65535"}},
      // ---- API socket
      {"ApiDirectoryMissing", spec_with(R"("api": {"socket": "{dir}/no/such/dir/vm.sock"})"), {run_spec},
       kExitConfig, {"/api/socket", "mkdir -p"}},
      {"ApiSocketTooLong", spec_with(R"("api": {"socket": "/)" + std::string(120, 's') + R"("})"), {run_spec},
       kExitConfig, {"/api/socket", "at most 107"}},
      // ---- host resources
      {"HugepagesShort", spec_with(R"("machine": {"memory_mib": 65536, "hugepages": "2M"})"), {run_spec},
       kExitHost, {"hugepages", "nr_hugepages"}},
  };
}

class BadInputTable : public ::testing::TestWithParam<BadInput> {
 protected:
  void SetUp() override {
    char name[] = "/tmp/skiff-bad-input-XXXXXX";
    ASSERT_NE(mkdtemp(name), nullptr);
    dir_ = name;
    std::ofstream(dir_ / "garbage") << "this is not a kernel image, just text long enough to read a header from";
    // An ELF header that claims program headers past the end of the file.
    std::string elf(64, '\0');
    elf.replace(0, 4, "\x7f" "ELF");
    elf[4] = 2;   // 64-bit
    elf[5] = 1;   // little-endian
    elf[6] = 1;   // version
    elf[16] = 2;  // ET_EXEC
    elf[18] = 62;  // EM_X86_64
    elf[20] = 1;
    elf[32] = 64;  // e_phoff
    elf[52] = 64;  // e_ehsize
    elf[54] = 56;  // e_phentsize
    elf[56] = 4;   // e_phnum: 4 headers that are not there
    std::ofstream(dir_ / "truncated.elf", std::ios::binary) << elf;
    std::ofstream(dir_ / "ok.img", std::ios::binary) << std::string(1 << 16, '\0');
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string expand(const std::string& text) const {
    return replace_all(replace_all(replace_all(text, "{kernel}", SKIFF_TEST_GUEST_ELF), "{dir}", dir_.string()),
                       "{spec}", (dir_ / "vm.json").string());
  }

  std::filesystem::path dir_;
};

TEST_P(BadInputTable, OneClearMessageAndTheExitCode) {
  const BadInput& c = GetParam();
  if (c.needs_root && geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!c.spec.empty()) std::ofstream(dir_ / "vm.json") << expand(c.spec);
  std::vector<std::string> args = {"run"};
  for (const auto& arg : c.args) args.push_back(expand(arg));
  auto run = run_cli(args, std::chrono::seconds(60));
  EXPECT_EQ(run.exit_code, c.exit_code) << run.err;
  if (c.exit_code == kExitUsage && c.message.empty()) {
    EXPECT_FALSE(run.err.empty()) << "a usage error says what is wrong";
    return;
  }
  size_t errors = 0;
  std::string line;
  for (size_t at = run.err.find("skiff: error: "); at != std::string::npos;
       at = run.err.find("skiff: error: ", at + 1)) {
    ++errors;
    line = run.err.substr(at, run.err.find('\n', at) - at);
  }
  EXPECT_EQ(errors, 1u) << "exactly one error line:\n" << run.err;
  for (const auto& fragment : c.message) {
    EXPECT_NE(line.find(expand(fragment)), std::string::npos) << "missing \"" << fragment << "\" in: " << line;
  }
  EXPECT_TRUE(run.out.empty() || run.out.find("SKIFF-GUEST") == std::string::npos)
      << "the guest must not have run:\n" << run.out;
}

INSTANTIATE_TEST_SUITE_P(EveryCase, BadInputTable, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<BadInput>& param_info) {
                           return std::string(param_info.param.name);
                         });

}  // namespace
}  // namespace skiff::test
