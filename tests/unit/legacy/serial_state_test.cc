// SPDX-License-Identifier: Apache-2.0
// Serial's state: a UART saved in the middle of use and restored into a fresh one carries
// on identically, and restore refuses blobs it cannot trust.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "devices/legacy/serial.h"
#include "unit/legacy/fake_irq_line.h"
#include "unit/legacy/state_test_util.h"

namespace skiff {
namespace {

using testing::fails_with;
using testing::through_bytes;

constexpr uint64_t kData = 0;
constexpr uint64_t kIer = 1;
constexpr uint64_t kIir = 2;
constexpr uint64_t kLcr = 3;
constexpr uint64_t kMcr = 4;
constexpr uint64_t kLsr = 5;
constexpr uint64_t kMsr = 6;
constexpr uint64_t kScr = 7;

// A UART with its own IRQ line and output capture.
struct Uart {
  Uart()
      : irq(std::make_shared<testing::FakeIrqLine>()),
        serial(irq, [this](std::span<const uint8_t> bytes) { output.insert(output.end(), bytes.begin(), bytes.end()); }) {}

  uint8_t read(uint64_t offset) {
    uint8_t value = 0;
    serial.read(offset, std::span<uint8_t>(&value, 1));
    return value;
  }
  void write(uint64_t offset, uint8_t value) { serial.write(offset, std::span<const uint8_t>(&value, 1)); }
  size_t enqueue(std::string_view text) {
    return serial.enqueue_input(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }

  std::shared_ptr<testing::FakeIrqLine> irq;
  std::vector<uint8_t> output;
  Serial serial;
};

// A guest's use of a UART after the restore point: what every read returns and the IRQ
// level after every access, in order.
std::vector<int> carry_on(Uart& uart) {
  std::vector<int> seen;
  const auto read = [&](uint64_t offset) {
    seen.push_back(uart.read(offset));
    seen.push_back(uart.irq->level() ? 1 : 0);
  };
  const auto write = [&](uint64_t offset, uint8_t value) {
    uart.write(offset, value);
    seen.push_back(uart.irq->level() ? 1 : 0);
  };
  read(kIir);  // received data first
  read(kLsr);
  for (int i = 0; i < 4; ++i) read(kData);
  read(kIir);  // then THR empty, which this read clears
  read(kIir);  // nothing left
  read(kLcr);
  read(kMcr);
  read(kScr);
  read(kMsr);
  read(kIer);
  write(kLcr, 0x9b);  // DLAB on: the divisor latch
  read(kData);
  read(kIer);
  write(kLcr, 0x1b);
  write(kData, 'x');  // transmit: re-arms THR empty
  read(kIir);
  read(kLsr);
  return seen;
}

// Drives a UART the way Linux's 8250 driver leaves it mid-use: FIFOs on, divisor 1
// (115200 baud), 8E1, OUT2 for interrupts, received data and THR empty both enabled and
// pending, bytes waiting in the receive buffer, scratch written.
void drive_mid_use(Uart& uart) {
  uart.write(kLcr, 0x80);
  uart.write(kData, 0x01);  // DLL
  uart.write(kIer, 0x00);   // DLM
  uart.write(kLcr, 0x1b);   // 8 bits, even parity, DLAB off
  uart.write(2, 0xc1);      // FCR: FIFOs on, trigger 14
  uart.write(kMcr, 0x0b);   // DTR, RTS, OUT2
  uart.write(kScr, 0x5a);
  uart.write(kIer, 0x03);   // received data + THR empty
  ASSERT_EQ(uart.enqueue("abcd"), 4u);
}

TEST(SerialState, RestoredUartCarriesOnIdentically) {
  Uart original;
  drive_mid_use(original);
  ASSERT_TRUE(original.irq->level());

  auto saved = original.serial.save_state();
  ASSERT_TRUE(saved) << saved.error().message();
  EXPECT_EQ(saved->kind(), "serial");
  EXPECT_EQ(saved->version(), 1u);
  const state::StateBlob blob = through_bytes(*saved);

  Uart restored;
  auto r = restored.serial.restore_state(blob);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(restored.irq->level()) << "the restored UART re-asserts its pending interrupt";
  EXPECT_EQ(restored.serial.input_space(), Serial::kRxBufferCapacity - 4);
  auto again = restored.serial.save_state();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *saved) << again->describe() << "\n" << saved->describe();

