// SPDX-License-Identifier: Apache-2.0
// CmosRtc's state: the index register, NMI mask, register A/B, alarms and NVRAM survive a
// save and restore; the clock keeps following the (host's) wall clock; bad blobs are refused.
#include <array>
#include <ctime>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "devices/legacy/cmos_rtc.h"
#include "unit/legacy/state_test_util.h"

namespace skiff {
namespace {

using testing::fails_with;
using testing::through_bytes;

constexpr std::time_t kFixedTime = 1700000000;  // 2023-11-14 22:13:20 UTC

CmosRtc fixed_rtc() {
  return CmosRtc([] { return kFixedTime; });
}

void write_index(CmosRtc& rtc, uint8_t value) { rtc.write(0, std::span<const uint8_t>(&value, 1)); }
void write_data(CmosRtc& rtc, uint8_t value) { rtc.write(1, std::span<const uint8_t>(&value, 1)); }
uint8_t read_port(CmosRtc& rtc, uint64_t offset) {
  uint8_t value = 0;
  rtc.read(offset, std::span<uint8_t>(&value, 1));
  return value;
}

void drive_mid_use(CmosRtc& rtc) {
  write_index(rtc, 0x80 | 0x0b);  // register B, NMIs masked
  write_data(rtc, 0x06);          // binary, 24-hour
  write_index(rtc, 0x80 | 0x0a);
  write_data(rtc, 0x2f);          // register A: another periodic rate
  write_index(rtc, 0x80 | 0x01);
  write_data(rtc, 0x30);          // seconds alarm
  write_index(rtc, 0x80 | 0x03);
  write_data(rtc, 0x15);          // minutes alarm
  write_index(rtc, 0x80 | 0x05);
  write_data(rtc, 0x07);          // hours alarm
  write_index(rtc, 0x80 | 0x0f);
  write_data(rtc, 0x0a);          // shutdown status
  write_index(rtc, 0x80 | 0x40);
  write_data(rtc, 0x99);          // NVRAM
  write_index(rtc, 0x80 | 0x04);  // leave the hours register selected
}

std::vector<int> carry_on(CmosRtc& rtc) {
  std::vector<int> seen;
  seen.push_back(read_port(rtc, 0));  // index and NMI mask read back
  seen.push_back(read_port(rtc, 1));  // the hours, in binary
  seen.push_back(rtc.nmi_masked());
  for (uint8_t index : {0x00, 0x01, 0x02, 0x03, 0x05, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0f, 0x32, 0x40, 0x7f}) {
    write_index(rtc, index);
    seen.push_back(read_port(rtc, 1));
  }
  seen.push_back(rtc.nmi_masked());
  return seen;
}

TEST(CmosRtcState, RestoredRtcCarriesOnIdentically) {
  CmosRtc original = fixed_rtc();
  drive_mid_use(original);
  ASSERT_TRUE(original.nmi_masked());

  auto saved = original.save_state();
  ASSERT_TRUE(saved) << saved.error().message();
  EXPECT_EQ(saved->kind(), "cmos-rtc");
  EXPECT_EQ(saved->version(), 1u);

  CmosRtc restored = fixed_rtc();
  auto r = restored.restore_state(through_bytes(*saved));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(restored.nmi_masked());
  auto again = restored.save_state();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *saved);

  const std::vector<int> expected = carry_on(original);
  EXPECT_EQ(carry_on(restored), expected);
  EXPECT_EQ(expected[1], 22) << "hours read in binary after the restore";
}

TEST(CmosRtcState, TheClockFollowsTheRestoringHostsTime) {
  CmosRtc original = fixed_rtc();
  write_index(original, 0x0b);
  write_data(original, 0x06);  // binary
  auto saved = original.save_state();
  ASSERT_TRUE(saved);
  CmosRtc later([] { return kFixedTime + 3600; });
  ASSERT_TRUE(later.restore_state(*saved));
  write_index(later, 0x04);
  EXPECT_EQ(read_port(later, 1), 23);
}

state::StateBlob hand_made(std::string_view skip = "") {
  state::StateBlob blob("cmos-rtc", 1);
  std::array<uint8_t, 128> ram{};
  ram[0x0a] = 0x26;
  ram[0x0b] = 0x02;
  if (skip != "ram") blob.put_bytes("ram", ram);
  if (skip != "index") blob.put("index", 0x0b);
  if (skip != "nmi_masked") blob.put_bool("nmi_masked", false);
  return blob;
}

TEST(CmosRtcState, HandMadeBlobIsAccepted) {
  CmosRtc rtc = fixed_rtc();
  ASSERT_TRUE(rtc.restore_state(through_bytes(hand_made())));
  EXPECT_EQ(read_port(rtc, 1), 0x02);
}

TEST(CmosRtcState, RefusesAnotherKindOrANewerVersion) {
  CmosRtc rtc = fixed_rtc();
  EXPECT_TRUE(fails_with(rtc.restore_state(state::StateBlob("serial", 1)), "state of serial where cmos-rtc was expected"));
  EXPECT_TRUE(fails_with(rtc.restore_state(state::StateBlob("cmos-rtc", 2)), "version 2 is newer"));
}

TEST(CmosRtcState, RefusesEveryMissingField) {
  for (std::string_view field : {"ram", "index", "nmi_masked"}) {
    CmosRtc rtc = fixed_rtc();
    EXPECT_TRUE(fails_with(rtc.restore_state(hand_made(field)), fmt::format("field \"{}\" is missing", field)));
  }
}

TEST(CmosRtcState, RefusesInvalidFields) {
  CmosRtc rtc = fixed_rtc();
  state::StateBlob blob = hand_made();
  blob.put("index", 0x80);  // bit 7 is the NMI mask, never part of the index
  EXPECT_TRUE(fails_with(rtc.restore_state(blob), "field \"index\" is 128, above the maximum 127"));

  blob = hand_made();
  blob.put_bytes("ram", std::vector<uint8_t>(127, 0));
  EXPECT_TRUE(fails_with(rtc.restore_state(blob), "field \"ram\" holds 127 bytes instead of 128"));

  std::array<uint8_t, 128> ram{};
  ram[0x00] = 0x12;  // a clock register: computed, never stored
  blob = hand_made();
  blob.put_bytes("ram", ram);
  EXPECT_TRUE(fails_with(rtc.restore_state(blob), "field \"ram\" byte 0x00 is 0x12"));

  ram = {};
  ram[0x0a] = 0xa6;  // register A with update-in-progress set
  blob.put_bytes("ram", ram);
  EXPECT_TRUE(fails_with(rtc.restore_state(blob), "update-in-progress"));

  // Nothing was applied.
  write_index(rtc, 0x0b);
  EXPECT_EQ(read_port(rtc, 1), 0x02);
}

}  // namespace
}  // namespace skiff
