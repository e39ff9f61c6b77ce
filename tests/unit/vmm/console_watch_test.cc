// SPDX-License-Identifier: Apache-2.0
#include "vmm/console_watch.h"

#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace skiff {
namespace {

std::span<const uint8_t> bytes_of(std::string_view text) {
  // SAFETY: char and uint8_t have the same size and alignment; the span only reads.
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

std::vector<std::string> split(ConsoleLineSplitter& splitter, std::string_view text) {
  std::vector<std::string> lines;
  splitter.feed(bytes_of(text), [&](std::string_view line) { lines.emplace_back(line); });
  return lines;
}

// ---- ConsoleLineSplitter ---------------------------------------------------------------

TEST(ConsoleLineSplitter, CompleteLines) {
  ConsoleLineSplitter splitter;
  EXPECT_EQ(split(splitter, "one\ntwo\n"), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(splitter.partial(), "");
}

TEST(ConsoleLineSplitter, LineSplitAcrossChunks) {
  ConsoleLineSplitter splitter;
  EXPECT_TRUE(split(splitter, "Kernel pa").empty());
  EXPECT_EQ(splitter.partial(), "Kernel pa");
  EXPECT_TRUE(split(splitter, "nic - not").empty());
  EXPECT_EQ(split(splitter, " syncing\nnext"), (std::vector<std::string>{"Kernel panic - not syncing"}));
  EXPECT_EQ(splitter.partial(), "next");
}

TEST(ConsoleLineSplitter, ByteByByte) {
  ConsoleLineSplitter splitter;
  std::vector<std::string> lines;
  for (char c : std::string_view("a\r\nbc\n\nd\n")) {
    auto more = split(splitter, std::string_view(&c, 1));
    lines.insert(lines.end(), more.begin(), more.end());
  }
  EXPECT_EQ(lines, (std::vector<std::string>{"a", "bc", "", "d"}));
}

TEST(ConsoleLineSplitter, CarriageReturnOnlyBeforeNewlineIsDropped) {
  ConsoleLineSplitter splitter;
  EXPECT_EQ(split(splitter, "a\rb\r\n"), (std::vector<std::string>{"a\rb"}));
  // "\r" at the end of one chunk, "\n" at the start of the next.
  EXPECT_TRUE(split(splitter, "c\r").empty());
  EXPECT_EQ(split(splitter, "\n"), (std::vector<std::string>{"c"}));
}

TEST(ConsoleLineSplitter, OverlongLinesAreCut) {
  ConsoleLineSplitter splitter;
  const std::string big(ConsoleLineSplitter::kMaxLineBytes * 2 + 10, 'x');
  auto lines = split(splitter, big + "\n");
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].size(), ConsoleLineSplitter::kMaxLineBytes);
  EXPECT_EQ(lines[1].size(), ConsoleLineSplitter::kMaxLineBytes);
  EXPECT_EQ(lines[2].size(), 10u);
}

TEST(ConsoleLineSplitter, TakePartial) {
  ConsoleLineSplitter splitter;
  split(splitter, "done\nlast words\r");
  EXPECT_EQ(splitter.take_partial(), std::optional<std::string>("last words"));
  EXPECT_EQ(splitter.take_partial(), std::nullopt);
}

TEST(ConsoleLineSplitter, NulBytesStayInTheLine) {
  ConsoleLineSplitter splitter;
  const std::string text("a\0b\n", 4);
  auto lines = split(splitter, text);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], std::string("a\0b", 3));
}

// ---- KernelPanicWatch ------------------------------------------------------------------

constexpr std::string_view kPanicLog =
    "[    5.512345] sysrq: Trigger a crash\n"
    "[    5.512400] Kernel panic - not syncing: sysrq triggered crash\n"
    "[    5.512500] CPU: 0 PID: 1 Comm: sh Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.158-1\n"
    "[    5.512600] Call Trace:\n";

TEST(KernelPanicWatch, BannerAloneDoesNotStop) {
  KernelPanicWatch watch;
  EXPECT_EQ(watch.feed(bytes_of(kPanicLog)), std::nullopt);
  EXPECT_TRUE(watch.panicked());
  EXPECT_EQ(watch.banner(), std::optional<std::string>("Kernel panic - not syncing: sysrq triggered crash"));
}

TEST(KernelPanicWatch, EndBannerStops) {
  // panic=0: the kernel prints the end banner and spins.
  KernelPanicWatch watch;
  watch.feed(bytes_of(kPanicLog));
  auto stop = watch.feed(bytes_of("[    5.6] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n"));
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->reason, StopReason::kGuestPanic);
  EXPECT_EQ(stop->exit_code, kExitGuestPanic);
  EXPECT_EQ(stop->detail, "guest kernel panicked: Kernel panic - not syncing: sysrq triggered crash");
  // Only once.
  EXPECT_EQ(watch.feed(bytes_of("---[ end Kernel panic - not syncing: again ]---\n")), std::nullopt);
}

