// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/serial.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "arch/x86_64/layout.h"
#include "state/field_checks.h"

namespace skiff {
namespace {

// Register offsets (National Semiconductor PC16550D datasheet, table II).
constexpr uint8_t kRegData = 0;        // RBR (read) / THR (write); DLL when DLAB=1
constexpr uint8_t kRegIer = 1;         // DLM when DLAB=1
constexpr uint8_t kRegIirFcr = 2;      // IIR (read) / FCR (write)
constexpr uint8_t kRegLcr = 3;
constexpr uint8_t kRegMcr = 4;
constexpr uint8_t kRegLsr = 5;
constexpr uint8_t kRegMsr = 6;
constexpr uint8_t kRegScr = 7;
constexpr uint8_t kRegisterCount = x86::kSerialPortSize;

// IER: the four interrupt sources; bits 7:4 are always 0.
constexpr uint8_t kIerRxData = 0x01;
constexpr uint8_t kIerThre = 0x02;
constexpr uint8_t kIerLineStatus = 0x04;
constexpr uint8_t kIerModemStatus = 0x08;
constexpr uint8_t kIerMask = 0x0f;

// IIR bits 3:0, by priority: line status (highest), received data, THR empty, modem
// status (lowest). Bit 0 set means "no interrupt pending". Bits 7:6 read as 1 when FCR
// bit 0 enabled the FIFOs; Linux's autoconfig uses that to tell a 16550A from a 16450.
constexpr uint8_t kIirNoInterrupt = 0x01;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirThre = 0x02;
constexpr uint8_t kIirModemStatus = 0x00;
constexpr uint8_t kIirFifosEnabled = 0xc0;

// FCR: bit 0 enables the FIFOs, bits 1 and 2 clear the receive and transmit FIFOs (self
// clearing), bits 7:6 set the receive trigger level. "FCR0 must be 1 when other FCR bits
// are written to or they will not be programmed", and changing FCR0 clears both FIFOs.
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
constexpr uint8_t kFcrTriggerMask = 0xc0;

constexpr uint8_t kLcrDlab = 0x80;

constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;  // gates the IRQ on PC boards; Linux sets it to get IRQs
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrMask = 0x1f;

constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrThre = 0x20;
constexpr uint8_t kLsrTemt = 0x40;

constexpr uint8_t kMsrDcts = 0x01;
constexpr uint8_t kMsrDdsr = 0x02;
constexpr uint8_t kMsrTeri = 0x04;
constexpr uint8_t kMsrDdcd = 0x08;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;
// Outside loopback the host side of the line looks like a connected, ready modem.
constexpr uint8_t kMsrHostLines = kMsrDcd | kMsrDsr | kMsrCts;
constexpr uint8_t kMsrDeltaMask = kMsrDcts | kMsrDdsr | kMsrTeri | kMsrDdcd;

constexpr std::string_view kStateKind = "serial";
constexpr uint32_t kStateVersion = 1;

// The source IIR reports (without the FIFO bits), by the datasheet's priority.
uint8_t pending_interrupt(uint8_t ier, uint8_t lsr_errors, bool rx_empty, bool thre_interrupt,
                          uint8_t msr_deltas) {
  if ((ier & kIerLineStatus) != 0 && lsr_errors != 0) return kIirLineStatus;
  if ((ier & kIerRxData) != 0 && !rx_empty) return kIirRxData;
  if ((ier & kIerThre) != 0 && thre_interrupt) return kIirThre;
  if ((ier & kIerModemStatus) != 0 && msr_deltas != 0) return kIirModemStatus;
  return kIirNoInterrupt;
}

// The level of the UART's interrupt output as the PC board gates it: on PC boards the
// INTR output reaches the interrupt controller through a gate driven by OUT2; Linux's 8250
// driver sets OUT2 when it wants interrupts.
bool irq_level_of(uint8_t pending, uint8_t mcr) {
  return pending != kIirNoInterrupt && (mcr & kMcrOut2) != 0;
}

void ignore_sigpipe_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) != 0) return;
    if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL) return;
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    if (sigaction(SIGPIPE, &ignore, nullptr) == 0) {
      spdlog::debug("serial: SIGPIPE set to SIG_IGN so a closed output reports EPIPE");
    }
  });
}

}  // namespace

Serial::Serial(std::shared_ptr<IrqLine> irq, OutputSink sink)
    : irq_(std::move(irq)), sink_(std::move(sink)) {}

