// SPDX-License-Identifier: Apache-2.0
// The debug-exit port: a guest (a test payload, usually) ends the VM with an exit code of
// its choice by writing it to port kDebugExitPort (0xf4), inserted with size
// kDebugExitPortSize. A 1-, 2- or 4-byte write at offset 0 stops the VM with
// VmExit{StopReason::kDebugExit, value & 0xff, "guest wrote <value> to the debug-exit
// port"}; values above 0xff are logged with a warning once, since only the low 8 bits
// survive as a process exit code. Writes at other offsets or of other widths are ignored
// (logged). Reads return all ones.
//
// Unlike QEMU's isa-debug-exit, which exits with (value << 1) | 1 so that no guest value
// can mean success, skiff uses the value as it is: a guest writing 0 makes `skiff run`
// exit 0. Test payloads written for QEMU must account for the difference.
//
// Saved state (state::Stateful): kind "debug-exit", version 1, no fields: the port keeps
// nothing between accesses.
#pragma once

#include <cstdint>
#include <span>

#include "bus/bus_device.h"
#include "skiff/exit.h"
#include "state/stateful.h"

namespace skiff {

class DebugExit : public BusDevice, public state::Stateful {
 public:
  explicit DebugExit(StopCallback stop);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // state::Stateful.
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

 private:
  // Immutable after construction; StopCallback is thread-safe, so no lock is needed.
  StopCallback stop_;
};

}  // namespace skiff
