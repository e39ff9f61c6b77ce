// SPDX-License-Identifier: Apache-2.0
// parse_spec: accepted specs, defaults, one negative case per rule, JSON syntax errors,
// spec_to_json round trips and load_spec_file.
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/spec_rules.h"
#include "skiff/spec.h"
#include "unit/config/spec_test_util.h"

namespace skiff {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing_util::spec_with_boot;
using testing_util::spec_with_machine;
using testing_util::spec_with_serial;
using testing_util::spec_with_top;
using testing_util::TempDir;

const std::filesystem::path kBase = "/srv/vms/web01";

constexpr std::string_view kFullSpec = R"({
  "name": "web01",
  "machine": {
    "vcpus": 2,
    "memory_mib": 2048,
    "hugepages": "1G",
    "prefault": true,
    "lock_memory": true,
    "shared_memory": true,
    "vcpu_affinity": [[0], [1, 2]],
    "numa_node": 0
  },
  "boot": {"kernel": "vmlinuz", "initrd": "/boot/initrd.cpio", "cmdline": "console=ttyS0 quiet"},
  "serial": {"mode": "file", "path": "logs/console.log", "input": false},
  "disks": [],
  "nets": [],
  "balloon": null,
  "vsock": null,
  "api": null
})";

TEST(SpecParser, ParsesEveryField) {
  auto spec = parse_spec(kFullSpec, kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->name, "web01");
  EXPECT_EQ(spec->machine.vcpus, 2u);
  EXPECT_EQ(spec->machine.memory_mib, 2048u);
  EXPECT_EQ(spec->machine.hugepages, HugePages::k1G);
  EXPECT_TRUE(spec->machine.prefault);
  EXPECT_TRUE(spec->machine.lock_memory);
  EXPECT_TRUE(spec->machine.shared_memory);
  EXPECT_EQ(spec->machine.vcpu_affinity, (std::vector<std::vector<uint32_t>>{{0}, {1, 2}}));
  EXPECT_EQ(spec->machine.numa_node, 0u);
  EXPECT_EQ(spec->boot.kernel, kBase / "vmlinuz");
  EXPECT_EQ(spec->boot.initrd, "/boot/initrd.cpio");  // absolute: left alone
  EXPECT_EQ(spec->boot.cmdline, "console=ttyS0 quiet");
  EXPECT_EQ(spec->serial.mode, SerialMode::kFile);
  EXPECT_EQ(spec->serial.path, kBase / "logs/console.log");
  EXPECT_FALSE(spec->serial.input);
}

TEST(SpecParser, AppliesDefaults) {
  auto spec = parse_spec(R"({"boot": {"kernel": "vmlinuz"}})", kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  VmSpec defaults;
  EXPECT_EQ(spec->name, "skiff");
  EXPECT_EQ(spec->machine.vcpus, defaults.machine.vcpus);
  EXPECT_EQ(spec->machine.memory_mib, defaults.machine.memory_mib);
  EXPECT_EQ(spec->machine.hugepages, HugePages::kNone);
  EXPECT_FALSE(spec->machine.prefault);
  EXPECT_FALSE(spec->machine.lock_memory);
  EXPECT_FALSE(spec->machine.shared_memory);
  EXPECT_TRUE(spec->machine.vcpu_affinity.empty());
  EXPECT_FALSE(spec->machine.numa_node);
  EXPECT_TRUE(spec->boot.initrd.empty());
  EXPECT_EQ(spec->boot.cmdline, "");
  EXPECT_EQ(spec->serial.mode, SerialMode::kStdout);
  EXPECT_TRUE(spec->serial.path.empty());
  EXPECT_TRUE(spec->serial.input);
}

TEST(SpecParser, EmptyBaseDirLeavesRelativePathsRelative) {
  auto spec = parse_spec(R"({"boot": {"kernel": "vmlinuz"}})", "");
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->boot.kernel, "vmlinuz");
}

TEST(SpecParser, AcceptsNullForOptionalValues) {
  auto spec = parse_spec(
      R"({"boot": {"kernel": "k", "initrd": null}, "machine": {"numa_node": null},
          "serial": {"mode": "stdout", "path": null}})",
      kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_TRUE(spec->boot.initrd.empty());
  EXPECT_FALSE(spec->machine.numa_node);
  EXPECT_TRUE(spec->serial.path.empty());
}

