// SPDX-License-Identifier: Apache-2.0
#include "cli/console_watch.h"

#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "unit/vmm/console_test_util.h"

namespace skiff::cli {
namespace {

using testing::bytes_of;

std::vector<ConsolePattern> patterns(std::initializer_list<const char*> texts) {
  std::vector<ConsolePattern> out;
  for (const char* text : texts) {
    auto pattern = compile_console_pattern("--expect", text);
    EXPECT_TRUE(pattern.has_value()) << text;
    if (pattern) out.push_back(std::move(*pattern));
  }
  return out;
}

TEST(ConsolePattern, BadRegexNamesTheOptionAndPattern) {
  auto pattern = compile_console_pattern("--fail-on", "a[");
  ASSERT_FALSE(pattern.has_value());
  EXPECT_EQ(pattern.error().kind(), ErrorKind::kConfig);
  EXPECT_NE(pattern.error().message().find("--fail-on \"a[\""), std::string::npos) << pattern.error().message();
  EXPECT_FALSE(compile_console_pattern("--expect", "(unclosed").has_value());
  EXPECT_FALSE(compile_console_pattern("--expect", "*x").has_value());
}

TEST(ConsoleWatch, ExpectationsAreSearchedInEveryLine) {
  ConsoleWatch watch(patterns({"INNER-UP", "^TIER3-NPROC [0-9]+$", "never"}), {});
  EXPECT_EQ(watch.feed(bytes_of("boot\nTIER3-INNER-UP\nTIER3-NPROC 2\n")), std::nullopt);
  EXPECT_FALSE(watch.all_expectations_met());
  EXPECT_EQ(watch.missing_expectations(), (std::vector<std::string>{"never"}));
  auto matches = watch.expectations();
  ASSERT_EQ(matches.size(), 3u);
  ASSERT_TRUE(matches[0].has_value());
  EXPECT_EQ(matches[0]->line, "TIER3-INNER-UP");
  EXPECT_EQ(matches[0]->pattern, "INNER-UP");
  ASSERT_TRUE(matches[1].has_value());
  EXPECT_EQ(matches[1]->line, "TIER3-NPROC 2");
  EXPECT_FALSE(matches[2].has_value());
}

TEST(ConsoleWatch, FirstMatchIsKept) {
  ConsoleWatch watch(patterns({"count=[0-9]"}), {});
  watch.feed(bytes_of("count=1\ncount=2\n"));
  EXPECT_TRUE(watch.all_expectations_met());
  EXPECT_EQ(watch.expectations()[0]->line, "count=1");
}

TEST(ConsoleWatch, AnchorsApplyToLinesWithoutLineEndings) {
  ConsoleWatch watch(patterns({"^done$"}), {});
  watch.feed(bytes_of("done\r\n"));
  EXPECT_TRUE(watch.all_expectations_met());
}

TEST(ConsoleWatch, PatternSplitAcrossChunksMatches) {
  ConsoleWatch watch(patterns({"all tests passed"}), patterns({"FAIL"}));
  EXPECT_EQ(watch.feed(bytes_of("all te")), std::nullopt);
  EXPECT_FALSE(watch.all_expectations_met());
  watch.feed(bytes_of("sts passed\n"));
  EXPECT_TRUE(watch.all_expectations_met());
  EXPECT_EQ(watch.feed(bytes_of("FA")), std::nullopt);
  auto failure = watch.feed(bytes_of("IL: test_foo\n"));
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->line, "FAIL: test_foo");
  EXPECT_EQ(failure->pattern, "FAIL");
}

TEST(ConsoleWatch, FailOnReportsOnce) {
  ConsoleWatch watch({}, patterns({"BUG:", "WARNING:"}));
  auto first = watch.feed(bytes_of("ok\nWARNING: at foo\nBUG: bar\n"));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->line, "WARNING: at foo");
  EXPECT_EQ(first->pattern, "WARNING:");
  EXPECT_EQ(watch.feed(bytes_of("BUG: again\n")), std::nullopt);
  EXPECT_EQ(watch.failure()->line, "WARNING: at foo");
}