TEST(KernelPanicWatch, RebootingLineStopsWithoutWaiting) {
  // panic=N > 0: "Rebooting in N seconds.." and then N seconds of nothing.
  KernelPanicWatch watch;
  watch.feed(bytes_of(kPanicLog));
  auto stop = watch.feed(bytes_of("[    5.7] Rebooting in 10 seconds..\n"));
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->reason, StopReason::kGuestPanic);
}

TEST(KernelPanicWatch, RebootingWithoutABannerIsNothing) {
  KernelPanicWatch watch;
  EXPECT_EQ(watch.feed(bytes_of("Rebooting in 5 seconds..\n")), std::nullopt);
  EXPECT_FALSE(watch.panicked());
}

TEST(KernelPanicWatch, EndBannerAloneIsAPanic) {
  KernelPanicWatch watch;
  auto stop = watch.feed(bytes_of("[ 9.0] ---[ end Kernel panic - not syncing: Fatal exception ]---\n"));
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->detail, "guest kernel panicked: Kernel panic - not syncing: Fatal exception");
  EXPECT_TRUE(watch.panicked());
}

TEST(KernelPanicWatch, BannerSplitAcrossChunks) {
  KernelPanicWatch watch;
  const std::string_view text = "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n";
  for (size_t i = 0; i < text.size(); i += 3) watch.feed(bytes_of(text.substr(i, 3)));
  EXPECT_EQ(watch.banner(), std::optional<std::string>("Kernel panic - not syncing: VFS: Unable to mount root fs"));
}

TEST(KernelPanicWatch, FeedLine) {
  KernelPanicWatch watch;
  EXPECT_EQ(watch.feed_line("Kernel panic - not syncing: Attempted to kill init!"), std::nullopt);
  EXPECT_TRUE(watch.feed_line("---[ end Kernel panic - not syncing: Attempted to kill init! ]---").has_value());
}

TEST(KernelPanicWatch, ResetAfterTheBannerIsAPanic) {
  // panic=-1: the kernel resets at once; the reset is how the panic ends, not a verdict.
  KernelPanicWatch watch;
  watch.feed(bytes_of(kPanicLog));
  for (StopReason reason : {StopReason::kGuestReboot, StopReason::kGuestPowerOff, StopReason::kGuestCrash}) {
    auto panic = watch.reclassify(VmExit{reason, 0, "guest reset (ACPI reset register)"});
    ASSERT_TRUE(panic.has_value()) << to_string(reason);
    EXPECT_EQ(panic->reason, StopReason::kGuestPanic);
    EXPECT_EQ(panic->exit_code, kExitGuestPanic);
    EXPECT_NE(panic->detail.find("sysrq triggered crash"), std::string::npos) << panic->detail;
    EXPECT_NE(panic->detail.find("ACPI reset register"), std::string::npos) << panic->detail;
  }
}

TEST(KernelPanicWatch, PvpanicStopGainsTheBanner) {
  KernelPanicWatch watch;
  watch.feed(bytes_of(kPanicLog));
  auto panic = watch.reclassify(VmExit{StopReason::kGuestPanic, kExitGuestPanic, "guest kernel panicked (pvpanic)"});
  ASSERT_TRUE(panic.has_value());
  EXPECT_EQ(panic->detail, "guest kernel panicked (pvpanic): Kernel panic - not syncing: sysrq triggered crash");
  // The watch's own stop already names the banner: left as it is.
  auto own = watch.feed(bytes_of("---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n"));
  ASSERT_TRUE(own.has_value());
  EXPECT_EQ(watch.reclassify(*own), std::nullopt);
}

TEST(KernelPanicWatch, OtherStopsStand) {
  KernelPanicWatch watch;
  EXPECT_EQ(watch.reclassify(VmExit{StopReason::kGuestReboot, 0, "guest reset"}), std::nullopt);
  watch.feed(bytes_of(kPanicLog));
  // The guest's explicit verdict, a host stop, a timeout: not explained by the banner.
  EXPECT_EQ(watch.reclassify(VmExit{StopReason::kDebugExit, 3, "guest wrote 3"}), std::nullopt);
  EXPECT_EQ(watch.reclassify(VmExit{StopReason::kStopRequested, kExitStopped, "signal"}), std::nullopt);
  EXPECT_EQ(watch.reclassify(VmExit{StopReason::kTimeout, kExitTimeout, "timeout"}), std::nullopt);
}

// ---- ConsoleWatch ----------------------------------------------------------------------

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
}  // namespace skiff