TEST(SpecParser, AcceptsBoundaryValues) {
  EXPECT_TRUE(parse_spec(spec_with_machine(R"("vcpus": 1, "memory_mib": 16)"), kBase));
  EXPECT_TRUE(parse_spec(spec_with_machine(R"("vcpus": 254, "memory_mib": 1048576)"), kBase));
  EXPECT_TRUE(parse_spec(spec_with_machine(R"("hugepages": "2M", "memory_mib": 514)"), kBase));
  EXPECT_TRUE(parse_spec(spec_with_machine(R"("hugepages": "thp", "memory_mib": 513)"), kBase));
  EXPECT_TRUE(parse_spec(spec_with_machine(R"("hugepages": "1G", "memory_mib": 3072)"), kBase));
  EXPECT_TRUE(parse_spec(spec_with_machine(R"("numa_node": 1023)"), kBase));
  EXPECT_TRUE(parse_spec(spec_with_machine(R"("vcpus": 1, "vcpu_affinity": [[1023]])"), kBase));
  EXPECT_TRUE(parse_spec(
      spec_with_boot(fmt::format(R"("kernel": "k", "cmdline": "{}")", std::string(65535, 'a'))),
      kBase));
  EXPECT_TRUE(parse_spec(spec_with_boot(R"("kernel": "k", "cmdline": "a\tb")"), kBase));
  EXPECT_TRUE(parse_spec(spec_with_top(R"("name": "a.b_c-9")"), kBase));
  EXPECT_TRUE(
      parse_spec(spec_with_top(fmt::format(R"("name": "{}")", std::string(64, 'n'))), kBase));
}

TEST(SpecParser, AcceptsEmptyReservedKeys) {
  auto spec =
      parse_spec(spec_with_top(R"("disks": [], "nets": [], "balloon": null, "vsock": null, "api": null)"), kBase);
  EXPECT_TRUE(spec) << spec.error().message();
  EXPECT_TRUE(parse_spec(spec_with_top(R"("disks": null, "nets": null)"), kBase));
}

TEST(SpecParser, SerialInputFalseIsAllowedWithEveryMode) {
  for (std::string_view mode : {"stdout", "none"}) {
    auto spec =
        parse_spec(spec_with_serial(fmt::format(R"("mode": "{}", "input": false)", mode)), kBase);
    ASSERT_TRUE(spec) << spec.error().message();
    EXPECT_FALSE(spec->serial.input);
  }
  auto spec = parse_spec(spec_with_serial(R"("mode": "file", "path": "x", "input": false)"), kBase);
  ASSERT_TRUE(spec) << spec.error().message();
}

TEST(SpecParser, AllErrorsAreConfigErrors) {
  auto spec = parse_spec("{", kBase);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().kind(), ErrorKind::kConfig);
  spec = parse_spec(spec_with_machine(R"("vcpus": 0)"), kBase);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().kind(), ErrorKind::kConfig);
}

// ---- one case per rule: the message must start with the field's JSON pointer ----------

struct RejectCase {
  const char* name;
  std::string text;
  std::string expected_prefix;  // the message starts with this
  std::string expected_detail;  // ...and contains this
};

class SpecParserRejects : public ::testing::TestWithParam<RejectCase> {};

TEST_P(SpecParserRejects, NamesTheField) {
  const RejectCase& test_case = GetParam();
  auto spec = parse_spec(test_case.text, kBase);
  ASSERT_FALSE(spec) << "accepted: " << test_case.text;
  EXPECT_EQ(spec.error().kind(), ErrorKind::kConfig);
  EXPECT_THAT(spec.error().message(), StartsWith(test_case.expected_prefix));
  EXPECT_THAT(spec.error().message(), HasSubstr(test_case.expected_detail));
}

