// SPDX-License-Identifier: Apache-2.0
#include "config/spec_overrides.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace skiff::config {
namespace {

using ::testing::HasSubstr;

TEST(SpecMemorySize, AcceptsMiBAndGiB) {
  EXPECT_EQ(parse_memory_size("512"), 512u);
  EXPECT_EQ(parse_memory_size("512M"), 512u);
  EXPECT_EQ(parse_memory_size("512MiB"), 512u);
  EXPECT_EQ(parse_memory_size("512m"), 512u);
  EXPECT_EQ(parse_memory_size("512mib"), 512u);
  EXPECT_EQ(parse_memory_size("2G"), 2048u);
  EXPECT_EQ(parse_memory_size("2GiB"), 2048u);
  EXPECT_EQ(parse_memory_size("2g"), 2048u);
  EXPECT_EQ(parse_memory_size("1T"), 1048576u);
  EXPECT_EQ(parse_memory_size("1TiB"), 1048576u);
  EXPECT_EQ(parse_memory_size("0016"), 16u);
  EXPECT_EQ(parse_memory_size("18446744073709551615"), UINT64_MAX);
}

TEST(SpecMemorySize, Rejects) {
  for (std::string_view text : {"",
                                "0",
                                "0G",
                                "M",
                                "G",
                                "-512",
                                "+512",
                                " 512",
                                "512 ",
                                "512MB",
                                "2GB",
                                "512K",
                                "512KiB",
                                "1.5G",
                                "0x200",
                                "512MiBs",
                                "abc",
                                "2 G",
                                "18446744073709551616",
                                "18014398509481984G",
                                "99999999999999999999999"}) {
    auto result = parse_memory_size(text);
    ASSERT_FALSE(result) << "accepted \"" << text << "\" as " << *result;
    EXPECT_EQ(result.error().kind(), ErrorKind::kConfig);
    EXPECT_THAT(result.error().message(),
                HasSubstr(std::string("memory size \"") + std::string(text) + "\": "));
  }
}

TEST(SpecMemorySize, ExplainsTheProblem) {
  EXPECT_THAT(parse_memory_size("0").error().message(), HasSubstr("greater than zero"));
  EXPECT_THAT(parse_memory_size("99999999999999999999").error().message(), HasSubstr("too large"));
  EXPECT_THAT(parse_memory_size("18014398509481984G").error().message(), HasSubstr("too large"));
  EXPECT_THAT(parse_memory_size("4MB").error().message(), HasSubstr("unknown unit \"MB\""));
  EXPECT_THAT(parse_memory_size("4K").error().message(), HasSubstr("whole MiB"));
  EXPECT_THAT(parse_memory_size("x").error().message(), HasSubstr("expected a number"));
}

TEST(SpecOverrides, SetFieldsReplaceTheSpecs) {
  VmSpec spec;
  spec.boot.kernel = "/spec/vmlinuz";
  spec.boot.cmdline = "console=ttyS0";
  spec.machine.vcpus = 4;
  SpecOverrides overrides;
  overrides.kernel = "/flag/bzImage";
  overrides.initrd = "/flag/initrd";
  overrides.memory = "2G";
  ASSERT_TRUE(apply_spec_overrides(overrides, spec));
  EXPECT_EQ(spec.boot.kernel, "/flag/bzImage");
  EXPECT_EQ(spec.boot.initrd, "/flag/initrd");
  EXPECT_EQ(spec.machine.memory_mib, 2048u);
  // Not overridden: the spec's own values stay.
  EXPECT_EQ(spec.boot.cmdline, "console=ttyS0");
  EXPECT_EQ(spec.machine.vcpus, 4u);
  EXPECT_FALSE(spec.balloon);
  EXPECT_EQ(spec.serial.mode, SerialMode::kStdout);
  EXPECT_TRUE(spec.serial.input);
}

TEST(SpecOverrides, BalloonTargetAddsABalloon) {
  VmSpec spec;
  SpecOverrides overrides;
  overrides.balloon_target = "256M";
  ASSERT_TRUE(apply_spec_overrides(overrides, spec));
  ASSERT_TRUE(spec.balloon);
  EXPECT_EQ(spec.balloon->target_mib, 256u);
  // "0" is an empty balloon, which parse_memory_size alone refuses.
  overrides.balloon_target = "0";
  ASSERT_TRUE(apply_spec_overrides(overrides, spec));
  EXPECT_EQ(spec.balloon->target_mib, 0u);
}

TEST(SpecOverrides, ConsoleToStdoutStopsInput) {
  VmSpec spec;
  spec.serial.mode = SerialMode::kFile;
  spec.serial.path = "/var/log/vm.log";
  SpecOverrides overrides;
  overrides.console_to_stdout = true;
  ASSERT_TRUE(apply_spec_overrides(overrides, spec));
  EXPECT_EQ(spec.serial.mode, SerialMode::kStdout);
  EXPECT_FALSE(spec.serial.input);
}

TEST(SpecOverrides, ErrorsNameTheFlag) {
  VmSpec spec;
  SpecOverrides memory;
  memory.memory = "5x";
  auto result = apply_spec_overrides(memory, spec);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().kind(), ErrorKind::kConfig);
  EXPECT_THAT(result.error().message(), HasSubstr("--memory: memory size \"5x\""));
  SpecOverrides balloon;
  balloon.balloon_target = "1.5G";
  EXPECT_THAT(apply_spec_overrides(balloon, spec).error().message(), HasSubstr("--balloon-target: "));
}

}  // namespace
}  // namespace skiff::config
