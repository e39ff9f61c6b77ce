// SPDX-License-Identifier: Apache-2.0
// The ACPI PM1 block's and reset register's state: pending status bits with their enable
// bits (SCI asserted), the control register and the one-shot power-off/reset latches
// survive a save and restore; bad blobs are refused.
#include <memory>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "devices/legacy/acpi_pm.h"
#include "unit/legacy/fake_irq_line.h"
#include "unit/legacy/state_test_util.h"

namespace skiff {
namespace {

using testing::fails_with;
using testing::through_bytes;

struct Pm {
  Pm() : sci(std::make_shared<testing::FakeIrqLine>()), device([this](VmExit exit) { stops.push_back(exit); }, sci) {}
  void write16(uint64_t offset, uint16_t value) {
    const uint8_t data[2] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8)};
    device.write(offset, data);
  }
  uint16_t read16(uint64_t offset) {
    uint8_t data[2] = {};
    device.read(offset, data);
    return static_cast<uint16_t>(data[0] | (data[1] << 8));
  }
  std::shared_ptr<testing::FakeIrqLine> sci;
  std::vector<VmExit> stops;
  AcpiPmDevice device;
};

constexpr uint16_t kSleepTypeS3 = 3 << kPm1ControlSleepTypeShift;

void drive_mid_use(Pm& pm) {
  pm.write16(kAcpiPm1EnableOffset, kPm1PowerButtonStatus | kPm1RtcStatus);
  pm.write16(kAcpiPm1ControlOffset, kPm1ControlSciEnable | kSleepTypeS3);  // SLP_TYP written, SLP_EN not yet
  pm.device.raise_status(kPm1PowerButtonStatus | kPm1TimerStatus);          // the timer bit is not enabled
}

std::vector<int> carry_on(Pm& pm) {
  std::vector<int> seen;
  const auto note = [&](int value) {
    seen.push_back(value);
    seen.push_back(pm.sci->level() ? 1 : 0);
  };
  note(pm.read16(kAcpiPm1StatusOffset));
  note(pm.read16(kAcpiPm1EnableOffset));
  note(pm.read16(kAcpiPm1ControlOffset));
  pm.write16(kAcpiPm1StatusOffset, kPm1PowerButtonStatus);  // write 1 to clear: SCI drops
  note(pm.read16(kAcpiPm1StatusOffset));
  pm.device.raise_status(kPm1RtcStatus);  // enabled: SCI again
  note(pm.read16(kAcpiPm1StatusOffset));
  pm.write16(kAcpiPm1EnableOffset, 0);
  note(pm.read16(kAcpiPm1StatusOffset));
  pm.write16(kAcpiPm1ControlOffset, (kAcpiS5SleepType << kPm1ControlSleepTypeShift) | kPm1ControlSleepEnable);
  note(static_cast<int>(pm.stops.size()));
  return seen;
}

TEST(AcpiPmState, RestoredBlockCarriesOnIdentically) {
  Pm original;
  drive_mid_use(original);
  ASSERT_TRUE(original.sci->level());

  auto saved = original.device.save_state();
  ASSERT_TRUE(saved) << saved.error().message();
  EXPECT_EQ(saved->kind(), "acpi-pm");
  EXPECT_EQ(saved->version(), 1u);

  Pm restored;
  auto r = restored.device.restore_state(through_bytes(*saved));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(restored.sci->level()) << "the restored block re-asserts the SCI";
  auto again = restored.device.save_state();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *saved);

  EXPECT_EQ(carry_on(restored), carry_on(original));
  EXPECT_EQ(restored.stops.size(), 1u);
}

TEST(AcpiPmState, APowerOffIsReportedOnceAcrossARestore) {
  Pm original;
  original.write16(kAcpiPm1ControlOffset, (kAcpiS5SleepType << kPm1ControlSleepTypeShift) | kPm1ControlSleepEnable);
  ASSERT_EQ(original.stops.size(), 1u);
  auto saved = original.device.save_state();
  ASSERT_TRUE(saved);
  Pm restored;
  ASSERT_TRUE(restored.device.restore_state(through_bytes(*saved)));
  restored.write16(kAcpiPm1ControlOffset, (kAcpiS5SleepType << kPm1ControlSleepTypeShift) | kPm1ControlSleepEnable);
  EXPECT_TRUE(restored.stops.empty());
}

