// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/cmos_rtc.h"

#include <algorithm>
#include <atomic>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "arch/x86_64/layout.h"
#include "state/field_checks.h"

namespace skiff {
namespace {

constexpr uint64_t kIndexOffset = 0;  // port 0x70
// Offset 1 (port 0x71) is the data port.
constexpr uint8_t kIndexMask = 0x7f;
constexpr uint8_t kNmiMaskBit = 0x80;

// MC146818A register map (datasheet, "Address Map"), plus the PC's century byte.
constexpr uint8_t kRegSeconds = 0x00;
constexpr uint8_t kRegSecondsAlarm = 0x01;
constexpr uint8_t kRegMinutes = 0x02;
constexpr uint8_t kRegMinutesAlarm = 0x03;
constexpr uint8_t kRegHours = 0x04;
constexpr uint8_t kRegHoursAlarm = 0x05;
constexpr uint8_t kRegDayOfWeek = 0x06;   // 1 = Sunday
constexpr uint8_t kRegDayOfMonth = 0x07;
constexpr uint8_t kRegMonth = 0x08;
constexpr uint8_t kRegYear = 0x09;        // 0..99
constexpr uint8_t kRegA = 0x0a;
constexpr uint8_t kRegB = 0x0b;
constexpr uint8_t kRegC = 0x0c;
constexpr uint8_t kRegD = 0x0d;
constexpr uint8_t kRegCentury = 0x32;     // IBM PC/AT convention, also ACPI FADT CENTURY

// Register A: bit 7 UIP (update in progress, read-only), bits 6:4 divider (010 = the
// 32.768 kHz time base), bits 3:0 periodic rate (0110 = 1024 Hz): the usual BIOS setup.
constexpr uint8_t kRegAUpdateInProgress = 0x80;
constexpr uint8_t kRegADefault = 0x26;
// Register B: bit 2 DM (1 = binary, 0 = BCD), bit 1 24/12 (1 = 24-hour).
constexpr uint8_t kRegBBinary = 0x04;
constexpr uint8_t kRegB24Hour = 0x02;
constexpr uint8_t kRegBDefault = kRegB24Hour;  // BCD, 24-hour, as PC firmware leaves it
// Register D: bit 7 VRT (valid RAM and time), the battery-good bit; the rest read 0.
constexpr uint8_t kRegDValidRamAndTime = 0x80;
// 12-hour mode: bit 7 of the hours register means PM.
constexpr uint8_t kHourPm = 0x80;

constexpr std::string_view kStateKind = "cmos-rtc";
constexpr uint32_t kStateVersion = 1;

bool is_clock_register(uint8_t index) {
  switch (index) {
    case kRegSeconds:
    case kRegMinutes:
    case kRegHours:
    case kRegDayOfWeek:
    case kRegDayOfMonth:
    case kRegMonth:
    case kRegYear:
    case kRegCentury:
      return true;
    default:
      return false;
  }
}

uint8_t to_bcd(int value) {
  return static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

std::time_t host_utc_now() {
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  return now.tv_sec;
}

}  // namespace

CmosRtc::CmosRtc(WallClock clock) : clock_(std::move(clock)) {
  if (!clock_) clock_ = host_utc_now;
  ram_[kRegA] = kRegADefault;
  ram_[kRegB] = kRegBDefault;
}

bool CmosRtc::nmi_masked() const {
  std::lock_guard lock(mutex_);
  return nmi_masked_;
}

void CmosRtc::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  // A wider access is split into byte accesses to consecutive ports.
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset >= x86::kCmosPortSize || i >= x86::kCmosPortSize - offset) {
      data[i] = 0xff;
      continue;
    }
    const uint64_t port = offset + i;
    if (port == kIndexOffset) {
      // Port 0x70 is write-only on the real chipset; reading back the last write is the
      // harmless choice.
      data[i] = static_cast<uint8_t>(index_ | (nmi_masked_ ? kNmiMaskBit : 0));
    } else {
      data[i] = read_data_locked(index_);
    }
  }
}

void CmosRtc::write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  // `outw 0x70` writes the index and the data in one access; byte splitting handles it.
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset >= x86::kCmosPortSize || i >= x86::kCmosPortSize - offset) return;
    const uint64_t port = offset + i;
    if (port == kIndexOffset) {
      index_ = data[i] & kIndexMask;
      nmi_masked_ = (data[i] & kNmiMaskBit) != 0;
    } else {
      write_data_locked(index_, data[i]);
    }
  }
}

