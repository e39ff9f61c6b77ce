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

}  // namespace
}  // namespace skiff::config