void Serial::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (data.size() != 1) {
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      spdlog::debug("serial: {}-byte read at offset {}; handled as byte reads", data.size(),
                    offset);
    }
  }
  // A wider access is split into byte accesses to consecutive registers, as an ISA bus
  // splits it into byte cycles; bytes beyond the last register read as 0xff (nothing
  // drives the bus there).
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset < kRegisterCount && i < kRegisterCount - offset) {
      data[i] = read_register_locked(static_cast<uint8_t>(offset + i));
    } else {
      data[i] = 0xff;
    }
  }
}

void Serial::write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (data.size() != 1) {
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      spdlog::debug("serial: {}-byte write at offset {}; handled as byte writes", data.size(),
                    offset);
    }
  }
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset < kRegisterCount && i < kRegisterCount - offset) {
      write_register_locked(static_cast<uint8_t>(offset + i), data[i]);
    }
  }
}

uint8_t Serial::read_register_locked(uint8_t offset) {
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kRegData: {
      if (dlab) return static_cast<uint8_t>(divisor_ & 0xff);
      // Reading an empty RBR returns stale data on real hardware; 0 here.
      if (rx_.empty()) return 0;
      const uint8_t value = rx_.front();
      rx_.pop_front();
      notify_input_space_locked();
      update_irq_locked();
      return value;
    }
    case kRegIer:
      if (dlab) return static_cast<uint8_t>(divisor_ >> 8);
      return ier_;
    case kRegIirFcr: {
      const uint8_t pending = pending_interrupt_locked();
      // "THRE interrupt: reset by reading the IIR (if source of interrupt) or writing
      // into the THR" (PC16550D table IV).
      if (pending == kIirThre) {
        thre_interrupt_ = false;
        update_irq_locked();
      }
      return static_cast<uint8_t>(pending | ((fcr_ & kFcrEnable) ? kIirFifosEnabled : 0));
    }
    case kRegLcr:
      return lcr_;
    case kRegMcr:
      return mcr_;
    case kRegLsr: {
      // THRE and TEMT are always set: transmission is instantaneous. Reading the LSR
      // clears the error bits and with them the line-status interrupt.
      const uint8_t lsr = static_cast<uint8_t>(lsr_errors_ | (rx_.empty() ? 0 : kLsrDataReady) |
                                               kLsrThre | kLsrTemt);
      if (lsr_errors_ != 0) {
        lsr_errors_ = 0;
        update_irq_locked();
      }
      return lsr;
    }
    case kRegMsr: {
      // Reading the MSR clears the delta bits and with them the modem-status interrupt.
      const uint8_t msr = static_cast<uint8_t>(modem_status_lines_locked() | msr_deltas_);
      if (msr_deltas_ != 0) {
        msr_deltas_ = 0;
        update_irq_locked();
      }
      return msr;
    }
    case kRegScr:
      return scr_;
    default:
      return 0xff;
  }
}

void Serial::write_register_locked(uint8_t offset, uint8_t value) {
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kRegData:
      if (dlab) {
        divisor_ = static_cast<uint16_t>((divisor_ & 0xff00) | value);
      } else {
        transmit_locked(value);
      }
      return;
    case kRegIer: {
      if (dlab) {
        divisor_ = static_cast<uint16_t>((divisor_ & 0x00ff) | (value << 8));
        return;
      }
      const uint8_t old_ier = ier_;
      ier_ = value & kIerMask;
      // Enabling the THRE interrupt while the THR is empty (always, here) raises it at
      // once; Linux's 8250 startup checks for exactly this (its UART_BUG_THRE test) and
      // its start_tx relies on it.
      if ((old_ier & kIerThre) == 0 && (ier_ & kIerThre) != 0) thre_interrupt_ = true;
      update_irq_locked();
      return;
    }
    case kRegIirFcr: {
      const bool was_enabled = (fcr_ & kFcrEnable) != 0;
      const bool enable = (value & kFcrEnable) != 0;
      if (enable != was_enabled) clear_rx_locked();
      if (!enable) {
        fcr_ = 0;
      } else {
        if ((value & kFcrClearRx) != 0) clear_rx_locked();
        // FCR bit 2 (clear transmit FIFO) has nothing to clear: the THR never holds data.
        fcr_ = value & (kFcrEnable | kFcrTriggerMask);
      }
      update_irq_locked();
      return;
    }
    case kRegLcr:
      lcr_ = value;
      return;
    case kRegMcr: {
      const bool was_loopback = loopback_locked();
      const uint8_t old_lines = modem_status_lines_locked();
      mcr_ = value & kMcrMask;
      note_modem_lines_change_locked(old_lines, modem_status_lines_locked());
      // Leaving loopback reconnects the receiver to the host's input.
      if (was_loopback && !loopback_locked()) notify_input_space_locked();
      update_irq_locked();
      return;
    }
    case kRegLsr:
    case kRegMsr:
      // Writable only for factory testing on the real chip; ignored.
      return;
    case kRegScr:
      scr_ = value;
      return;
    default:
      return;
  }
}

