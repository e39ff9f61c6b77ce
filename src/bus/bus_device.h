// SPDX-License-Identifier: Apache-2.0
// What a device and the machine hand each other: BusDevice (port I/O and MMIO accesses in),
// IrqLine (interrupts out), StopCallback (stop requests out).
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "skiff/exit.h"

namespace skiff {

// Anything that answers port I/O or MMIO accesses. `offset` is relative to the base the
// device was inserted at; `data` is 1, 2, 4 or 8 bytes (little-endian). Devices are called
// from vCPU threads concurrently and must lock their own state.
class BusDevice {
 public:
  virtual ~BusDevice() = default;
  virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

// An interrupt line into the guest's interrupt controller (an IOAPIC/PIC pin). Edge
// pins fire on the rising edge of set_level(true).
class IrqLine {
 public:
  virtual ~IrqLine() = default;
  virtual void set_level(bool high) = 0;
  // Raises and lowers the line: one edge for edge-triggered pins.
  void pulse() {
    set_level(true);
    set_level(false);
  }
};

// How a device asks the VM to stop (guest reset, power-off, debug exit). Safe to call from
// any thread, more than once: the first request wins.
using StopCallback = std::function<void(VmExit)>;

}  // namespace skiff
