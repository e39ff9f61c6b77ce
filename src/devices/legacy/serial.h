// SPDX-License-Identifier: Apache-2.0
// A 16550A UART (the PC's COM port) on the port-I/O bus: what Linux's 8250 driver and
// earlycon/earlyprintk talk to. Inserted at kSerialCom1Port, size kSerialPortSize.
//
// Register map (offset from the base port; DLAB = LCR bit 7):
//   0  read: RBR receive buffer        write: THR transmit holding    (DLAB=1: DLL)
//   1  IER interrupt enable: bit 0 received data, 1 THR empty, 2 line status,
//      3 modem status; bits 7:4 read as 0                             (DLAB=1: DLM)
//   2  read: IIR interrupt identification   write: FCR FIFO control
//   3  LCR line control (bit 7 = DLAB)
//   4  MCR modem control: bit 0 DTR, 1 RTS, 2 OUT1, 3 OUT2, 4 LOOP; bits 7:5 read as 0
//   5  LSR line status: bit 0 DR data ready, 1 OE overrun, 5 THRE, 6 TEMT
//   6  MSR modem status: bits 3:0 deltas (DCTS, DDSR, TERI, DDCD), 7:4 CTS DSR RI DCD
//   7  SCR scratch
//
// What this model simplifies, none of it visible to a driver that follows the datasheet:
// - Transmission is instantaneous: a THR write reaches the output sink before the write
//   returns, so the THR and the transmitter are always empty (LSR THRE and TEMT set) and
//   the transmit FIFO never holds a byte. Baud rate, word length and parity are stored
//   but have no effect.
// - The receive buffer holds kRxBufferCapacity bytes whether or not FCR enabled the FIFOs
//   (a real 16550A holds 16, a 16450 one). A guest reads while LSR DR is set, so a deeper
//   buffer only looks like a faster sender; it lets pasted input arrive with fewer
//   wake-ups of the console thread.
// - Received data is reported as IIR "received data available" (0x4) as soon as one byte
//   is buffered, regardless of the FCR trigger level; the real chip would report the
//   character timeout (0xc) a few character times later, which drivers treat the same.
//
// Saved state (state::Stateful, kind "serial", version 1): the registers (ier, lcr, mcr,
// scr, fcr, divisor), the pending LSR error and MSR delta bits, the armed THR-empty
// interrupt, the receive buffer's bytes and the IRQ line level. Host-side plumbing (the
// output sink, the input-space callback and its backpressure flag) is not state: the
// restoring VMM wires its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>

#include "bus/bus_device.h"
#include "state/stateful.h"

namespace skiff {

class Serial : public BusDevice, public state::Stateful {
 public:
  // Receives the bytes the guest transmits. Called with the Serial's lock held, in the
  // order the guest wrote them; it may block (that slows the guest's console down, as a
  // slow line would) but must not call back into the Serial.
  using OutputSink = std::function<void(std::span<const uint8_t>)>;

  // Depth of the receive buffer that enqueue_input fills (see the file comment).
  static constexpr size_t kRxBufferCapacity = 64;

  // `irq` may be null (no interrupt wired, polled use only); `sink` may be empty
  // (output discarded).
  Serial(std::shared_ptr<IrqLine> irq, OutputSink sink);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Host side of the receive line: appends as many of `bytes` as the receive buffer has
  // room for and returns that count. The caller keeps the rest and retries after the
  // input-space callback fires. Accepts nothing while the UART is in loopback mode, whose
  // receiver is disconnected from the line (datasheet, MCR bit 4).
  size_t enqueue_input(std::span<const uint8_t> bytes);

  // Called (with the Serial's lock held: it must not call back into the Serial, and should
  // only wake someone, e.g. write an eventfd) when room appears in the receive buffer after
  // an enqueue_input call accepted fewer bytes than offered. Pass an empty function to
  // unregister; once set_input_space_callback returns, the old callback is not running.
  void set_input_space_callback(std::function<void()> callback);

  // Free bytes in the receive buffer (0 in loopback mode).
  size_t input_space() const;

  // An OutputSink that writes every byte to `fd` (not owned; must outlive the sink):
  // retries EINTR and short writes, waits for POLLOUT on a non-blocking fd. When the
  // reader is gone (EPIPE) or another write error happens, it logs once and drops the
  // output from then on: a closed stdout must not stop the VM. Sets SIGPIPE to SIG_IGN if
  // it is still at its default action, so that EPIPE is returned instead of the signal
  // killing the process.
  static OutputSink fd_output_sink(int fd);

  // state::Stateful. restore_state also drives the IRQ line to the saved level.
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

 private:
  // Register-level accesses; `offset` is 0..7.
  uint8_t read_register_locked(uint8_t offset);
  void write_register_locked(uint8_t offset, uint8_t value);
  void transmit_locked(uint8_t value);
  // The source IIR reports, as the IIR value without the FIFO bits.
  uint8_t pending_interrupt_locked() const;
  // Sets the IRQ line to (interrupt pending && MCR OUT2).
  void update_irq_locked();
  // MSR bits 7:4 from the MCR (loopback) or the fixed host-side modem lines.
  uint8_t modem_status_lines_locked() const;
  // Records MSR delta bits for a change of the modem status lines.
  void note_modem_lines_change_locked(uint8_t old_lines, uint8_t new_lines);
  void clear_rx_locked();
  void notify_input_space_locked();
  bool loopback_locked() const;

  std::shared_ptr<IrqLine> irq_;
  OutputSink sink_;

  mutable std::mutex mutex_;
  std::deque<uint8_t> rx_;           // received, not yet read by the guest
  bool thre_interrupt_ = true;       // THR-empty interrupt armed (cleared by IIR read)
  bool irq_level_ = false;           // last level set on irq_
  bool input_blocked_ = false;       // enqueue_input turned bytes away since last notify
  std::function<void()> input_space_callback_;
  uint8_t ier_ = 0;
  uint8_t lcr_ = 0x03;               // 8 data bits, 1 stop bit, no parity
  uint8_t mcr_ = 0;
  uint8_t lsr_errors_ = 0;           // LSR OE, cleared by reading LSR
  uint8_t msr_deltas_ = 0;           // MSR bits 3:0, cleared by reading MSR
  uint8_t scr_ = 0;
  uint8_t fcr_ = 0;                  // FIFO enable and trigger bits as last written
  uint16_t divisor_ = 12;            // 9600 baud from the 1.8432 MHz clock
};

}  // namespace skiff
