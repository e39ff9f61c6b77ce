// SPDX-License-Identifier: Apache-2.0
// The PC keyboard controller (Intel 8042) without a keyboard or mouse behind it: enough
// for the guest to probe it and, above all, to reset the machine through it (Linux's
// reboot=k writes command 0xfe to port 0x64), which skiff turns into a VM stop with
// StopReason::kGuestReboot.
//
// Bus registration: the controller answers two one-byte ports that are not adjacent
// (0x60 data, 0x64 command/status; 0x61 between them is the PC speaker / NMI status port,
// handled elsewhere). So the state lives in one I8042 object and the bus gets two small
// I8042PortDevice adapters:
//
//   auto kbc = std::make_shared<I8042>(irq1, stop);
//   pio_bus.insert(std::make_shared<I8042PortDevice>(kbc, I8042::Port::kData),
//                  x86::kI8042DataPort, 1, "i8042-data");
//   pio_bus.insert(std::make_shared<I8042PortDevice>(kbc, I8042::Port::kCommand),
//                  x86::kI8042CommandPort, 1, "i8042-command");
//
// Implemented controller commands (written to port 0x64): 0x20 read the command byte,
// 0x60 write the command byte, 0xa7/0xa8 disable/enable the auxiliary port (the command
// byte bit only; there is no mouse), 0xaa self-test (answers 0x55), 0xab keyboard
// interface test (answers 0x00), 0xad/0xae disable/enable the keyboard, 0xd0 read the
// output port, 0xd1 write the output port (bit 0 clear = assert reset), 0xd2 write the
// keyboard output buffer, 0xf0-0xff pulse output-port lines (bit 0 clear = reset).
// Others are ignored. The A20 gate (output port bit 1) is stored but A20 is always enabled.
//
// Bytes written to port 0x60 with no controller command waiting go to the keyboard, a
// minimal PS/2 keyboard that never has a key pressed but answers the commands a driver
// probes with, so Linux's atkbd finds it at once instead of waiting for timeouts:
// 0xff reset (ACK, then self-test passed 0xaa), 0xf2 identify (ACK, 0xab, then 0x41 when
// the controller translates scancodes, 0x83 when not), 0xed LEDs / 0xf3 typematic rate /
// 0xf0 scancode set (ACK, and ACK for the parameter; set query answers 2), 0xf4 enable,
// 0xf5 disable, 0xf6 defaults (ACK), 0xee echo (0xee); anything else gets 0xfe (resend).
// Replies queue behind the one-byte output buffer and raise IRQ1 one byte at a time.
//
// Saved state (state::Stateful, kind "i8042", version 1): the command byte, the output
// port, the output buffer and whether it is full, status bit 3 (last write was a command),
// the controller command and the keyboard command waiting for their parameter byte (0 when
// none: no command that waits is 0), the keyboard replies queued behind the output buffer
// and the IRQ1 level.
#pragma once

#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

#include "bus/bus_device.h"
#include "skiff/exit.h"
#include "state/stateful.h"

namespace skiff {

class I8042 : public state::Stateful {
 public:
  enum class Port { kData, kCommand };  // 0x60 and 0x64

  // `keyboard_irq` (IRQ1) may be null; `stop` receives the reset request.
  I8042(std::shared_ptr<IrqLine> keyboard_irq, StopCallback stop);

  // Port 0x60 reads the output buffer, port 0x64 the status register.
  uint8_t read(Port port);
  // Port 0x60 takes a command's parameter byte, port 0x64 a controller command.
  void write(Port port, uint8_t value);

  // Presses and releases Ctrl-Alt-Del on the keyboard: the host's way to ask a guest to
  // restart or shut down (Linux signals init, which runs its ctrlaltdel action). The
  // scancodes are set 1 when the controller translates (the BIOS default Linux keeps),
  // set 2 otherwise. False when the guest disabled the keyboard.
  bool press_ctrl_alt_del();

  // state::Stateful. restore_state also drives IRQ1 to the saved level.
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

 private:
  // Puts a byte in the output buffer (one byte deep, as on the real chip: a new byte
  // replaces one the guest has not read).
  void output_locked(uint8_t value);
  // IRQ1 is high while the output buffer is full and command byte bit 0 enables it.
  void update_irq_locked();
  // Returns the reset request to make once the lock is released.
  std::optional<VmExit> command_locked(uint8_t command);
  std::optional<VmExit> data_locked(uint8_t value);
  // A byte for the keyboard (port 0x60 with no controller command waiting).
  void keyboard_locked(uint8_t value);
  // Queues keyboard replies behind the output buffer.
  void keyboard_reply_locked(std::initializer_list<uint8_t> bytes);
  uint8_t status_locked() const;

  std::shared_ptr<IrqLine> irq_;
  StopCallback stop_;

  mutable std::mutex mutex_;
  uint8_t command_byte_;
  uint8_t output_port_;
  uint8_t output_buffer_ = 0;
  bool output_full_ = false;
  bool last_write_was_command_ = true;  // status bit 3
  std::optional<uint8_t> waiting_command_;  // a command that takes a byte on port 0x60
  std::optional<uint8_t> keyboard_command_;  // a keyboard command waiting for its parameter
  std::deque<uint8_t> keyboard_replies_;     // keyboard bytes behind the output buffer
  bool irq_level_ = false;
};

// One of the two ports of an I8042 as a BusDevice, inserted with size 1.
class I8042PortDevice : public BusDevice {
 public:
  I8042PortDevice(std::shared_ptr<I8042> controller, I8042::Port port);
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::shared_ptr<I8042> controller_;
  I8042::Port port_;
};

}  // namespace skiff
