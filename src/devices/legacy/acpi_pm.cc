// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/acpi_pm.h"

#include <algorithm>
#include <optional>
#include <utility>

#include <spdlog/spdlog.h>

namespace skiff {
namespace {

// A guest can write sleep requests in a loop: log the first few, then stay quiet.
constexpr unsigned kMaxIgnoredSleepLogs = 8;

bool access_in_range(uint64_t offset, size_t size, uint64_t limit) {
  return size > 0 && offset <= limit && size <= limit - offset;
}

}  // namespace

AcpiPmDevice::AcpiPmDevice(StopCallback on_stop, std::shared_ptr<IrqLine> sci)
    : on_stop_(std::move(on_stop)), sci_(std::move(sci)) {}

uint8_t AcpiPmDevice::register_byte(uint64_t offset) const {
  auto byte_of = [offset](uint16_t value) {
    return static_cast<uint8_t>(value >> (8 * (offset % 2)));
  };
  if (offset < kAcpiPm1EnableOffset) return byte_of(status_);
  if (offset < kAcpiPm1ControlOffset) return byte_of(enable_);
  // SLP_EN is write-only (ACPI 6.4 table 4.18: "reads as zero"); SCI_EN stays set because
  // there is no SMI_CMD port to leave ACPI mode.
  const auto control =
      static_cast<uint16_t>((control_ & ~kPm1ControlSleepEnable) | kPm1ControlSciEnable);
  return byte_of(control);
}

void AcpiPmDevice::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (!access_in_range(offset, data.size(), kAcpiPmDeviceSize)) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  for (size_t i = 0; i < data.size(); ++i) data[i] = register_byte(offset + i);
}

void AcpiPmDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  std::optional<VmExit> stop;
  {
    std::lock_guard lock(mutex_);
    if (!access_in_range(offset, data.size(), kAcpiPmDeviceSize)) return;
    bool sleep_enable_written = false;
    uint16_t control = control_;
    for (size_t i = 0; i < data.size(); ++i) {
      const uint64_t at = offset + i;
      const unsigned shift = 8 * (at % 2);
      const auto byte_mask = static_cast<uint16_t>(0xff << shift);
      const auto value = static_cast<uint16_t>(data[i] << shift);
      if (at < kAcpiPm1EnableOffset) {
        status_ = static_cast<uint16_t>(status_ & ~value);  // write 1 to clear (section 4.8.3.1)
      } else if (at < kAcpiPm1ControlOffset) {
        enable_ = static_cast<uint16_t>((enable_ & ~byte_mask) | value);
      } else {
        control = static_cast<uint16_t>((control & ~byte_mask) | value);
        if (shift == 8) sleep_enable_written = true;  // the byte holding SLP_TYP and SLP_EN
      }
    }
    control_ = static_cast<uint16_t>(control & ~kPm1ControlSleepEnable);

    // ACPI 6.4 section 4.8.3.2.1: writing SLP_EN makes the hardware enter the sleeping
    // state SLP_TYP selects; the only one skiff implements is S5 (soft off).
    if (sleep_enable_written && (control & kPm1ControlSleepEnable) != 0) {
      const auto sleep_type =
          static_cast<uint8_t>((control & kPm1ControlSleepTypeMask) >> kPm1ControlSleepTypeShift);
      if (sleep_type == kAcpiS5SleepType) {
        if (!powered_off_) {
          powered_off_ = true;
          spdlog::debug("acpi: guest requested S5 (SLP_TYP {}): powering off", sleep_type);
          stop = VmExit{StopReason::kGuestPowerOff, kExitOk, "guest powered off (ACPI S5)"};
        }
      } else if (ignored_sleep_logs_ < kMaxIgnoredSleepLogs) {
        ++ignored_sleep_logs_;
        spdlog::warn("acpi: guest requested sleep type {} through PM1a control; only S5 ({}) is "
                     "supported, ignored{}",
                     sleep_type, kAcpiS5SleepType,
                     ignored_sleep_logs_ == kMaxIgnoredSleepLogs ? " (further requests not logged)"
                                                                 : "");
      }
    }
    update_sci();
  }
  // Outside the lock: the callback may stop vCPUs that are waiting on this device.
  if (stop && on_stop_) on_stop_(std::move(*stop));
}

uint16_t AcpiPmDevice::pending_status() {
  std::lock_guard lock(mutex_);
  return status_;
}

void AcpiPmDevice::raise_status(uint16_t bits) {
  std::lock_guard lock(mutex_);
  status_ |= bits;
  update_sci();
}

void AcpiPmDevice::update_sci() {
  const bool level = (status_ & enable_) != 0;
  if (level == sci_level_) return;
  sci_level_ = level;
  if (sci_) sci_->set_level(level);
}

AcpiResetDevice::AcpiResetDevice(StopCallback on_stop) : on_stop_(std::move(on_stop)) {}

void AcpiResetDevice::read(uint64_t offset, std::span<uint8_t> data) {
  // The reset register is write-only; reads return 0 within it and 0xff past it.
  for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < kAcpiResetRegisterSize ? 0 : 0xff;
}

void AcpiResetDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset != 0 || data.empty()) return;
  if (data[0] != x86::kAcpiResetValue) {
    spdlog::debug("acpi: ignored write {:#x} to the reset register", data[0]);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    if (reset_) return;
    reset_ = true;
  }
  spdlog::debug("acpi: guest wrote the reset register: ending the VM (reboot)");
  if (on_stop_) {
    on_stop_(VmExit{StopReason::kGuestReboot, kExitOk, "guest reset (ACPI reset register)"});
  }
}

}  // namespace skiff