  EXPECT_EQ(carry_on(restored), carry_on(original));
  EXPECT_EQ(restored.output, original.output);
  EXPECT_EQ(std::string(restored.output.begin(), restored.output.end()), "x");
}

TEST(SerialState, LoopbackOverrunAndModemDeltasSurvive) {
  Uart original;
  original.write(kMcr, 0x18);  // loopback with OUT2 only: CTS and DSR drop, DCTS and DDSR are recorded
  original.write(kIer, 0x0d);  // received data, line status, modem status
  for (size_t i = 0; i <= Serial::kRxBufferCapacity; ++i) original.write(kData, static_cast<uint8_t>(i));  // one overrun
  auto saved = original.serial.save_state();
  ASSERT_TRUE(saved);
  Uart restored;
  ASSERT_TRUE(restored.serial.restore_state(through_bytes(*saved)));
  EXPECT_EQ(restored.serial.input_space(), 0u) << "loopback: the receiver is disconnected";
  std::vector<int> a;
  std::vector<int> b;
  for (Uart* uart : {&original, &restored}) {
    auto& seen = uart == &original ? a : b;
    seen.push_back(uart->read(kIir));  // line status (overrun) first
    seen.push_back(uart->read(kLsr));
    seen.push_back(uart->read(kMsr));
    for (size_t i = 0; i < Serial::kRxBufferCapacity + 1; ++i) seen.push_back(uart->read(kData));
    seen.push_back(uart->read(kIir));
    seen.push_back(uart->irq->level());
  }
  EXPECT_EQ(a, b);
}

// A complete, valid serial blob written by hand, leaving out `skip`.
state::StateBlob hand_made(std::string_view skip = "") {
  state::StateBlob blob("serial", 1);
  const std::vector<uint8_t> rx = {'o', 'k'};
  const auto put = [&](std::string_view field, uint64_t value) {
    if (field != skip) blob.put(field, value);
  };
  put("ier", 0x01);
  put("lcr", 0x03);
  put("mcr", 0x08);
  put("scr", 0);
  put("fcr", 0x01);
  put("divisor", 12);
  put("lsr_errors", 0);
  put("msr_deltas", 0);
  if (skip != "thre_interrupt") blob.put_bool("thre_interrupt", false);
  if (skip != "rx") blob.put_bytes("rx", rx);
  if (skip != "irq_level") blob.put_bool("irq_level", true);
  return blob;
}

TEST(SerialState, HandMadeBlobIsAccepted) {
  Uart uart;
  auto r = uart.serial.restore_state(through_bytes(hand_made()));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(uart.irq->level());
  EXPECT_EQ(uart.read(kData), 'o');
}

TEST(SerialState, RefusesAnotherKindOrANewerVersion) {
  Uart uart;
  EXPECT_TRUE(fails_with(uart.serial.restore_state(state::StateBlob("i8042", 1)), "state of i8042 where serial was expected"));
  state::StateBlob newer("serial", 2);
  EXPECT_TRUE(fails_with(uart.serial.restore_state(newer), "version 2 is newer"));
}

TEST(SerialState, RefusesEveryMissingField) {
  for (std::string_view field : {"ier", "lcr", "mcr", "scr", "fcr", "divisor", "lsr_errors", "msr_deltas",
                                 "thre_interrupt", "rx", "irq_level"}) {
    Uart uart;
    EXPECT_TRUE(fails_with(uart.serial.restore_state(hand_made(field)), fmt::format("field \"{}\" is missing", field)));
  }
}

TEST(SerialState, RefusesOutOfRangeFields) {
  struct Case {
    std::string_view field;
    uint64_t value;
    std::string_view error;
  };
  const Case cases[] = {
      {"ier", 0x10, "field \"ier\" is 16, above the maximum 15"},
      {"mcr", 0x20, "field \"mcr\" is 32, above the maximum 31"},
      {"lcr", 0x100, "field \"lcr\" is 256"},
      {"divisor", 0x10000, "field \"divisor\""},
      {"fcr", 0xc0, "field \"fcr\" is 0xc0"},   // trigger bits without the enable bit
      {"fcr", 0x07, "field \"fcr\" is 0x07"},   // the self-clearing bits are never stored
      {"lsr_errors", 0x01, "field \"lsr_errors\""},
      {"msr_deltas", 0x10, "field \"msr_deltas\""},
  };
  for (const Case& c : cases) {
    state::StateBlob blob = hand_made();
    blob.put(c.field, c.value);
    Uart uart;
    EXPECT_TRUE(fails_with(uart.serial.restore_state(through_bytes(blob)), c.error)) << c.field << " = " << c.value;
  }
}

TEST(SerialState, RefusesAReceiveBufferLongerThanTheFifo) {
  state::StateBlob blob = hand_made();
  blob.put_bytes("rx", std::vector<uint8_t>(Serial::kRxBufferCapacity + 1, 'x'));
  Uart uart;
  EXPECT_TRUE(fails_with(uart.serial.restore_state(through_bytes(blob)), "field \"rx\" holds 65 bytes, above the maximum 64"));
  // Nothing was applied: the UART is still a fresh one.
  EXPECT_EQ(uart.serial.input_space(), Serial::kRxBufferCapacity);
  EXPECT_EQ(uart.read(kLcr), 0x03);
  EXPECT_TRUE(uart.irq->levels().empty());
}

TEST(SerialState, RefusesAnIrqLevelTheRegistersContradict) {
  state::StateBlob blob = hand_made();
  blob.put_bool("irq_level", false);  // received data enabled and waiting, OUT2 set: the line is high
  Uart uart;
  EXPECT_TRUE(fails_with(uart.serial.restore_state(blob), "field \"irq_level\" is low but the registers say the line is high"));
  blob = hand_made();
  blob.put("mcr", 0);  // OUT2 clear: the line cannot be high
  EXPECT_TRUE(fails_with(uart.serial.restore_state(blob), "field \"irq_level\" is high"));
}

TEST(SerialState, RefusesFieldsOfTheWrongType) {
  state::StateBlob blob = hand_made();
  blob.put_string("rx", "abc");
  Uart uart;
  EXPECT_TRUE(fails_with(uart.serial.restore_state(blob), "field \"rx\" is not a byte string"));
}

}  // namespace
}  // namespace skiff
