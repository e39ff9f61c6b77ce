// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/cmos_rtc.h"

#include <array>
#include <cstdlib>
#include <ctime>

#include <gtest/gtest.h>

namespace skiff {
namespace {

constexpr uint8_t kRegB = 0x0b;

uint8_t read_cmos(CmosRtc& rtc, uint8_t index) {
  rtc.write(0, std::span<const uint8_t>(&index, 1));
  uint8_t value = 0;
  rtc.read(1, std::span<uint8_t>(&value, 1));
  return value;
}

void write_cmos(CmosRtc& rtc, uint8_t index, uint8_t value) {
  rtc.write(0, std::span<const uint8_t>(&index, 1));
  rtc.write(1, std::span<const uint8_t>(&value, 1));
}

int from_bcd(uint8_t value) { return (value >> 4) * 10 + (value & 0x0f); }

// Reads the clock as a guest would and returns it as seconds since the epoch; retries
// when a second boundary passed between the reads.
std::time_t read_guest_time(CmosRtc& rtc, bool binary) {
  const auto decode = [binary](uint8_t v) { return binary ? int{v} : from_bcd(v); };
  for (;;) {
    const uint8_t seconds = read_cmos(rtc, 0x00);
    struct tm tm {};
    tm.tm_min = decode(read_cmos(rtc, 0x02));
    tm.tm_hour = decode(read_cmos(rtc, 0x04));
    tm.tm_mday = decode(read_cmos(rtc, 0x07));
    tm.tm_mon = decode(read_cmos(rtc, 0x08)) - 1;
    const int year = decode(read_cmos(rtc, 0x32)) * 100 + decode(read_cmos(rtc, 0x09));
    tm.tm_year = year - 1900;
    if (read_cmos(rtc, 0x00) != seconds) continue;
    tm.tm_sec = decode(seconds);
    return timegm(&tm);
  }
}

TEST(CmosRtcTest, BcdClockMatchesHostTime) {
  CmosRtc rtc;
  ASSERT_EQ(read_cmos(rtc, kRegB) & 0x04, 0) << "BCD by default";
  const std::time_t guest = read_guest_time(rtc, /*binary=*/false);
  EXPECT_LE(std::llabs(static_cast<long long>(guest - std::time(nullptr))), 2);
}

TEST(CmosRtcTest, BinaryClockMatchesHostTime) {
  CmosRtc rtc;
  write_cmos(rtc, kRegB, 0x06);  // binary, 24-hour
  EXPECT_EQ(read_cmos(rtc, kRegB), 0x06) << "register B writes are kept";
  const std::time_t guest = read_guest_time(rtc, /*binary=*/true);
  EXPECT_LE(std::llabs(static_cast<long long>(guest - std::time(nullptr))), 2);
}

TEST(CmosRtcTest, FixedClockEncodings) {
  // 2024-03-05 15:07:09 UTC, a Tuesday.
  constexpr std::time_t kTime = 1709651229;
  CmosRtc rtc([] { return kTime; });
  EXPECT_EQ(read_cmos(rtc, 0x00), 0x09);
  EXPECT_EQ(read_cmos(rtc, 0x02), 0x07);
  EXPECT_EQ(read_cmos(rtc, 0x04), 0x15);
  EXPECT_EQ(read_cmos(rtc, 0x06), 3) << "Sunday = 1";
  EXPECT_EQ(read_cmos(rtc, 0x07), 0x05);
  EXPECT_EQ(read_cmos(rtc, 0x08), 0x03);
  EXPECT_EQ(read_cmos(rtc, 0x09), 0x24);
  EXPECT_EQ(read_cmos(rtc, 0x32), 0x20);

  write_cmos(rtc, kRegB, 0x00);  // BCD, 12-hour
  EXPECT_EQ(read_cmos(rtc, 0x04), 0x80 | 0x03) << "3 PM";
  write_cmos(rtc, kRegB, 0x04);  // binary, 12-hour
  EXPECT_EQ(read_cmos(rtc, 0x04), 0x80 | 3);
  write_cmos(rtc, kRegB, 0x06);  // binary, 24-hour
  EXPECT_EQ(read_cmos(rtc, 0x04), 15);
  EXPECT_EQ(read_cmos(rtc, 0x09), 24);
  EXPECT_EQ(read_cmos(rtc, 0x32), 20);
}

TEST(CmosRtcTest, TwelveHourModeAtMidnightAndNoon) {
  std::time_t now = 1709596800;  // 2024-03-05 00:00:00 UTC
  CmosRtc rtc([&now] { return now; });
  write_cmos(rtc, kRegB, 0x00);
  EXPECT_EQ(read_cmos(rtc, 0x04), 0x12) << "12 AM";
  now += 12 * 3600;
  EXPECT_EQ(read_cmos(rtc, 0x04), 0x80 | 0x12) << "12 PM";
}

TEST(CmosRtcTest, NmiBitIsMaskedOutOfTheIndex) {
  CmosRtc rtc;
  const uint8_t index = 0x80 | 0x0d;
  rtc.write(0, std::span<const uint8_t>(&index, 1));
  EXPECT_TRUE(rtc.nmi_masked());
  uint8_t value = 0;
  rtc.read(1, std::span<uint8_t>(&value, 1));
  EXPECT_EQ(value, 0x80) << "register D: VRT";
  write_cmos(rtc, 0x0f, 0x0a);
  EXPECT_FALSE(rtc.nmi_masked());
  EXPECT_EQ(read_cmos(rtc, 0x80 | 0x0f), 0x0a);
}

TEST(CmosRtcTest, StatusRegisters) {
  CmosRtc rtc;
  EXPECT_EQ(read_cmos(rtc, 0x0a) & 0x80, 0) << "UIP clear";
  write_cmos(rtc, 0x0a, 0xff);
  EXPECT_EQ(read_cmos(rtc, 0x0a), 0x7f) << "UIP is read-only";
  EXPECT_EQ(read_cmos(rtc, 0x0c), 0x00);
  write_cmos(rtc, 0x0d, 0x00);
  EXPECT_EQ(read_cmos(rtc, 0x0d), 0x80) << "battery good";
}

TEST(CmosRtcTest, ClockWritesIgnoredOtherBytesStored) {
  CmosRtc rtc([] { return std::time_t{1709651229}; });
  write_cmos(rtc, 0x00, 0x55);
  write_cmos(rtc, 0x09, 0x99);
  EXPECT_EQ(read_cmos(rtc, 0x00), 0x09);
  EXPECT_EQ(read_cmos(rtc, 0x09), 0x24);
  write_cmos(rtc, 0x01, 0x30);  // alarm seconds
  write_cmos(rtc, 0x05, 0x12);  // alarm hours
  write_cmos(rtc, 0x0f, 0x05);  // shutdown status
  write_cmos(rtc, 0x7f, 0xab);
  EXPECT_EQ(read_cmos(rtc, 0x01), 0x30);
  EXPECT_EQ(read_cmos(rtc, 0x05), 0x12);
  EXPECT_EQ(read_cmos(rtc, 0x0f), 0x05);
  EXPECT_EQ(read_cmos(rtc, 0x7f), 0xab);
}

TEST(CmosRtcTest, WordAccessWritesIndexThenData) {
  CmosRtc rtc;
  const std::array<uint8_t, 2> index_and_data{0x40, 0x77};
  rtc.write(0, index_and_data);
  EXPECT_EQ(read_cmos(rtc, 0x40), 0x77);
  std::array<uint8_t, 4> wide{};
  rtc.read(0, wide);
  EXPECT_EQ(wide[0], 0x40);
  EXPECT_EQ(wide[1], 0x77);
  EXPECT_EQ(wide[2], 0xff);
  rtc.read(UINT64_MAX, wide);
  rtc.write(UINT64_MAX, index_and_data);
  EXPECT_EQ(read_cmos(rtc, 0x40), 0x77);
}

}  // namespace
}  // namespace skiff