std::vector<RejectCase> reject_cases() {
  return {
      // Document structure.
      {"RootNotObject", "[1, 2]", "/: ", "expected a JSON object, got array"},
      {"UnknownTopKey", spec_with_top(R"("nmae": "x")"),
       "/nmae: ", R"(unknown key (did you mean "name"?))"},
      {"UnknownKeyWithoutSuggestion", spec_with_top(R"("zzzzzzzzzzzz": 1)"),
       "/zzzzzzzzzzzz: ", "unknown key (known keys: name, machine, boot"},
      {"UnknownKeyIsEscaped", spec_with_top(R"("a/b~c": 1)"), "/a~1b~0c: ", "unknown key"},
      {"UnknownKeyWithLineBreak", spec_with_top(R"("a\nb": 1)"), "/a\\u000ab: ", "unknown key"},
      {"DuplicateTopKey", R"({"boot": {"kernel": "k"}, "name": "a", "name": "b"})",
       "/name: ", "duplicate key"},
      {"DuplicateNestedKey", spec_with_machine(R"("vcpus": 1, "vcpus": 2)"),
       "/machine/vcpus: ", "duplicate key"},
      {"NameWrongType", spec_with_top(R"("name": 5)"),
       "/name: ", "expected a string, got integer 5"},
      {"NameEmpty", spec_with_top(R"("name": "")"), "/name: ", "1 to 64 characters"},
      {"NameTooLong", spec_with_top(fmt::format(R"("name": "{}")", std::string(65, 'n'))),
       "/name: ", "1 to 64 characters"},
      {"NameBadCharacter", spec_with_top(R"("name": "web 01")"),
       "/name: ", "contains character 0x20"},
      {"MachineNotObject", spec_with_top(R"("machine": [])"),
       "/machine: ", "expected an object, got array"},
      {"BootMissing", R"({"name": "x"})", "/boot: ", "is required"},
      {"BootNotObject", R"({"boot": "vmlinuz"})", "/boot: ", "expected an object, got string"},
      {"SerialNotObject", spec_with_top(R"("serial": "stdout")"),
       "/serial: ", "expected an object, got string"},

      // machine
      {"MachineUnknownKey", spec_with_machine(R"("vcpu": 2)"),
       "/machine/vcpu: ", R"(unknown key (did you mean "vcpus"?))"},
      {"MachineUnknownKeyMemory", spec_with_machine(R"("memory": 2)"),
       "/machine/memory: ", R"(did you mean "memory_mib"?)"},
      {"VcpusString", spec_with_machine(R"("vcpus": "2")"),
       "/machine/vcpus: ", "expected an unsigned integer, got string"},
      {"VcpusNegative", spec_with_machine(R"("vcpus": -1)"),
       "/machine/vcpus: ", "expected an unsigned integer, got negative integer -1"},
      {"VcpusFloat", spec_with_machine(R"("vcpus": 2.5)"),
       "/machine/vcpus: ", "expected an unsigned integer, got number 2.5"},
      {"VcpusBoolean", spec_with_machine(R"("vcpus": true)"),
       "/machine/vcpus: ", "got boolean true"},
      {"VcpusAboveUint32", spec_with_machine(R"("vcpus": 4294967296)"),
       "/machine/vcpus: ", "out of range"},
      {"VcpusZero", spec_with_machine(R"("vcpus": 0)"),
       "/machine/vcpus: ", "must be between 1 and 254"},
      {"VcpusAboveMax", spec_with_machine(R"("vcpus": 255)"),
       "/machine/vcpus: ", "must be between 1 and 254"},
      {"MemoryString", spec_with_machine(R"("memory_mib": "512M")"),
       "/machine/memory_mib: ", "expected an unsigned integer, got string"},
      {"MemoryTooSmall", spec_with_machine(R"("memory_mib": 15)"),
       "/machine/memory_mib: ", "must be between 16 and 1048576"},
      {"MemoryTooLarge", spec_with_machine(R"("memory_mib": 1048577)"),
       "/machine/memory_mib: ", "must be between 16 and 1048576"},
      {"HugepagesWrongType", spec_with_machine(R"("hugepages": true)"),
       "/machine/hugepages: ", "expected a string, got boolean true"},
      {"HugepagesUnknown", spec_with_machine(R"("hugepages": "4M")"),
       "/machine/hugepages: ", R"(unknown value "4M")"},
      {"Hugepages2MOddMemory", spec_with_machine(R"("hugepages": "2M", "memory_mib": 513)"),
       "/machine/memory_mib: ", "use 512 or 514"},
      {"Hugepages1GUnaligned", spec_with_machine(R"("hugepages": "1G", "memory_mib": 1500)"),
       "/machine/memory_mib: ", "use 1024 or 2048"},
      {"Hugepages1GBelowOnePage", spec_with_machine(R"("hugepages": "1G", "memory_mib": 512)"),
       "/machine/memory_mib: ", "; use 1024"},
      {"PrefaultWrongType", spec_with_machine(R"("prefault": 1)"),
       "/machine/prefault: ", "expected a boolean, got integer 1"},
      {"LockMemoryWrongType", spec_with_machine(R"("lock_memory": "yes")"),
       "/machine/lock_memory: ", "expected a boolean, got string"},
      {"SharedMemoryWrongType", spec_with_machine(R"("shared_memory": null)"),
       "/machine/shared_memory: ", "expected a boolean, got null"},
      {"AffinityNotArray", spec_with_machine(R"("vcpu_affinity": {})"),
       "/machine/vcpu_affinity: ", "expected an array of arrays"},
      {"AffinityEntryNotArray", spec_with_machine(R"("vcpus": 2, "vcpu_affinity": [[0], 1])"),
       "/machine/vcpu_affinity/1: ", "expected an array of host CPU numbers, got integer 1"},
      {"AffinityCpuNotUnsigned", spec_with_machine(R"("vcpu_affinity": [["0"]])"),
       "/machine/vcpu_affinity/0/0: ", "expected an unsigned integer, got string"},
      {"AffinityCpuNegative", spec_with_machine(R"("vcpu_affinity": [[-3]])"),
       "/machine/vcpu_affinity/0/0: ", "got negative integer -3"},
      {"AffinityWrongCount", spec_with_machine(R"("vcpus": 2, "vcpu_affinity": [[0]])"),
       "/machine/vcpu_affinity: ", "has 1 entries but machine.vcpus is 2"},
      {"AffinityEmptyList", spec_with_machine(R"("vcpus": 2, "vcpu_affinity": [[0], []])"),
       "/machine/vcpu_affinity/1: ", "is empty"},
      {"AffinityCpuTooLarge", spec_with_machine(R"("vcpu_affinity": [[0, 1024]])"),
       "/machine/vcpu_affinity/0/1: ", "host CPU 1024 is out of range: must be below 1024"},
      {"AffinityCpuTwice", spec_with_machine(R"("vcpu_affinity": [[3, 4, 3]])"),
       "/machine/vcpu_affinity/0/2: ", "host CPU 3 is listed twice"},
      {"NumaNodeWrongType", spec_with_machine(R"("numa_node": "0")"),
       "/machine/numa_node: ", "expected an unsigned integer or null, got string"},
      {"NumaNodeTooLarge", spec_with_machine(R"("numa_node": 1024)"),
       "/machine/numa_node: ", "must be at most 1023"},

      // boot
      {"BootUnknownKey", spec_with_boot(R"("kernal": "k")"),
       "/boot/kernal: ", R"(did you mean "kernel"?)"},
      {"KernelMissing", spec_with_boot(R"("cmdline": "x")"), "/boot/kernel: ", "is required"},
      {"KernelNull", spec_with_boot(R"("kernel": null)"), "/boot/kernel: ", "is required"},
      {"KernelEmpty", spec_with_boot(R"("kernel": "")"), "/boot/kernel: ", "is required"},
      {"KernelWrongType", spec_with_boot(R"("kernel": 7)"),
       "/boot/kernel: ", "expected a string, got integer 7"},
      {"KernelNul", spec_with_boot(R"("kernel": "vm\u0000linuz")"),
       "/boot/kernel: ", "NUL character"},
      {"InitrdWrongType", spec_with_boot(R"("kernel": "k", "initrd": ["a"])"),
       "/boot/initrd: ", "expected a string or null, got array"},
      {"InitrdEmpty", spec_with_boot(R"("kernel": "k", "initrd": "")"),
       "/boot/initrd: ", "is an empty string"},
      {"CmdlineWrongType", spec_with_boot(R"("kernel": "k", "cmdline": ["a"])"),
       "/boot/cmdline: ", "expected a string, got array"},
      {"CmdlineTooLong",
       spec_with_boot(fmt::format(R"("kernel": "k", "cmdline": "{}")", std::string(65536, 'a'))),
       "/boot/cmdline: ", "is 65536 bytes long; the maximum is 65535 bytes"},
      {"CmdlineNewline", spec_with_boot(R"("kernel": "k", "cmdline": "a\nb")"),
       "/boot/cmdline: ", "contains a line break at byte 1"},
      {"CmdlineCarriageReturn", spec_with_boot(R"("kernel": "k", "cmdline": "ab\r")"),
       "/boot/cmdline: ", "contains a line break at byte 2"},
      {"CmdlineNul", spec_with_boot(R"("kernel": "k", "cmdline": "a\u0000b")"),
       "/boot/cmdline: ", "contains a NUL character at byte 1"},

      // serial
      {"SerialUnknownKey", spec_with_serial(R"("mdoe": "file")"),
       "/serial/mdoe: ", R"(did you mean "mode"?)"},
      {"SerialModeWrongType", spec_with_serial(R"("mode": 1)"),
       "/serial/mode: ", "expected a string, got integer 1"},
      {"SerialModeUnknown", spec_with_serial(R"("mode": "pty")"),
       "/serial/mode: ", R"(unknown value "pty")"},
      {"SerialFileWithoutPath", spec_with_serial(R"("mode": "file", "input": false)"),
       "/serial/path: ", R"(is required when serial.mode is "file")"},
      {"SerialPathWithStdout", spec_with_serial(R"("path": "log")"),
       "/serial/path: ", R"(but the mode is "stdout")"},
      {"SerialPathWithNone", spec_with_serial(R"("mode": "none", "path": "log", "input": false)"),
       "/serial/path: ", R"(but the mode is "none")"},
      {"SerialPathWrongType", spec_with_serial(R"("mode": "file", "path": 3)"),
       "/serial/path: ", "expected a string or null, got integer 3"},
      {"SerialPathEmpty", spec_with_serial(R"("mode": "file", "path": "")"),
       "/serial/path: ", "is an empty string"},
      {"SerialPathNul", spec_with_serial(R"("mode": "file", "path": "a\u0000")"),
       "/serial/path: ", "NUL character"},
      {"SerialInputWrongType", spec_with_serial(R"("input": "yes")"),
       "/serial/input: ", "expected a boolean, got string"},
      {"SerialInputWithFile", spec_with_serial(R"("mode": "file", "path": "log", "input": true)"),
       "/serial/input: ", R"(has no effect with serial.mode "file")"},
      {"SerialInputWithNone", spec_with_serial(R"("mode": "none", "input": true)"),
       "/serial/input: ", R"(has no effect with serial.mode "none")"},

      // device lists
      {"DisksWrongType", spec_with_top(R"("disks": {})"),
       "/disks: ", "expected an array of objects, got object"},
      {"NetsWrongType", spec_with_top(R"("nets": "tap0")"),
       "/nets: ", "expected an array of objects, got string"},
  };
}

