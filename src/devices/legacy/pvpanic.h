// SPDX-License-Identifier: Apache-2.0
// QEMU's ISA pvpanic device: a guest kernel tells the host that it panicked by writing to
// one I/O port (QEMU docs/specs/pvpanic.rst, "ISA Interface"). Linux's pvpanic-mmio driver
// binds to it through ACPI (_HID "QEMU0001", an I/O resource in _CRS), reads the port to
// learn which events the device supports, and from its panic notifier writes
//   bit 0 PANICKED       "a guest panic has happened and should be processed by the host"
//   bit 1 CRASH_LOADED   "... will be handled by the guest" (a kdump kernel is loaded)
//
// skiff stops the VM on PANICKED with VmExit{StopReason::kGuestPanic, kExitGuestPanic};
// CRASH_LOADED is logged and the guest continues into its crash kernel, as the spec asks.
// Reads return the supported events (PANICKED | CRASH_LOADED); bits skiff does not know
// are ignored on write, as the spec asks of a device.
//
// Saved state (state::Stateful): kind "pvpanic", version 1, with the count of
// CRASH_LOADED events so far (it limits the warnings logged). PANICKED is not state: it
// stops the VM.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>

#include "arch/x86_64/acpi/acpi_tables.h"
#include "arch/x86_64/layout.h"
#include "bus/bus_device.h"
#include "skiff/exit.h"
#include "state/stateful.h"

namespace skiff {

// The port QEMU uses by default, and the size of the register (one byte).
using x86::kPvpanicPort;
using x86::kPvpanicPortSize;

inline constexpr uint8_t kPvpanicPanicked = 1u << 0;
inline constexpr uint8_t kPvpanicCrashLoaded = 1u << 1;
inline constexpr uint8_t kPvpanicSupportedEvents = kPvpanicPanicked | kPvpanicCrashLoaded;

class Pvpanic : public BusDevice, public state::Stateful {
 public:
  explicit Pvpanic(StopCallback stop);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // How often the guest reported a loaded crash kernel (for tests and diagnostics).
  uint32_t crash_loaded_events() const { return crash_loaded_events_.load(std::memory_order_relaxed); }

  // state::Stateful.
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

 private:
  StopCallback stop_;  // immutable after construction; thread-safe by contract
  std::atomic<uint32_t> crash_loaded_events_{0};
};

// The DSDT node Linux binds its pvpanic driver to: Device (PEVT) with _HID "QEMU0001",
// _CRS = IO(Decode16, port, port, 1, 1) and _STA 0x0F (present, enabled, shown,
// functioning), as QEMU describes its ISA pvpanic.
x86::AcpiDevice pvpanic_acpi_device(uint16_t port = kPvpanicPort);

}  // namespace skiff
