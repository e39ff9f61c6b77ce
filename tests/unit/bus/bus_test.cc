// SPDX-License-Identifier: Apache-2.0
#include "bus/bus.h"

#include <gtest/gtest.h>

#include <limits>
#include <vector>

namespace skiff {
namespace {

// Records accesses and answers reads with the low byte of the offset.
class RecordingDevice : public BusDevice {
 public:
  void read(uint64_t offset, std::span<uint8_t> data) override {
    reads.push_back(offset);
    for (auto& byte : data) byte = static_cast<uint8_t>(offset);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    writes.emplace_back(offset, data.empty() ? 0 : data[0]);
  }
  std::vector<uint64_t> reads;
  std::vector<std::pair<uint64_t, uint8_t>> writes;
};

TEST(Bus, DispatchesWithOffsetRelativeToBase) {
  Bus bus("pio");
  auto device = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus.insert(device, 0x3f8, 8, "serial"));
  uint8_t byte = 0;
  ASSERT_TRUE(bus.read(0x3fd, std::span(&byte, 1)));
  EXPECT_EQ(byte, 5);
  const uint8_t value = 0x41;
  ASSERT_TRUE(bus.write(0x3f8, std::span(&value, 1)));
  ASSERT_EQ(device->writes.size(), 1u);
  EXPECT_EQ(device->writes[0], std::make_pair(uint64_t{0}, uint8_t{0x41}));
}

TEST(Bus, UnmappedAccessesReportFalse) {
  Bus bus("pio");
  ASSERT_TRUE(bus.insert(std::make_shared<RecordingDevice>(), 0x60, 1, "i8042-data"));
  uint8_t byte = 0;
  EXPECT_FALSE(bus.read(0x61, std::span(&byte, 1)));
  EXPECT_FALSE(bus.read(0x5f, std::span(&byte, 1)));
  uint8_t wide[2] = {};
  EXPECT_FALSE(bus.read(0x60, wide));  // runs past the device's end
}

TEST(Bus, OverlapsAreRejectedWithBothNames) {
  Bus bus("mmio");
  auto device = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus.insert(device, 0x1000, 0x100, "first"));
  auto overlap_end = bus.insert(device, 0x10ff, 0x10, "second");
  ASSERT_FALSE(overlap_end);
  EXPECT_NE(overlap_end.error().message().find("first"), std::string::npos);
  EXPECT_NE(overlap_end.error().message().find("second"), std::string::npos);
  EXPECT_FALSE(bus.insert(device, 0xf00, 0x101, "covers-start"));
  EXPECT_FALSE(bus.insert(device, 0x1010, 0x10, "inside"));
  EXPECT_FALSE(bus.insert(device, 0x800, 0x1000, "around"));
  EXPECT_FALSE(bus.insert(device, 0x1000, 0x100, "same"));
  EXPECT_TRUE(bus.insert(device, 0x1100, 0x100, "adjacent-after"));
  EXPECT_TRUE(bus.insert(device, 0xf00, 0x100, "adjacent-before"));
  EXPECT_EQ(bus.size(), 3u);
}

TEST(Bus, RejectsEmptyWrappingAndNullRanges) {
  Bus bus("mmio");
  auto device = std::make_shared<RecordingDevice>();
  EXPECT_FALSE(bus.insert(device, 0x1000, 0, "empty"));
  EXPECT_FALSE(bus.insert(device, std::numeric_limits<uint64_t>::max() - 4, 0x10, "wraps"));
  EXPECT_FALSE(bus.insert(nullptr, 0x1000, 0x10, "null"));
  // Ends are exclusive, so the last byte of the address space cannot be mapped; the range
  // just below it can.
  EXPECT_FALSE(bus.insert(device, std::numeric_limits<uint64_t>::max() - 0xf, 0x10, "to-2^64"));
  EXPECT_TRUE(bus.insert(device, std::numeric_limits<uint64_t>::max() - 0x10, 0x10, "top"));
}

TEST(Bus, RemoveFreesTheRange) {
  Bus bus("pio");
  auto device = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus.insert(device, 0x70, 2, "rtc"));
  EXPECT_TRUE(bus.remove(0x70));
  EXPECT_FALSE(bus.remove(0x70));
  uint8_t byte = 0;
  EXPECT_FALSE(bus.read(0x70, std::span(&byte, 1)));
  EXPECT_TRUE(bus.insert(device, 0x70, 2, "rtc-again"));
}

}  // namespace
}  // namespace skiff