INSTANTIATE_TEST_SUITE_P(SpecEveryRule, SpecParserRejects, ::testing::ValuesIn(reject_cases()),
                         [](const ::testing::TestParamInfo<RejectCase>& param_info) {
                           return std::string(param_info.param.name);
                         });

// ---- JSON syntax errors --------------------------------------------------------------

TEST(SpecParserSyntax, ReportsLineAndColumn) {
  auto spec = parse_spec("{\n  \"name\": ,\n  \"boot\": {}\n}", kBase);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().kind(), ErrorKind::kConfig);
  EXPECT_THAT(spec.error().message(), StartsWith("invalid JSON at line 2, column 11: "));
  EXPECT_THAT(spec.error().message(), HasSubstr("unexpected ','"));
  EXPECT_THAT(spec.error().message(), ::testing::Not(HasSubstr("json.exception")));
}

TEST(SpecParserSyntax, ReportsPositionOnLaterLine) {
  auto spec = parse_spec("{\n\"boot\": {\"kernel\": \"k\"},\n\"name\": tru}", kBase);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), StartsWith("invalid JSON at line 3, column 12: "));
}

TEST(SpecParserSyntax, EmptyText) {
  auto spec = parse_spec("", kBase);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), StartsWith("invalid JSON at line 1, column 1: "));
  EXPECT_THAT(spec.error().message(), HasSubstr("end of input"));
}

