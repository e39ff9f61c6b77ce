// SPDX-License-Identifier: Apache-2.0
// The PC's CMOS RAM and real-time clock (Motorola MC146818A), inserted at kCmosPort with
// size kCmosPortSize: offset 0 (port 0x70) selects a register, bit 7 of that write being
// the NMI mask (kept, reported by nmi_masked(), not acted on); offset 1 (port 0x71) reads
// or writes the selected one of 128 bytes.
//
// The clock registers (0x00 seconds, 0x02 minutes, 0x04 hours, 0x06 day of week, 0x07 day
// of month, 0x08 month, 0x09 year, 0x32 century) are computed from the host's UTC time at
// each read, in BCD or binary as register B bit 2 (DM) says and in 24- or 12-hour form
// (12-hour: bit 7 of the hour = PM) as register B bit 1 says. Writes to them are ignored
// (logged once): the guest cannot move the host's clock. Register A's update-in-progress
// bit reads 0, so a reader never has to wait; register D reads 0x80 (valid RAM and time:
// the battery is good). Register B, the alarm registers (0x01, 0x03, 0x05), register 0x0f
// (shutdown status) and the rest of CMOS RAM store what the guest writes.
//
// No interrupts: periodic, alarm and update-ended interrupts (register B bits 6:4) are
// never raised on IRQ 8 and register C reads 0. Linux reads the time with polling
// (mc146818_get_time) and needs none of them; a user-space tool that waits for an update
// interrupt (hwclock through /dev/rtc) times out; `hwclock --directisa` polls and works.
//
// Saved state (state::Stateful, kind "cmos-rtc", version 1): the 128 bytes of CMOS RAM as
// stored (register A without UIP, register B, the alarms, shutdown status, NVRAM; the
// clock bytes and registers C and D are never stored and must be 0), the selected index
// and the NMI mask bit. There is no time offset to save: the clock always reads the host's
// UTC time, so a restored RTC reads the time of the host it runs on.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>
#include <span>

#include "bus/bus_device.h"
#include "state/stateful.h"

namespace skiff {

class CmosRtc : public BusDevice, public state::Stateful {
 public:
  // Returns the current UTC time in seconds since the epoch; tests inject their own.
  using WallClock = std::function<std::time_t()>;

  // With an empty `clock`, the host's CLOCK_REALTIME is used.
  explicit CmosRtc(WallClock clock = {});

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Bit 7 of the last index write: the guest asked for NMIs to be masked.
  bool nmi_masked() const;

  // state::Stateful.
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

 private:
  uint8_t read_data_locked(uint8_t index) const;
  void write_data_locked(uint8_t index, uint8_t value);
  // The clock register `index` at the current time, encoded per register B.
  uint8_t clock_register_locked(uint8_t index) const;

  WallClock clock_;
  mutable std::mutex mutex_;
  std::array<uint8_t, 128> ram_{};
  uint8_t index_ = 0;          // register selected through port 0x70, 0..127
  bool nmi_masked_ = false;
};

}  // namespace skiff
