// SPDX-License-Identifier: Apache-2.0
#include "vmm/console_line_splitter.h"

#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "unit/vmm/console_test_util.h"

namespace skiff {
namespace {

using testing::bytes_of;

std::vector<std::string> split(ConsoleLineSplitter& splitter, std::string_view text) {
  std::vector<std::string> lines;
  splitter.feed(bytes_of(text), [&](std::string_view line) { lines.emplace_back(line); });
  return lines;
}

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

}  // namespace
}  // namespace skiff