TEST(SpecParserSyntax, TrailingGarbage) {
  auto spec = parse_spec(R"({"boot": {"kernel": "k"}} x)", kBase);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), StartsWith("invalid JSON at line 1, column 27: "));
}

TEST(SpecParserSyntax, NumberOverflow) {
  auto spec = parse_spec(spec_with_machine(R"("memory_mib": 1e400)"), kBase);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().kind(), ErrorKind::kConfig);
  EXPECT_THAT(spec.error().message(), StartsWith("invalid JSON: "));
}

TEST(SpecParserSyntax, HugeIntegerIsATypeError) {
  // Integers beyond uint64 become doubles in nlohmann::json.
  auto spec = parse_spec(spec_with_machine(R"("memory_mib": 99999999999999999999)"), kBase);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), StartsWith("/machine/memory_mib: expected an unsigned"));
}

TEST(SpecParserSyntax, RejectsDeepNesting) {
  std::string nested = std::string(100000, '[') + std::string(100000, ']');
  auto spec = parse_spec(spec_with_top(fmt::format(R"("disks": {})", nested)), kBase);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), StartsWith("/disks/0/0/0/"));
  EXPECT_THAT(spec.error().message(), HasSubstr("nested deeper than 64 levels"));
}

TEST(SpecParserSyntax, DuplicateKeyInsideAnArray) {
  auto spec =
      parse_spec(spec_with_top(R"("nets": [], "disks": [{}, {"a": 1, "b": [], "a": 2}])"), kBase);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), StartsWith("/disks/1/a: duplicate key"));
}

