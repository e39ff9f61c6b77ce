// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/pvpanic.h"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace skiff {
namespace {

class PvpanicTest : public ::testing::Test {
 protected:
  PvpanicTest() : device_([this](VmExit exit) { stops_.push_back(std::move(exit)); }) {}

  void write_byte(uint8_t value, uint64_t offset = 0) { device_.write(offset, std::span<const uint8_t>(&value, 1)); }

  std::vector<VmExit> stops_;
  Pvpanic device_;
};

TEST_F(PvpanicTest, ReadReturnsTheSupportedEvents) {
  // QEMU docs/specs/pvpanic.rst: "On read, the bits recognized by the device are set."
  uint8_t value = 0;
  device_.read(0, std::span<uint8_t>(&value, 1));
  EXPECT_EQ(value, kPvpanicPanicked | kPvpanicCrashLoaded);
  EXPECT_EQ(value, 0x03);
}

TEST_F(PvpanicTest, WideReadHasZerosAboveTheRegister) {
  std::array<uint8_t, 4> value{0xaa, 0xaa, 0xaa, 0xaa};
  device_.read(0, value);
  EXPECT_EQ(value, (std::array<uint8_t, 4>{0x03, 0, 0, 0}));
}

TEST_F(PvpanicTest, PanickedStopsTheVmWithThePanicCode) {
  write_byte(kPvpanicPanicked);
  ASSERT_EQ(stops_.size(), 1u);
  EXPECT_EQ(stops_[0].reason, StopReason::kGuestPanic);
  EXPECT_EQ(stops_[0].exit_code, kExitGuestPanic);
  EXPECT_EQ(stops_[0].exit_code, 72);
  EXPECT_NE(stops_[0].detail.find("pvpanic"), std::string::npos) << stops_[0].detail;
}

TEST_F(PvpanicTest, CrashLoadedIsLoggedNotAStop) {
  // Bit 1: "the host should record it or report it, but should not affect the execution".
  write_byte(kPvpanicCrashLoaded);
  write_byte(kPvpanicCrashLoaded);
  EXPECT_TRUE(stops_.empty());
  EXPECT_EQ(device_.crash_loaded_events(), 2u);
}

TEST_F(PvpanicTest, PanickedWinsOverCrashLoadedInOneWrite) {
  write_byte(kPvpanicPanicked | kPvpanicCrashLoaded);
  ASSERT_EQ(stops_.size(), 1u);
  EXPECT_EQ(stops_[0].reason, StopReason::kGuestPanic);
}

TEST_F(PvpanicTest, UnknownBitsAreIgnored) {
  // "On write, the bits not recognized by the device are ignored." Bit 2 (shutdown in
  // newer QEMU) and above are not supported here.
  write_byte(0x04);
  write_byte(0xfc);
  write_byte(0);
  EXPECT_TRUE(stops_.empty());
  EXPECT_EQ(device_.crash_loaded_events(), 0u);
}

TEST_F(PvpanicTest, WritesAtOtherOffsetsAreIgnored) {
  write_byte(kPvpanicPanicked, 1);
  device_.write(0, std::span<const uint8_t>());
  EXPECT_TRUE(stops_.empty());
}

TEST_F(PvpanicTest, NoCallbackIsHarmless) {
  Pvpanic device{StopCallback{}};
  const uint8_t value = kPvpanicPanicked;
  device.write(0, std::span<const uint8_t>(&value, 1));
}

bool contains(const std::vector<uint8_t>& haystack, const std::vector<uint8_t>& needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) != haystack.end();
}

TEST(PvpanicAcpi, DeviceNodeMatchesQemus) {
  auto aml = pvpanic_acpi_device().to_aml();
  ASSERT_TRUE(aml.has_value()) << aml.error().message();
  const std::vector<uint8_t>& bytes = *aml;
  // DeviceOp (ExtOpPrefix 0x5b, 0x82), then PkgLength, then the name.
  ASSERT_GE(bytes.size(), 2u);
  EXPECT_EQ(bytes[0], 0x5b);
  EXPECT_EQ(bytes[1], 0x82);
  EXPECT_TRUE(contains(bytes, {'P', 'E', 'V', 'T'}));
  // Name (_HID, "QEMU0001"): NameOp, "_HID", StringPrefix 0x0d, the text, NUL.
  EXPECT_TRUE(contains(bytes, {0x08, '_', 'H', 'I', 'D', 0x0d, 'Q', 'E', 'M', 'U', '0', '0', '0', '1', 0x00}));
  // ACPI 6.4 section 6.4.2.5 I/O port descriptor: tag 0x47, Decode16, min 0x0505,
  // max 0x0505, alignment 1, length 1.
  EXPECT_TRUE(contains(bytes, {0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01}));
  // Name (_STA, 0x0f): BytePrefix 0x0a.
  EXPECT_TRUE(contains(bytes, {0x08, '_', 'S', 'T', 'A', 0x0a, 0x0f}));
}

TEST(PvpanicAcpi, OtherPort) {
  auto aml = pvpanic_acpi_device(0x1234).to_aml();
  ASSERT_TRUE(aml.has_value());
  EXPECT_TRUE(contains(*aml, {0x47, 0x01, 0x34, 0x12, 0x34, 0x12, 0x01, 0x01}));
}

}  // namespace
}  // namespace skiff