state::StateBlob hand_made(std::string_view skip = "") {
  state::StateBlob blob("acpi-pm", 1);
  const auto put = [&](std::string_view field, uint64_t value) {
    if (field != skip) blob.put(field, value);
  };
  put("status", kPm1PowerButtonStatus);
  put("enable", kPm1PowerButtonStatus);
  put("control", kPm1ControlSciEnable);
  if (skip != "sci_level") blob.put_bool("sci_level", true);
  if (skip != "powered_off") blob.put_bool("powered_off", false);
  return blob;
}

TEST(AcpiPmState, HandMadeBlobIsAccepted) {
  Pm pm;
  ASSERT_TRUE(pm.device.restore_state(through_bytes(hand_made())));
  EXPECT_TRUE(pm.sci->level());
  EXPECT_EQ(pm.device.pending_status(), kPm1PowerButtonStatus);
}

TEST(AcpiPmState, RefusesAnotherKindOrANewerVersion) {
  Pm pm;
  EXPECT_TRUE(fails_with(pm.device.restore_state(state::StateBlob("acpi-reset", 1)), "state of acpi-reset where acpi-pm was expected"));
  EXPECT_TRUE(fails_with(pm.device.restore_state(state::StateBlob("acpi-pm", 2)), "version 2 is newer"));
}

TEST(AcpiPmState, RefusesEveryMissingField) {
  for (std::string_view field : {"status", "enable", "control", "sci_level", "powered_off"}) {
    Pm pm;
    EXPECT_TRUE(fails_with(pm.device.restore_state(hand_made(field)), fmt::format("field \"{}\" is missing", field)));
  }
}

TEST(AcpiPmState, RefusesInvalidFields) {
  Pm pm;
  state::StateBlob blob = hand_made();
  blob.put("status", 0x10000);
  EXPECT_TRUE(fails_with(pm.device.restore_state(blob), "field \"status\" is 65536, above the maximum 65535"));
  blob = hand_made();
  blob.put("control", kPm1ControlSleepEnable | kPm1ControlSciEnable);
  EXPECT_TRUE(fails_with(pm.device.restore_state(blob), "field \"control\" has the write-only SLP_EN bit set"));
  blob = hand_made();
  blob.put("enable", 0);  // nothing enabled: the SCI cannot be high
  EXPECT_TRUE(fails_with(pm.device.restore_state(blob), "field \"sci_level\" is high but status 0x0100 and enable 0x0000 say low"));
  EXPECT_TRUE(pm.sci->levels().empty()) << "a refused restore leaves the block alone";
  EXPECT_EQ(pm.device.pending_status(), 0);
}

TEST(AcpiResetState, TheResetLatchSurvives) {
  std::vector<VmExit> stops;
  AcpiResetDevice original([&](VmExit exit) { stops.push_back(exit); });
  auto fresh = original.save_state();
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->kind(), "acpi-reset");
  EXPECT_EQ(fresh->version(), 1u);
  const uint8_t reset = x86::kAcpiResetValue;
  original.write(0, std::span(&reset, 1));
  ASSERT_EQ(stops.size(), 1u);
  auto saved = original.save_state();
  ASSERT_TRUE(saved);

  std::vector<VmExit> restored_stops;
  AcpiResetDevice restored([&](VmExit exit) { restored_stops.push_back(exit); });
  ASSERT_TRUE(restored.restore_state(through_bytes(*saved)));
  restored.write(0, std::span(&reset, 1));
  EXPECT_TRUE(restored_stops.empty()) << "the reset was already reported before the save";

  AcpiResetDevice unlatched([&](VmExit exit) { restored_stops.push_back(exit); });
  ASSERT_TRUE(unlatched.restore_state(through_bytes(*fresh)));
  unlatched.write(0, std::span(&reset, 1));
  EXPECT_EQ(restored_stops.size(), 1u);
}

TEST(AcpiResetState, RefusesBadBlobs) {
  AcpiResetDevice device(nullptr);
  EXPECT_TRUE(fails_with(device.restore_state(state::StateBlob("acpi-pm", 1)), "state of acpi-pm where acpi-reset was expected"));
  EXPECT_TRUE(fails_with(device.restore_state(state::StateBlob("acpi-reset", 2)), "version 2 is newer"));
  EXPECT_TRUE(fails_with(device.restore_state(state::StateBlob("acpi-reset", 1)), "field \"reset_requested\" is missing"));
  state::StateBlob wrong_type("acpi-reset", 1);
  wrong_type.put("reset_requested", 1);
  EXPECT_TRUE(fails_with(device.restore_state(wrong_type), "field \"reset_requested\" is not a boolean"));
}

}  // namespace
}  // namespace skiff