TEST(SpecParserSyntax, InvalidUtf8) {
  auto spec = parse_spec("{\"name\": \"\xff\"}", kBase);
  ASSERT_FALSE(spec);
  EXPECT_THAT(spec.error().message(), StartsWith("invalid JSON at line 1, column 11: "));
}

// ---- spec_to_json ----------------------------------------------------------------------

void expect_same_spec(const VmSpec& a, const VmSpec& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.machine.vcpus, b.machine.vcpus);
  EXPECT_EQ(a.machine.memory_mib, b.machine.memory_mib);
  EXPECT_EQ(a.machine.hugepages, b.machine.hugepages);
  EXPECT_EQ(a.machine.prefault, b.machine.prefault);
  EXPECT_EQ(a.machine.lock_memory, b.machine.lock_memory);
  EXPECT_EQ(a.machine.shared_memory, b.machine.shared_memory);
  EXPECT_EQ(a.machine.vcpu_affinity, b.machine.vcpu_affinity);
  EXPECT_EQ(a.machine.numa_node, b.machine.numa_node);
  EXPECT_EQ(a.boot.kernel, b.boot.kernel);
  EXPECT_EQ(a.boot.initrd, b.boot.initrd);
  EXPECT_EQ(a.boot.cmdline, b.boot.cmdline);
  EXPECT_EQ(a.serial.mode, b.serial.mode);
  EXPECT_EQ(a.serial.path, b.serial.path);
  EXPECT_EQ(a.serial.input, b.serial.input);
  EXPECT_EQ(a.machine.mmio_cmdline, b.machine.mmio_cmdline);
  EXPECT_EQ(a.rng.has_value(), b.rng.has_value());
  if (a.rng && b.rng) {
    EXPECT_EQ(a.rng->transport, b.rng->transport);
  }
  EXPECT_EQ(a.disks, b.disks);
  EXPECT_EQ(a.nets, b.nets);
  EXPECT_EQ(a.balloon, b.balloon);
  EXPECT_EQ(a.vsock, b.vsock);
  EXPECT_EQ(a.api, b.api);
}

void expect_round_trip(const VmSpec& spec) {
  std::string text = spec_to_json(spec);
  // A different base directory must not matter: the output's paths are as stored.
  auto again = parse_spec(text, "/elsewhere");
  ASSERT_TRUE(again) << again.error().message() << "\n" << text;
  expect_same_spec(spec, *again);
}