void Serial::transmit_locked(uint8_t value) {
  if (loopback_locked()) {
    // Loopback: "the transmitter Serial Output is set to the marking state, and the
    // receiver Serial Input is disconnected ... the output of the Transmitter Shift
    // Register is looped back into the Receiver Shift Register input" (PC16550D, MCR bit
    // 4). A byte arriving with the receive buffer full is an overrun: it is lost and
    // LSR OE is set.
    if (rx_.size() >= kRxBufferCapacity) {
      lsr_errors_ |= kLsrOverrun;
    } else {
      rx_.push_back(value);
    }
  } else if (sink_) {
    sink_(std::span<const uint8_t>(&value, 1));
  }
  thre_interrupt_ = true;
  update_irq_locked();
}

uint8_t Serial::pending_interrupt_locked() const {
  return pending_interrupt(ier_, lsr_errors_, rx_.empty(), thre_interrupt_, msr_deltas_);
}

void Serial::update_irq_locked() {
  const bool level = irq_level_of(pending_interrupt_locked(), mcr_);
  if (level == irq_level_) return;
  irq_level_ = level;
  if (irq_) irq_->set_level(level);
}

bool Serial::loopback_locked() const { return (mcr_ & kMcrLoop) != 0; }

uint8_t Serial::modem_status_lines_locked() const {
  if (!loopback_locked()) return kMsrHostLines;
  // Loopback wires the modem control outputs to the status inputs: RTS->CTS, DTR->DSR,
  // OUT1->RI, OUT2->DCD (PC16550D, MCR bit 4).
  uint8_t lines = 0;
  if ((mcr_ & kMcrRts) != 0) lines |= kMsrCts;
  if ((mcr_ & kMcrDtr) != 0) lines |= kMsrDsr;
  if ((mcr_ & kMcrOut1) != 0) lines |= kMsrRi;
  if ((mcr_ & kMcrOut2) != 0) lines |= kMsrDcd;
  return lines;
}

void Serial::note_modem_lines_change_locked(uint8_t old_lines, uint8_t new_lines) {
  const uint8_t changed = old_lines ^ new_lines;
  if ((changed & kMsrCts) != 0) msr_deltas_ |= kMsrDcts;
  if ((changed & kMsrDsr) != 0) msr_deltas_ |= kMsrDdsr;
  if ((changed & kMsrDcd) != 0) msr_deltas_ |= kMsrDdcd;
  // TERI: "trailing edge of ring indicator", RI going from on to off.
  if ((old_lines & kMsrRi) != 0 && (new_lines & kMsrRi) == 0) msr_deltas_ |= kMsrTeri;
}

void Serial::clear_rx_locked() {
  rx_.clear();
  notify_input_space_locked();
}

void Serial::notify_input_space_locked() {
  if (!input_blocked_ || !input_space_callback_) return;
  if (loopback_locked() || rx_.size() >= kRxBufferCapacity) return;
  input_blocked_ = false;
  input_space_callback_();
}

size_t Serial::enqueue_input(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  const size_t space = loopback_locked() ? 0 : kRxBufferCapacity - rx_.size();
  const size_t accepted = std::min(space, bytes.size());
  rx_.insert(rx_.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(accepted));
  if (accepted < bytes.size()) input_blocked_ = true;
  if (accepted > 0) update_irq_locked();
  return accepted;
}

void Serial::set_input_space_callback(std::function<void()> callback) {
  std::lock_guard lock(mutex_);
  input_space_callback_ = std::move(callback);
}

size_t Serial::input_space() const {
  std::lock_guard lock(mutex_);
  return loopback_locked() ? 0 : kRxBufferCapacity - rx_.size();
}

Result<state::StateBlob> Serial::save_state() const {
  std::lock_guard lock(mutex_);
  state::StateBlob blob(kStateKind, kStateVersion);
  const std::vector<uint8_t> rx(rx_.begin(), rx_.end());
  blob.put("ier", ier_)
      .put("lcr", lcr_)
      .put("mcr", mcr_)
      .put("scr", scr_)
      .put("fcr", fcr_)
      .put("divisor", divisor_)
      .put("lsr_errors", lsr_errors_)
      .put("msr_deltas", msr_deltas_)
      .put_bool("thre_interrupt", thre_interrupt_)
      .put_bytes("rx", rx)
      .put_bool("irq_level", irq_level_);
  return blob;
}