uint8_t CmosRtc::read_data_locked(uint8_t index) const {
  if (is_clock_register(index)) return clock_register_locked(index);
  switch (index) {
    case kRegA:
      // UIP always reads 0: the registers are computed whole at each read, never
      // caught in the middle of an update.
      return ram_[kRegA] & static_cast<uint8_t>(~kRegAUpdateInProgress);
    case kRegC:
      return 0;  // no interrupt flags: this RTC raises no interrupts
    case kRegD:
      return kRegDValidRamAndTime;
    default:
      return ram_[index & kIndexMask];
  }
}

void CmosRtc::write_data_locked(uint8_t index, uint8_t value) {
  if (is_clock_register(index)) {
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      spdlog::info("cmos-rtc: guest writes to the clock registers are ignored (first: "
                   "register {:#04x} = {:#04x}); the RTC follows the host's clock",
                   index, value);
    }
    return;
  }
  switch (index) {
    case kRegA:
      ram_[kRegA] = value & static_cast<uint8_t>(~kRegAUpdateInProgress);
      return;
    case kRegC:
    case kRegD:
      return;  // read-only
    default:
      // Register B, alarms (0x01, 0x03, 0x05), shutdown status (0x0f) and NVRAM.
      ram_[index & kIndexMask] = value;
      return;
  }
}

uint8_t CmosRtc::clock_register_locked(uint8_t index) const {
  const std::time_t now = clock_();
  struct tm utc {};
  if (gmtime_r(&now, &utc) == nullptr) return 0;
  const bool binary = (ram_[kRegB] & kRegBBinary) != 0;
  const auto encode = [binary](int value) {
    return binary ? static_cast<uint8_t>(value) : to_bcd(value);
  };
  const int year = utc.tm_year + 1900;
  switch (index) {
    case kRegSeconds:
      return encode(utc.tm_sec > 59 ? 59 : utc.tm_sec);  // no leap second register value
    case kRegMinutes:
      return encode(utc.tm_min);
    case kRegHours: {
      if ((ram_[kRegB] & kRegB24Hour) != 0) return encode(utc.tm_hour);
      // 12-hour mode: 12, 1..11 with bit 7 set for PM (MC146818A table 3).
      const int hour12 = utc.tm_hour % 12 == 0 ? 12 : utc.tm_hour % 12;
      return static_cast<uint8_t>(encode(hour12) | (utc.tm_hour >= 12 ? kHourPm : 0));
    }
    case kRegDayOfWeek:
      return encode(utc.tm_wday + 1);
    case kRegDayOfMonth:
      return encode(utc.tm_mday);
    case kRegMonth:
      return encode(utc.tm_mon + 1);
    case kRegYear:
      return encode(year % 100);
    case kRegCentury:
      return encode((year / 100) % 100);
    default:
      return 0;
  }
}

Result<state::StateBlob> CmosRtc::save_state() const {
  std::lock_guard lock(mutex_);
  state::StateBlob blob(kStateKind, kStateVersion);
  blob.put_bytes("ram", ram_).put("index", index_).put_bool("nmi_masked", nmi_masked_);
  return blob;
}

Result<void> CmosRtc::restore_state(const state::StateBlob& blob) {
  if (auto r = blob.expect(kStateKind, kStateVersion); !r) return r;
  const auto ram = blob.bytes_exact("ram", std::tuple_size_v<decltype(ram_)>);
  const auto index = blob.get<uint8_t>("index", kIndexMask);
  const auto nmi_masked = blob.boolean("nmi_masked");
  if (auto error = state::first_error(ram, index, nmi_masked)) return std::unexpected(*error);
  // The bytes write_data_locked never stores: the clock (computed from the host's time),
  // registers C and D (read-only), and register A's UIP bit (read-only, always 0 here).
  for (size_t i = 0; i < ram->size(); ++i) {
    const auto reg = static_cast<uint8_t>(i);
    if ((is_clock_register(reg) || reg == kRegC || reg == kRegD) && (*ram)[i] != 0) {
      return std::unexpected(state::field_error(
          blob, "ram", fmt::format("byte {:#04x} is {:#04x}; the RTC never stores that register", i, (*ram)[i])));
    }
  }
  if (((*ram)[kRegA] & kRegAUpdateInProgress) != 0) {
    return std::unexpected(state::field_error(blob, "ram", "register A has the read-only update-in-progress bit set"));
  }

  std::lock_guard lock(mutex_);
  std::copy(ram->begin(), ram->end(), ram_.begin());
  index_ = *index;
  nmi_masked_ = *nmi_masked;
  return {};
}

}  // namespace skiff
