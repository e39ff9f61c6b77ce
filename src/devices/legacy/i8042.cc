// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/i8042.h"

#include <atomic>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "state/field_checks.h"

namespace skiff {
namespace {

// Status register (read from port 0x64).
constexpr uint8_t kStatusOutputFull = 0x01;   // a byte waits in the output buffer
constexpr uint8_t kStatusSystemFlag = 0x04;   // copy of command byte bit 2 (POST passed)
constexpr uint8_t kStatusCommand = 0x08;      // last write went to 0x64 (1) or 0x60 (0)
constexpr uint8_t kStatusNotInhibited = 0x10; // keyboard lock switch off
// Input buffer full (bit 1) is never set: every write is handled before it returns.

// Command byte ("controller configuration byte"), read with 0x20, written with 0x60.
constexpr uint8_t kCommandByteKeyboardInterrupt = 0x01;
constexpr uint8_t kCommandByteSystemFlag = 0x04;
constexpr uint8_t kCommandByteKeyboardDisabled = 0x10;
constexpr uint8_t kCommandByteAuxDisabled = 0x20;
constexpr uint8_t kCommandByteTranslate = 0x40;
// What a BIOS leaves behind: keyboard interrupt on, POST passed, scancode translation on.
constexpr uint8_t kCommandByteDefault =
    kCommandByteKeyboardInterrupt | kCommandByteSystemFlag | kCommandByteTranslate;

// Output port (0xd0/0xd1): bit 0 is the CPU reset line, active low; bit 1 the A20 gate.
constexpr uint8_t kOutputPortNoReset = 0x01;
constexpr uint8_t kOutputPortA20 = 0x02;

// Controller commands.
constexpr uint8_t kCmdReadCommandByte = 0x20;
constexpr uint8_t kCmdWriteCommandByte = 0x60;
constexpr uint8_t kCmdDisableAux = 0xa7;
constexpr uint8_t kCmdEnableAux = 0xa8;
constexpr uint8_t kCmdSelfTest = 0xaa;
constexpr uint8_t kCmdKeyboardInterfaceTest = 0xab;
constexpr uint8_t kCmdDisableKeyboard = 0xad;
constexpr uint8_t kCmdEnableKeyboard = 0xae;
constexpr uint8_t kCmdReadOutputPort = 0xd0;
constexpr uint8_t kCmdWriteOutputPort = 0xd1;
constexpr uint8_t kCmdWriteKeyboardBuffer = 0xd2;
// 0xf0-0xff: pulse the output-port lines whose bit (3:0) is clear in the command for
// about 6 us; 0xfe pulses only bit 0, the reset line.
constexpr uint8_t kCmdPulseOutputPortFirst = 0xf0;

// PS/2 keyboard commands and replies.
constexpr uint8_t kKbdSetLeds = 0xed;
constexpr uint8_t kKbdEcho = 0xee;
constexpr uint8_t kKbdScancodeSet = 0xf0;
constexpr uint8_t kKbdIdentify = 0xf2;
constexpr uint8_t kKbdTypematic = 0xf3;
constexpr uint8_t kKbdEnable = 0xf4;
constexpr uint8_t kKbdDisable = 0xf5;
constexpr uint8_t kKbdDefaults = 0xf6;
constexpr uint8_t kKbdReset = 0xff;
constexpr uint8_t kKbdAck = 0xfa;
constexpr uint8_t kKbdResend = 0xfe;
constexpr uint8_t kKbdSelfTestPassed = 0xaa;
constexpr uint8_t kKbdIdFirst = 0xab;
constexpr uint8_t kKbdIdSecondTranslated = 0x41;
constexpr uint8_t kKbdIdSecondRaw = 0x83;
constexpr uint8_t kKbdScancodeSetInUse = 2;
// Bound on queued replies: a guest that never reads cannot make the queue grow.
constexpr size_t kMaxKeyboardReplies = 16;

constexpr uint8_t kSelfTestPassed = 0x55;
constexpr uint8_t kInterfaceTestPassed = 0x00;

// The first few occurrences are logged, then the rest are not: a guest can write these
// ports in a loop.
constexpr uint32_t kMaxLoggedOddities = 16;
std::atomic<uint32_t> g_oddities_logged{0};

template <typename... Args>
void log_oddity(fmt::format_string<Args...> format, Args&&... args) {
  const uint32_t seen = g_oddities_logged.fetch_add(1, std::memory_order_relaxed);
  if (seen >= kMaxLoggedOddities) return;
  spdlog::debug("i8042: {}{}", fmt::format(format, std::forward<Args>(args)...),
                seen + 1 == kMaxLoggedOddities ? " (further i8042 oddities not logged)" : "");
}

constexpr std::string_view kStateKind = "i8042";
constexpr uint32_t kStateVersion = 1;

// The controller commands that wait for a parameter byte on port 0x60, and the keyboard
// commands that do; 0 in the state means "none waiting".
bool is_waiting_controller_command(uint8_t command) {
  return command == kCmdWriteCommandByte || command == kCmdWriteOutputPort || command == kCmdWriteKeyboardBuffer;
}
bool is_waiting_keyboard_command(uint8_t command) {
  return command == kKbdSetLeds || command == kKbdTypematic || command == kKbdScancodeSet;
}

bool irq_level_of(bool output_full, uint8_t command_byte) {
  return output_full && (command_byte & kCommandByteKeyboardInterrupt) != 0;
}

VmExit reset_exit() {
  return VmExit{.reason = StopReason::kGuestReboot,
                .exit_code = kExitOk,
                .detail = "guest reset (i8042)"};
}

}  // namespace

I8042::I8042(std::shared_ptr<IrqLine> keyboard_irq, StopCallback stop)
    : irq_(std::move(keyboard_irq)),
      stop_(std::move(stop)),
      command_byte_(kCommandByteDefault),
      output_port_(kOutputPortNoReset | kOutputPortA20) {}

uint8_t I8042::read(Port port) {
  std::lock_guard lock(mutex_);
  if (port == Port::kCommand) return status_locked();
  // No keyboard: an empty output buffer reads as 0.
  if (!output_full_) return 0;
  output_full_ = false;
  update_irq_locked();
  const uint8_t value = output_buffer_;
  // The next queued keyboard byte moves into the buffer: a new rising edge on IRQ1.
  if (!keyboard_replies_.empty()) {
    output_locked(keyboard_replies_.front());
    keyboard_replies_.pop_front();
  }
  return value;
}

void I8042::write(Port port, uint8_t value) {
  std::optional<VmExit> reset;
  {
    std::lock_guard lock(mutex_);
    last_write_was_command_ = port == Port::kCommand;
    reset = port == Port::kCommand ? command_locked(value) : data_locked(value);
  }
  // Outside the lock: the callback may take the VMM's locks.
  if (reset && stop_) stop_(std::move(*reset));
}

uint8_t I8042::status_locked() const {
  uint8_t status = kStatusNotInhibited;
  if (output_full_) status |= kStatusOutputFull;
  if ((command_byte_ & kCommandByteSystemFlag) != 0) status |= kStatusSystemFlag;
  if (last_write_was_command_) status |= kStatusCommand;
  return status;
}

std::optional<VmExit> I8042::command_locked(uint8_t command) {
  // A new command cancels one still waiting for its parameter byte.
  waiting_command_.reset();
  switch (command) {
    case kCmdReadCommandByte:
      output_locked(command_byte_);
      return std::nullopt;
    case kCmdWriteCommandByte:
    case kCmdWriteOutputPort:
    case kCmdWriteKeyboardBuffer:
      waiting_command_ = command;
      return std::nullopt;
    case kCmdDisableAux:
      command_byte_ |= kCommandByteAuxDisabled;
      return std::nullopt;
    case kCmdEnableAux:
      command_byte_ &= static_cast<uint8_t>(~kCommandByteAuxDisabled);
      return std::nullopt;
    case kCmdSelfTest:
      command_byte_ |= kCommandByteSystemFlag;
      output_locked(kSelfTestPassed);
      return std::nullopt;
    case kCmdKeyboardInterfaceTest:
      output_locked(kInterfaceTestPassed);
      return std::nullopt;
    case kCmdDisableKeyboard:
      command_byte_ |= kCommandByteKeyboardDisabled;
      return std::nullopt;
    case kCmdEnableKeyboard:
      command_byte_ &= static_cast<uint8_t>(~kCommandByteKeyboardDisabled);
      return std::nullopt;
    case kCmdReadOutputPort:
      output_locked(output_port_);
      return std::nullopt;
    default:
      break;
  }
  if (command >= kCmdPulseOutputPortFirst) {
    if ((command & kOutputPortNoReset) == 0) return reset_exit();
    return std::nullopt;  // pulses only other lines: nothing is wired to them
  }
  log_oddity("unsupported controller command {:#04x} ignored", command);
  return std::nullopt;
}

std::optional<VmExit> I8042::data_locked(uint8_t value) {
  if (!waiting_command_) {
    keyboard_locked(value);
    return std::nullopt;
  }
  const uint8_t command = *waiting_command_;
  waiting_command_.reset();
  switch (command) {
    case kCmdWriteCommandByte:
      command_byte_ = value;
      update_irq_locked();
      return std::nullopt;
    case kCmdWriteOutputPort:
      output_port_ = value;
      if ((value & kOutputPortNoReset) == 0) return reset_exit();
      return std::nullopt;
    case kCmdWriteKeyboardBuffer:
      output_locked(value);
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

void I8042::keyboard_locked(uint8_t value) {
  if (keyboard_command_) {
    // The parameter of a command sent before.
    const uint8_t command = *keyboard_command_;
    keyboard_command_.reset();
    if (command == kKbdScancodeSet && value == 0) {
      keyboard_reply_locked({kKbdAck, kKbdScancodeSetInUse});
    } else {
      keyboard_reply_locked({kKbdAck});
    }
    return;
  }
  switch (value) {
    case kKbdReset:
      keyboard_replies_.clear();
      keyboard_reply_locked({kKbdAck, kKbdSelfTestPassed});
      break;
    case kKbdIdentify: {
      const bool translated = (command_byte_ & kCommandByteTranslate) != 0;
      keyboard_reply_locked({kKbdAck, kKbdIdFirst, translated ? kKbdIdSecondTranslated : kKbdIdSecondRaw});
      break;
    }
    case kKbdSetLeds:
    case kKbdTypematic:
    case kKbdScancodeSet:
      keyboard_command_ = value;
      keyboard_reply_locked({kKbdAck});
      break;
    case kKbdEnable:
    case kKbdDisable:
    case kKbdDefaults:
      keyboard_reply_locked({kKbdAck});
      break;
    case kKbdEcho:
      keyboard_reply_locked({kKbdEcho});
      break;
    default:
      log_oddity("unsupported keyboard command {:#04x}: answered with resend", value);
      keyboard_reply_locked({kKbdResend});
      break;
  }
}

bool I8042::press_ctrl_alt_del() {
  std::lock_guard lock(mutex_);
  if ((command_byte_ & kCommandByteKeyboardDisabled) != 0) return false;
  if ((command_byte_ & kCommandByteTranslate) != 0) {
    // Set 1: Ctrl 1d, Alt 38, Delete e0 53; a break code is the make code | 0x80.
    keyboard_reply_locked({0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d});
  } else {
    // Set 2: Ctrl 14, Alt 11, Delete e0 71; a break code is f0 before the make code.
    keyboard_reply_locked({0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14});
  }
  return true;
}

void I8042::keyboard_reply_locked(std::initializer_list<uint8_t> bytes) {
  for (uint8_t byte : bytes) {
    if (keyboard_replies_.size() >= kMaxKeyboardReplies) break;
    keyboard_replies_.push_back(byte);
  }
  if (!output_full_ && !keyboard_replies_.empty()) {
    output_locked(keyboard_replies_.front());
    keyboard_replies_.pop_front();
  }
}

void I8042::output_locked(uint8_t value) {
  output_buffer_ = value;
  output_full_ = true;
  update_irq_locked();
}

void I8042::update_irq_locked() {
  const bool level = irq_level_of(output_full_, command_byte_);
  if (level == irq_level_) return;
  irq_level_ = level;
  if (irq_) irq_->set_level(level);
}

Result<state::StateBlob> I8042::save_state() const {
  std::lock_guard lock(mutex_);
  state::StateBlob blob(kStateKind, kStateVersion);
  const std::vector<uint8_t> replies(keyboard_replies_.begin(), keyboard_replies_.end());
  blob.put("command_byte", command_byte_)
      .put("output_port", output_port_)
      .put("output_buffer", output_buffer_)
      .put_bool("output_full", output_full_)
      .put_bool("last_write_was_command", last_write_was_command_)
      .put("waiting_command", waiting_command_.value_or(0))
      .put("keyboard_command", keyboard_command_.value_or(0))
      .put_bytes("keyboard_replies", replies)
      .put_bool("irq_level", irq_level_);
  return blob;
}

Result<void> I8042::restore_state(const state::StateBlob& blob) {
  if (auto r = blob.expect(kStateKind, kStateVersion); !r) return r;
  const auto command_byte = blob.get<uint8_t>("command_byte");
  const auto output_port = blob.get<uint8_t>("output_port");
  const auto output_buffer = blob.get<uint8_t>("output_buffer");
  const auto output_full = blob.boolean("output_full");
  const auto last_write_was_command = blob.boolean("last_write_was_command");
  const auto waiting_command = blob.get<uint8_t>("waiting_command");
  const auto keyboard_command = blob.get<uint8_t>("keyboard_command");
  const auto replies = blob.bytes("keyboard_replies", kMaxKeyboardReplies);
  const auto irq_level = blob.boolean("irq_level");
  if (auto error = state::first_error(command_byte, output_port, output_buffer, output_full,
                                      last_write_was_command, waiting_command, keyboard_command,
                                      replies, irq_level)) {
    return std::unexpected(*error);
  }
  if (*waiting_command != 0 && !is_waiting_controller_command(*waiting_command)) {
    return std::unexpected(state::field_error(
        blob, "waiting_command", fmt::format("is {:#04x}, not a controller command that takes a parameter", *waiting_command)));
  }
  if (*keyboard_command != 0 && !is_waiting_keyboard_command(*keyboard_command)) {
    return std::unexpected(state::field_error(
        blob, "keyboard_command", fmt::format("is {:#04x}, not a keyboard command that takes a parameter", *keyboard_command)));
  }
  // A queued reply moves into the output buffer as soon as it is empty, so replies wait
  // only behind a full buffer.
  if (!replies->empty() && !*output_full) {
    return std::unexpected(state::field_error(blob, "keyboard_replies", "holds bytes while the output buffer is empty"));
  }
  if (*irq_level != irq_level_of(*output_full, *command_byte)) {
    return std::unexpected(state::field_error(
        blob, "irq_level", "disagrees with the output buffer and the command byte's interrupt enable bit"));
  }

  std::lock_guard lock(mutex_);
  command_byte_ = *command_byte;
  output_port_ = *output_port;
  output_buffer_ = *output_buffer;
  output_full_ = *output_full;
  last_write_was_command_ = *last_write_was_command;
  waiting_command_ = *waiting_command != 0 ? std::optional<uint8_t>(*waiting_command) : std::nullopt;
  keyboard_command_ = *keyboard_command != 0 ? std::optional<uint8_t>(*keyboard_command) : std::nullopt;
  keyboard_replies_.assign(replies->begin(), replies->end());
  // Re-assert the line: a restored VM's interrupt controller has not seen this source's level.
  irq_level_ = *irq_level;
  if (irq_) irq_->set_level(irq_level_);
  return {};
}

I8042PortDevice::I8042PortDevice(std::shared_ptr<I8042> controller, I8042::Port port)
    : controller_(std::move(controller)), port_(port) {}

void I8042PortDevice::read(uint64_t offset, std::span<uint8_t> data) {
  // The ports are one byte wide: only byte 0 of an access at offset 0 reaches the
  // controller; any other byte reads as an undriven bus (0xff).
  for (size_t i = 0; i < data.size(); ++i) data[i] = 0xff;
  if (offset != 0 || data.size() != 1) {
    log_oddity("{}-byte read at offset {} of port {}", data.size(), offset,
               port_ == I8042::Port::kData ? "0x60" : "0x64");
  }
  if (offset == 0 && !data.empty()) data[0] = controller_->read(port_);
}

void I8042PortDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset != 0 || data.size() != 1) {
    log_oddity("{}-byte write at offset {} of port {}", data.size(), offset,
               port_ == I8042::Port::kData ? "0x60" : "0x64");
  }
  if (offset == 0 && !data.empty()) controller_->write(port_, data[0]);
}

}  // namespace skiff