Result<void> Serial::restore_state(const state::StateBlob& blob) {
  if (auto r = blob.expect(kStateKind, kStateVersion); !r) return r;
  // Every field is read and checked before anything is applied: a refused blob leaves the
  // UART as it was.
  const auto ier = blob.get<uint8_t>("ier", kIerMask);
  const auto lcr = blob.get<uint8_t>("lcr");
  const auto mcr = blob.get<uint8_t>("mcr", kMcrMask);
  const auto scr = blob.get<uint8_t>("scr");
  const auto fcr = blob.get<uint8_t>("fcr");
  const auto divisor = blob.get<uint16_t>("divisor");
  const auto lsr_errors = blob.get<uint8_t>("lsr_errors");
  const auto msr_deltas = blob.get<uint8_t>("msr_deltas", kMsrDeltaMask);
  const auto thre_interrupt = blob.boolean("thre_interrupt");
  // The receive buffer never holds more than kRxBufferCapacity bytes (enqueue_input and
  // loopback both stop there); a longer one would break input_space()'s arithmetic.
  const auto rx = blob.bytes("rx", kRxBufferCapacity);
  const auto irq_level = blob.boolean("irq_level");
  if (auto error = state::first_error(ier, lcr, mcr, scr, fcr, divisor, lsr_errors, msr_deltas,
                                      thre_interrupt, rx, irq_level)) {
    return std::unexpected(*error);
  }
  // FCR keeps only the enable and trigger bits, and is 0 while the FIFOs are disabled.
  if ((*fcr & static_cast<uint8_t>(~(kFcrEnable | kFcrTriggerMask))) != 0 ||
      (*fcr != 0 && (*fcr & kFcrEnable) == 0)) {
    return std::unexpected(state::field_error(
        blob, "fcr", fmt::format("is {:#04x}: only the enable bit and, with it, the trigger bits can be set", *fcr)));
  }
  // The only line error this model raises is the overrun (loopback into a full buffer).
  if ((*lsr_errors & static_cast<uint8_t>(~kLsrOverrun)) != 0) {
    return std::unexpected(state::field_error(
        blob, "lsr_errors", fmt::format("is {:#04x}: only the overrun bit ({:#04x}) can be pending", *lsr_errors, kLsrOverrun)));
  }
  // The line level is a function of the registers; a blob where they disagree was not
  // written by this model.
  const bool expected_level =
      irq_level_of(pending_interrupt(*ier, *lsr_errors, rx->empty(), *thre_interrupt, *msr_deltas), *mcr);
  if (*irq_level != expected_level) {
    return std::unexpected(state::field_error(
        blob, "irq_level", fmt::format("is {} but the registers say the line is {}", *irq_level ? "high" : "low",
                                       expected_level ? "high" : "low")));
  }

  std::lock_guard lock(mutex_);
  ier_ = *ier;
  lcr_ = *lcr;
  mcr_ = *mcr;
  scr_ = *scr;
  fcr_ = *fcr;
  divisor_ = *divisor;
  lsr_errors_ = *lsr_errors;
  msr_deltas_ = *msr_deltas;
  thre_interrupt_ = *thre_interrupt;
  rx_.assign(rx->begin(), rx->end());
  input_blocked_ = false;
  // Re-assert the line: the interrupt controller of a restored VM has not seen this
  // device's level (KVM keeps each source's line level outside KVM_GET_IRQCHIP's state).
  irq_level_ = *irq_level;
  if (irq_) irq_->set_level(irq_level_);
  return {};
}

Serial::OutputSink Serial::fd_output_sink(int fd) {
  ignore_sigpipe_once();
  struct State {
    int fd;
    std::atomic<bool> failed{false};
  };
  auto state = std::make_shared<State>();
  state->fd = fd;
  return [state](std::span<const uint8_t> bytes) {
    if (state->failed.load(std::memory_order_relaxed)) return;
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t written = ::write(state->fd, bytes.data() + done, bytes.size() - done);
      if (written > 0) {
        done += static_cast<size_t>(written);
        continue;
      }
      const int err = written < 0 ? errno : EIO;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        pollfd pfd{.fd = state->fd, .events = POLLOUT, .revents = 0};
        if (::poll(&pfd, 1, -1) >= 0 || errno == EINTR) continue;
      }
      if (!state->failed.exchange(true)) {
        if (err == EPIPE) {
          spdlog::warn("serial: output fd {} was closed by its reader (EPIPE); guest console "
                       "output is discarded from now on",
                       state->fd);
        } else {
          spdlog::warn("serial: write to output fd {}: {}; guest console output is discarded "
                       "from now on",
                       state->fd, std::strerror(err));
        }
      }
      return;
    }
  };
}

}  // namespace skiff
