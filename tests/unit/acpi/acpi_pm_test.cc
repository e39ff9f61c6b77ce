// SPDX-License-Identifier: Apache-2.0
// The ACPI PM1 registers and reset register as the guest's ACPICA drives them.
#include "devices/legacy/acpi_pm.h"

#include <memory>
#include <vector>

#include <gtest/gtest.h>

namespace skiff {
namespace {

class RecordingIrq : public IrqLine {
 public:
  void set_level(bool high) override { levels.push_back(high); }
  std::vector<bool> levels;
};

struct Recorder {
  std::vector<VmExit> exits;
  StopCallback callback() {
    return [this](VmExit exit) { exits.push_back(std::move(exit)); };
  }
};

void write16(BusDevice& device, uint64_t offset, uint16_t value) {
  const uint8_t data[2] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8)};
  device.write(offset, data);
}

uint16_t read16(BusDevice& device, uint64_t offset) {
  uint8_t data[2] = {};
  device.read(offset, data);
  return static_cast<uint16_t>(data[0] | (data[1] << 8));
}

uint16_t sleep_request(uint8_t sleep_type) {
  return static_cast<uint16_t>((sleep_type << kPm1ControlSleepTypeShift) | kPm1ControlSleepEnable);
}

TEST(AcpiPm, S5PowersOffOnce) {
  Recorder recorder;
  AcpiPmDevice pm(recorder.callback());
  // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
  write16(pm, kAcpiPm1ControlOffset, kAcpiS5SleepType << kPm1ControlSleepTypeShift);
  EXPECT_TRUE(recorder.exits.empty());
  write16(pm, kAcpiPm1ControlOffset, sleep_request(kAcpiS5SleepType));
  ASSERT_EQ(recorder.exits.size(), 1u);
  EXPECT_EQ(recorder.exits[0].reason, StopReason::kGuestPowerOff);
  EXPECT_EQ(recorder.exits[0].exit_code, kExitOk);
  EXPECT_EQ(recorder.exits[0].detail, "guest powered off (ACPI S5)");
  write16(pm, kAcpiPm1ControlOffset, sleep_request(kAcpiS5SleepType));
  EXPECT_EQ(recorder.exits.size(), 1u);
}

TEST(AcpiPm, S5ThroughHighByteWrite) {
  Recorder recorder;
  AcpiPmDevice pm(recorder.callback());
  const uint8_t high = static_cast<uint8_t>(sleep_request(kAcpiS5SleepType) >> 8);
  pm.write(kAcpiPm1ControlOffset + 1, std::span(&high, 1));
  EXPECT_EQ(recorder.exits.size(), 1u);
}

TEST(AcpiPm, OtherSleepTypesAreIgnored) {
  Recorder recorder;
  AcpiPmDevice pm(recorder.callback());
  for (uint8_t type = 0; type < 8; ++type) {
    if (type == kAcpiS5SleepType) continue;
    write16(pm, kAcpiPm1ControlOffset, sleep_request(type));
  }
  EXPECT_TRUE(recorder.exits.empty());
  // SLP_EN is write-only; SCI_EN always reads set; SLP_TYP reads back.
  const uint16_t control = read16(pm, kAcpiPm1ControlOffset);
  EXPECT_EQ(control & kPm1ControlSleepEnable, 0);
  EXPECT_EQ(control & kPm1ControlSciEnable, kPm1ControlSciEnable);
  EXPECT_EQ((control & kPm1ControlSleepTypeMask) >> kPm1ControlSleepTypeShift, 7);
}

TEST(AcpiPm, StatusIsWriteOneToClear) {
  Recorder recorder;
  AcpiPmDevice pm(recorder.callback());
  pm.raise_status(kPm1PowerButtonStatus | kPm1WakeStatus);
  EXPECT_EQ(read16(pm, kAcpiPm1StatusOffset), kPm1PowerButtonStatus | kPm1WakeStatus);
  write16(pm, kAcpiPm1StatusOffset, 0);  // writing 0 changes nothing
  EXPECT_EQ(read16(pm, kAcpiPm1StatusOffset), kPm1PowerButtonStatus | kPm1WakeStatus);
  write16(pm, kAcpiPm1StatusOffset, kPm1WakeStatus);
  EXPECT_EQ(read16(pm, kAcpiPm1StatusOffset), kPm1PowerButtonStatus);
  write16(pm, kAcpiPm1StatusOffset, 0xffff);
  EXPECT_EQ(read16(pm, kAcpiPm1StatusOffset), 0);
}

TEST(AcpiPm, EnableRegisterAndSci) {
  Recorder recorder;
  auto sci = std::make_shared<RecordingIrq>();
  AcpiPmDevice pm(recorder.callback(), sci);
  write16(pm, kAcpiPm1EnableOffset, kPm1PowerButtonStatus);
  EXPECT_EQ(read16(pm, kAcpiPm1EnableOffset), kPm1PowerButtonStatus);
  pm.raise_status(kPm1WakeStatus);  // not enabled: no SCI
  EXPECT_TRUE(sci->levels.empty());
  pm.raise_status(kPm1PowerButtonStatus);
  EXPECT_EQ(sci->levels, std::vector<bool>{true});
  write16(pm, kAcpiPm1StatusOffset, kPm1PowerButtonStatus);
  EXPECT_EQ(sci->levels, (std::vector<bool>{true, false}));
  // A 32-bit read of the event block returns status then enable.
  uint8_t block[4] = {};
  pm.read(0, block);
  EXPECT_EQ(block[0] | (block[1] << 8), kPm1WakeStatus);
  EXPECT_EQ(block[2] | (block[3] << 8), kPm1PowerButtonStatus);
}

TEST(AcpiPm, OutOfRangeAccessesAreHarmless) {
  Recorder recorder;
  AcpiPmDevice pm(recorder.callback());
  uint8_t data[4] = {};
  pm.read(kAcpiPmDeviceSize - 1, data);
  EXPECT_EQ(data[0], 0xff);
  const uint8_t request[4] = {0, 0, 0, 0xff};
  pm.write(kAcpiPmDeviceSize - 2, request);
  pm.write(~uint64_t{0}, request);
  EXPECT_TRUE(recorder.exits.empty());
}

TEST(AcpiReset, ResetValueRebootsOnce) {
  Recorder recorder;
  AcpiResetDevice reset(recorder.callback());
  const uint8_t other = 0x06;
  reset.write(0, std::span(&other, 1));
  EXPECT_TRUE(recorder.exits.empty());
  const uint8_t value = x86::kAcpiResetValue;
  reset.write(0, std::span(&value, 1));
  ASSERT_EQ(recorder.exits.size(), 1u);
  EXPECT_EQ(recorder.exits[0].reason, StopReason::kGuestReboot);
  EXPECT_EQ(recorder.exits[0].exit_code, kExitOk);
  EXPECT_EQ(recorder.exits[0].detail, "guest reset (ACPI reset register)");
  reset.write(0, std::span(&value, 1));
  EXPECT_EQ(recorder.exits.size(), 1u);
  uint8_t read_back = 0xaa;
  reset.read(0, std::span(&read_back, 1));
  EXPECT_EQ(read_back, 0);
}

}  // namespace
}  // namespace skiff
