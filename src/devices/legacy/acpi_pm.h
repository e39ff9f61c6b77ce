// SPDX-License-Identifier: Apache-2.0
// ACPI fixed-hardware power management registers (ACPI 6.4 section 4.8): the PM1a event
// block (status + enable) and PM1a control block the FADT points at, and the FADT reset
// register. A guest powers off by writing SLP_TYP = the \_S5 value with SLP_EN set to PM1a
// control, and resets by writing kAcpiResetValue to the reset register.
//
// Bus placement: AcpiPmDevice covers the event block and the control block that follows
// it, i.e. insert it at kAcpiPm1EventPort with size kAcpiPmDeviceSize; AcpiResetDevice goes
// at kAcpiResetPort with size kAcpiResetRegisterSize.
//
// Saved state (state::Stateful):
//   "acpi-pm" version 1: PM1 status, enable and control (as stored: SLP_EN never is), the
//   SCI level, and whether the guest already powered off (a second S5 request is not
//   reported again).
//   "acpi-reset" version 1: whether the guest already wrote the reset value.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "arch/x86_64/layout.h"
#include "bus/bus_device.h"
#include "skiff/exit.h"
#include "state/stateful.h"

namespace skiff {

// Register block sizes as the FADT declares them (PM1_EVT_LEN, PM1_CNT_LEN).
inline constexpr uint64_t kAcpiPm1EventBlockSize = 4;    // status (2 bytes), enable (2 bytes)
inline constexpr uint64_t kAcpiPm1ControlBlockSize = 2;
inline constexpr uint64_t kAcpiResetRegisterSize = 1;
static_assert(x86::kAcpiPm1ControlPort == x86::kAcpiPm1EventPort + kAcpiPm1EventBlockSize,
              "AcpiPmDevice serves the control block right after the event block");
inline constexpr uint64_t kAcpiPmDeviceSize = kAcpiPm1EventBlockSize + kAcpiPm1ControlBlockSize;

// Offsets inside AcpiPmDevice.
inline constexpr uint64_t kAcpiPm1StatusOffset = 0;
inline constexpr uint64_t kAcpiPm1EnableOffset = 2;
inline constexpr uint64_t kAcpiPm1ControlOffset = 4;

// The SLP_TYP value the DSDT's \_S5 package gives and this device treats as power-off.
inline constexpr uint8_t kAcpiS5SleepType = 5;

// PM1 status/enable bits (ACPI 6.4 tables 4.16-4.17).
inline constexpr uint16_t kPm1TimerStatus = 1 << 0;
inline constexpr uint16_t kPm1GlobalStatus = 1 << 5;
inline constexpr uint16_t kPm1PowerButtonStatus = 1 << 8;
inline constexpr uint16_t kPm1SleepButtonStatus = 1 << 9;
inline constexpr uint16_t kPm1RtcStatus = 1 << 10;
inline constexpr uint16_t kPm1WakeStatus = 1 << 15;
// PM1 control bits (ACPI 6.4 table 4.18).
inline constexpr uint16_t kPm1ControlSciEnable = 1 << 0;
inline constexpr uint16_t kPm1ControlSleepTypeShift = 10;
inline constexpr uint16_t kPm1ControlSleepTypeMask = 0x7 << kPm1ControlSleepTypeShift;
inline constexpr uint16_t kPm1ControlSleepEnable = 1 << 13;

// PM1a event + control blocks. Status bits are set by raise_status() and cleared by the
// guest writing 1s (write-1-to-clear); the SCI line, when given, is high while a status bit
// is set whose enable bit is set. Control reads report SCI_EN (the platform has no SMI_CMD:
// it is always in ACPI mode); SLP_EN is write-only and reads 0.
class AcpiPmDevice : public BusDevice, public state::Stateful {
 public:
  explicit AcpiPmDevice(StopCallback on_stop, std::shared_ptr<IrqLine> sci = nullptr);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Sets status bits (kPm1PowerButtonStatus: the host pressed the power button).
  void raise_status(uint16_t bits);
  // The PM1 status bits the guest has not cleared yet.
  uint16_t pending_status();

  // state::Stateful. restore_state also drives the SCI line to the saved level.
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

 private:
  uint8_t register_byte(uint64_t offset) const;  // requires mutex_
  void update_sci();                             // requires mutex_

  StopCallback on_stop_;
  std::shared_ptr<IrqLine> sci_;
  mutable std::mutex mutex_;
  uint16_t status_ = 0;
  uint16_t enable_ = 0;
  uint16_t control_ = kPm1ControlSciEnable;
  bool sci_level_ = false;
  bool powered_off_ = false;
  unsigned ignored_sleep_logs_ = 0;
};

// The FADT reset register: writing kAcpiResetValue ends the VM as a guest reboot.
class AcpiResetDevice : public BusDevice, public state::Stateful {
 public:
  explicit AcpiResetDevice(StopCallback on_stop);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // state::Stateful.
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

 private:
  StopCallback on_stop_;
  mutable std::mutex mutex_;
  bool reset_ = false;
};

}  // namespace skiff