TEST(ConsoleWatch, FinishMatchesTheUnfinishedLastLine) {
  ConsoleWatch watch(patterns({"login:"}), patterns({"oops"}));
  watch.feed(bytes_of("welcome\nlogin: "));
  EXPECT_FALSE(watch.all_expectations_met());
  EXPECT_EQ(watch.finish(), std::nullopt);
  EXPECT_TRUE(watch.all_expectations_met());
  EXPECT_EQ(watch.finish(), std::nullopt);  // nothing left
}

TEST(ConsoleWatch, KeepsTheLastLines) {
  ConsoleWatch watch({}, {}, 3);
  watch.feed(bytes_of("1\n2\n3\n4\n5\npartial"));
  EXPECT_EQ(watch.last_lines(), (std::vector<std::string>{"4", "5", "partial"}));
  EXPECT_EQ(watch.lines_seen(), 5u);
  ConsoleWatch none({}, {}, 0);
  none.feed(bytes_of("1\n2\n"));
  EXPECT_TRUE(none.last_lines().empty());
}

// ---- apply_console_verdict -------------------------------------------------------------

TEST(ConsoleVerdict, SuccessNeedsEveryExpectation) {
  ConsoleWatch watch(patterns({"ready", "tests ok"}), {});
  watch.feed(bytes_of("ready\n"));
  VmExit exit = apply_console_verdict(VmExit{StopReason::kGuestPowerOff, 0, "guest powered off"}, watch);
  EXPECT_EQ(exit.exit_code, kExitExpectationMissed);
  EXPECT_EQ(exit.reason, StopReason::kGuestPowerOff) << "the VM's own stop reason stays";
  EXPECT_NE(exit.detail.find("\"tests ok\""), std::string::npos) << exit.detail;
  EXPECT_EQ(exit.detail.find("\"ready\""), std::string::npos) << exit.detail;

  watch.feed(bytes_of("tests ok\n"));
  exit = apply_console_verdict(VmExit{StopReason::kGuestPowerOff, 0, "guest powered off"}, watch);
  EXPECT_EQ(exit.exit_code, 0);
}

TEST(ConsoleVerdict, FailuresKeepTheirOwnCode) {
  ConsoleWatch watch(patterns({"never"}), {});
  EXPECT_EQ(apply_console_verdict(VmExit{StopReason::kDebugExit, 3, "guest wrote 3"}, watch).exit_code, 3);
  EXPECT_EQ(apply_console_verdict(VmExit{StopReason::kTimeout, kExitTimeout, "t"}, watch).exit_code, kExitTimeout);
  EXPECT_EQ(apply_console_verdict(VmExit{StopReason::kGuestPanic, kExitGuestPanic, "p"}, watch).exit_code,
            kExitGuestPanic);
}

TEST(ConsoleVerdict, FailOnMatchFailsASuccess) {
  // The guest powered off right after the failing line: its stop won the race.
  ConsoleWatch watch({}, patterns({"FAIL"}));
  watch.feed(bytes_of("FAIL: x\n"));
  VmExit exit = apply_console_verdict(VmExit{StopReason::kGuestPowerOff, 0, "guest powered off"}, watch);
  EXPECT_EQ(exit.exit_code, kExitConsoleFailure);
  EXPECT_EQ(exit.reason, StopReason::kConsoleFailure);
  EXPECT_NE(exit.detail.find("FAIL: x"), std::string::npos) << exit.detail;
}

TEST(ConsoleVerdict, NoPatternsNoChange) {
  ConsoleWatch watch({}, {});
  watch.feed(bytes_of("anything\n"));
  VmExit exit = apply_console_verdict(VmExit{StopReason::kGuestReboot, 0, "guest reset"}, watch);
  EXPECT_EQ(exit.exit_code, 0);
  EXPECT_EQ(exit.detail, "guest reset");
}

}  // namespace
}  // namespace skiff::cli
