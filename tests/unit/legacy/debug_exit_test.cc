// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/debug_exit.h"

#include <array>
#include <vector>

#include <gtest/gtest.h>

namespace skiff {
namespace {

class DebugExitTest : public ::testing::Test {
 protected:
  DebugExitTest() : device_([this](VmExit exit) { stops_.push_back(std::move(exit)); }) {}

  std::vector<VmExit> stops_;
  DebugExit device_;
};

TEST_F(DebugExitTest, ByteWriteBecomesTheExitCode) {
  const uint8_t value = 42;
  device_.write(0, std::span<const uint8_t>(&value, 1));
  ASSERT_EQ(stops_.size(), 1u);
  EXPECT_EQ(stops_[0].reason, StopReason::kDebugExit);
  EXPECT_EQ(stops_[0].exit_code, 42);
  EXPECT_EQ(stops_[0].detail, "guest wrote 42 to the debug-exit port");
}

TEST_F(DebugExitTest, ZeroIsUsedAsIs) {
  const uint8_t value = 0;
  device_.write(0, std::span<const uint8_t>(&value, 1));
  ASSERT_EQ(stops_.size(), 1u);
  EXPECT_EQ(stops_[0].exit_code, 0) << "unlike QEMU's (v << 1) | 1";
}

TEST_F(DebugExitTest, WordWriteKeepsTheLowByte) {
  const std::array<uint8_t, 2> value{0x05, 0x01};  // 0x105
  device_.write(0, value);
  ASSERT_EQ(stops_.size(), 1u);
  EXPECT_EQ(stops_[0].exit_code, 5);
  EXPECT_EQ(stops_[0].detail, "guest wrote 261 to the debug-exit port");
}

TEST_F(DebugExitTest, DwordWrite) {
  const std::array<uint8_t, 4> value{0x03, 0x00, 0x00, 0x00};
  device_.write(0, value);
  const std::array<uint8_t, 4> wide{0xff, 0xff, 0xff, 0xff};
  device_.write(0, wide);
  ASSERT_EQ(stops_.size(), 2u);
  EXPECT_EQ(stops_[0].exit_code, 3);
  EXPECT_EQ(stops_[1].exit_code, 255);
  EXPECT_EQ(stops_[1].detail, "guest wrote 4294967295 to the debug-exit port");
}

TEST_F(DebugExitTest, OddWritesAreIgnoredAndReadsAreAllOnes) {
  const std::array<uint8_t, 8> value{1, 2, 3, 4, 5, 6, 7, 8};
  device_.write(1, std::span<const uint8_t>(value.data(), 1));
  device_.write(0, std::span<const uint8_t>(value.data(), 3));
  device_.write(0, value);
  device_.write(0, std::span<const uint8_t>());
  EXPECT_TRUE(stops_.empty());
  std::array<uint8_t, 4> read{};
  device_.read(0, read);
  for (uint8_t b : read) EXPECT_EQ(b, 0xff);
}

}  // namespace
}  // namespace skiff