TEST(SpecToJson, RoundTripsAFullSpec) {
  auto spec = parse_spec(kFullSpec, kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  expect_round_trip(*spec);
}

TEST(SpecToJson, RoundTripsDefaults) {
  VmSpec spec;
  spec.boot.kernel = "/boot/vmlinuz";
  expect_round_trip(spec);
}

TEST(SpecToJson, RoundTripsEverySerialMode) {
  VmSpec spec;
  spec.boot.kernel = "/k";
  for (bool input : {true, false}) {
    spec.serial = SerialSpec{SerialMode::kStdout, "", input};
    expect_round_trip(spec);
    // Built in code, file and none keep the default input = true, which JSON cannot say.
    spec.serial = SerialSpec{SerialMode::kFile, "/var/log/vm.log", input};
    expect_round_trip(spec);
    spec.serial = SerialSpec{SerialMode::kNone, "", input};
    expect_round_trip(spec);
  }
}

TEST(SpecToJson, RoundTripsSpecialCharacters) {
  VmSpec spec;
  spec.boot.kernel = "/path with spaces/\"quoted\"/vmlinuz";
  spec.boot.cmdline = "console=ttyS0 init=/bin/sh -- \"arg\" \\ \t é";
  spec.machine.numa_node = 3;
  spec.machine.hugepages = HugePages::kTransparent;
  expect_round_trip(spec);
}

TEST(SpecToJson, WritesEveryFieldInDocumentedOrder) {
  VmSpec spec;
  spec.boot.kernel = "/k";
  std::string text = spec_to_json(spec);
  for (std::string_view key :
       {"\"name\"", "\"machine\"", "\"vcpus\"", "\"memory_mib\"", "\"hugepages\"", "\"prefault\"",
        "\"lock_memory\"", "\"shared_memory\"", "\"vcpu_affinity\"", "\"numa_node\"", "\"boot\"",
        "\"kernel\"", "\"initrd\"", "\"cmdline\"", "\"serial\"", "\"mode\"", "\"path\"",
        "\"input\""}) {
    EXPECT_THAT(text, HasSubstr(key));
  }
  EXPECT_LT(text.find("\"name\""), text.find("\"machine\""));
  EXPECT_LT(text.find("\"machine\""), text.find("\"boot\""));
  EXPECT_LT(text.find("\"boot\""), text.find("\"serial\""));
}

TEST(SpecToString, NamesMatchTheJsonValues) {
  EXPECT_EQ(to_string(HugePages::kNone), "none");
  EXPECT_EQ(to_string(HugePages::kTransparent), "thp");
  EXPECT_EQ(to_string(HugePages::k2M), "2M");
  EXPECT_EQ(to_string(HugePages::k1G), "1G");
  EXPECT_EQ(to_string(SerialMode::kStdout), "stdout");
  EXPECT_EQ(to_string(SerialMode::kFile), "file");
  EXPECT_EQ(to_string(SerialMode::kNone), "none");
}

// ---- load_spec_file --------------------------------------------------------------------

TEST(SpecLoadFile, MissingFile) {
  TempDir dir;
  auto missing = dir.path() / "x.json";
  auto spec = load_spec_file(missing);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().kind(), ErrorKind::kConfig);
  EXPECT_EQ(spec.error().message(),
            fmt::format("spec file \"{}\": No such file or directory", missing.string()));
}

TEST(SpecLoadFile, Directory) {
  TempDir dir;
  auto spec = load_spec_file(dir.path());
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().kind(), ErrorKind::kConfig);
  EXPECT_THAT(spec.error().message(), HasSubstr("Is a directory"));
}

TEST(SpecLoadFile, ResolvesRelativePathsAgainstTheFilesDirectory) {
  TempDir dir;
  auto file = dir.write("vm.json", R"({"boot": {"kernel": "vmlinuz", "initrd": "../initrd"},
                                       "serial": {"mode": "file", "path": "console.log",
                                                  "input": false}})");
  auto spec = load_spec_file(file);
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->boot.kernel, dir.path() / "vmlinuz");
  EXPECT_EQ(spec->boot.initrd, dir.path() / "../initrd");
  EXPECT_EQ(spec->serial.path, dir.path() / "console.log");
}

TEST(SpecLoadFile, PrefixesParseErrorsWithTheFileName) {
  TempDir dir;
  auto file = dir.write("vm.json", R"({"boot": {"kernel": "k"}, "machine": {"vcpus": 0}})");
  auto spec = load_spec_file(file);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().kind(), ErrorKind::kConfig);
  EXPECT_THAT(spec.error().message(),
              StartsWith(fmt::format("spec file \"{}\": /machine/vcpus: ", file.string())));
}

// ---- private helpers -------------------------------------------------------------------

TEST(SpecRules, EscapesPointerTokens) {
  EXPECT_EQ(config::escape_pointer_token("a/b~c"), "a~1b~0c");
  EXPECT_EQ(config::escape_pointer_token("plain"), "plain");
}

