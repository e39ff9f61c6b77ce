// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/acpi_pm.h"

#include <algorithm>
#include <optional>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "state/field_checks.h"

namespace skiff {
namespace {

// A guest can write sleep requests in a loop: log the first few, then stay quiet.
constexpr unsigned kMaxIgnoredSleepLogs = 8;

constexpr std::string_view kPmStateKind = "acpi-pm";
constexpr std::string_view kResetStateKind = "acpi-reset";
constexpr uint32_t kStateVersion = 1;

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

Result<state::StateBlob> AcpiPmDevice::save_state() const {
  std::lock_guard lock(mutex_);
  state::StateBlob blob(kPmStateKind, kStateVersion);
  blob.put("status", status_)
      .put("enable", enable_)
      .put("control", control_)
      .put_bool("sci_level", sci_level_)
      .put_bool("powered_off", powered_off_);
  return blob;
}

Result<void> AcpiPmDevice::restore_state(const state::StateBlob& blob) {
  if (auto r = blob.expect(kPmStateKind, kStateVersion); !r) return r;
  const auto status = blob.get<uint16_t>("status");
  const auto enable = blob.get<uint16_t>("enable");
  const auto control = blob.get<uint16_t>("control");
  const auto sci_level = blob.boolean("sci_level");
  const auto powered_off = blob.boolean("powered_off");
  if (auto error = state::first_error(status, enable, control, sci_level, powered_off)) {
    return std::unexpected(*error);
  }
  // SLP_EN is a write-only trigger (ACPI 6.4 table 4.18): write() never stores it.
  if ((*control & kPm1ControlSleepEnable) != 0) {
    return std::unexpected(state::field_error(blob, "control", "has the write-only SLP_EN bit set"));
  }
  // The SCI is high exactly while an enabled status bit is set.
  if (*sci_level != ((*status & *enable) != 0)) {
    return std::unexpected(state::field_error(
        blob, "sci_level",
        fmt::format("is {} but status {:#06x} and enable {:#06x} say {}", *sci_level ? "high" : "low", *status, *enable,
                    (*status & *enable) != 0 ? "high" : "low")));
  }

  std::lock_guard lock(mutex_);
  status_ = *status;
  enable_ = *enable;
  control_ = *control;
  powered_off_ = *powered_off;
  // Re-assert the line: a restored VM's interrupt controller has not seen this source's level.
  sci_level_ = *sci_level;
  if (sci_) sci_->set_level(sci_level_);
  return {};
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

Result<state::StateBlob> AcpiResetDevice::save_state() const {
  std::lock_guard lock(mutex_);
  state::StateBlob blob(kResetStateKind, kStateVersion);
  blob.put_bool("reset_requested", reset_);
  return blob;
}

Result<void> AcpiResetDevice::restore_state(const state::StateBlob& blob) {
  if (auto r = blob.expect(kResetStateKind, kStateVersion); !r) return r;
  const auto reset_requested = blob.boolean("reset_requested");
  if (!reset_requested) return std::unexpected(reset_requested.error());
  std::lock_guard lock(mutex_);
  reset_ = *reset_requested;
  return {};
}

}  // namespace skiff