TEST(SpecRules, MakesControlCharactersPrintable) {
  EXPECT_EQ(config::printable("a\nb\x7f"), "a\\u000ab\\u007f");
  EXPECT_EQ(config::escape_pointer_token("a\tb/"), "a\\u0009b~1");
}

TEST(SpecRules, SuggestsCloseKeysOnly) {
  constexpr std::array<std::string_view, 3> kKeys = {"vcpus", "memory_mib", "hugepages"};
  EXPECT_EQ(config::closest_key("vcpu", kKeys), "vcpus");
  EXPECT_EQ(config::closest_key("VCPUS", kKeys), "vcpus");
  EXPECT_EQ(config::closest_key("memory_mb", kKeys), "memory_mib");
  EXPECT_EQ(config::closest_key("huge", kKeys), "hugepages");
  EXPECT_EQ(config::closest_key("colour", kKeys), std::nullopt);
}

TEST(SpecRules, ParsesSysfsCpuLists) {
  EXPECT_EQ(config::parse_cpu_list("0-3\n"), (std::vector<uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(config::parse_cpu_list("0,2-3,7"), (std::vector<uint32_t>{0, 2, 3, 7}));
  EXPECT_EQ(config::parse_cpu_list("5"), (std::vector<uint32_t>{5}));
  EXPECT_EQ(config::parse_cpu_list("\n"), (std::vector<uint32_t>{}));
  EXPECT_EQ(config::parse_cpu_list("3-1"), std::nullopt);
  EXPECT_EQ(config::parse_cpu_list("0-99999"), std::nullopt);
  EXPECT_EQ(config::parse_cpu_list("a"), std::nullopt);
  EXPECT_EQ(config::parse_cpu_list("1,,2"), std::nullopt);
}

}  // namespace
}  // namespace skiff

namespace skiff {
namespace {

TEST(SpecRng, AbsentByDefaultAndMmioWhenAsked) {
  auto none = parse_spec(testing_util::spec_with_top(R"("rng": null)"), kBase);
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(none->rng);
  auto mmio = parse_spec(testing_util::spec_with_top(R"("rng": {"transport": "mmio"}, "machine": {"mmio_cmdline": true})"), kBase);
  ASSERT_TRUE(mmio) << mmio.error().message();
  ASSERT_TRUE(mmio->rng);
  EXPECT_EQ(mmio->rng->transport, VirtioTransport::kMmio);
  EXPECT_TRUE(mmio->machine.mmio_cmdline);
  expect_round_trip(*mmio);
}

TEST(SpecRng, PciIsTheDefaultTransport) {
  for (std::string_view members : {R"("rng": {})", R"("rng": {"transport": "pci"})"}) {
    auto spec = parse_spec(testing_util::spec_with_top(members), kBase);
    ASSERT_TRUE(spec) << spec.error().message();
    ASSERT_TRUE(spec->rng);
    EXPECT_EQ(spec->rng->transport, VirtioTransport::kPci);
    expect_round_trip(*spec);
  }
}

TEST(SpecRng, BadValues) {
  auto unknown = parse_spec(testing_util::spec_with_top(R"("rng": {"transport": "usb"})"), kBase);
  ASSERT_FALSE(unknown);
  EXPECT_THAT(unknown.error().message(), StartsWith("/rng/transport: unknown value \"usb\""));
  auto wrong_type = parse_spec(testing_util::spec_with_top(R"("rng": {"transport": 1})"), kBase);
  ASSERT_FALSE(wrong_type);
  EXPECT_THAT(wrong_type.error().message(), StartsWith("/rng/transport: "));
  auto extra = parse_spec(testing_util::spec_with_top(R"("rng": {"transport": "mmio", "rate": 5})"), kBase);
  ASSERT_FALSE(extra);
  EXPECT_THAT(extra.error().message(), StartsWith("/rng/rate: unknown key"));
  auto not_object = parse_spec(testing_util::spec_with_top(R"("rng": true)"), kBase);
  ASSERT_FALSE(not_object);
  EXPECT_THAT(not_object.error().message(), StartsWith("/rng: "));
  auto bad_flag = parse_spec(testing_util::spec_with_top(R"("machine": {"mmio_cmdline": "yes"})"), kBase);
  ASSERT_FALSE(bad_flag);
  EXPECT_THAT(bad_flag.error().message(), StartsWith("/machine/mmio_cmdline: "));
}

}  // namespace
}  // namespace skiff
