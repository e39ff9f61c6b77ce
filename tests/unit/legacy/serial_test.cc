// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/serial.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "unit/legacy/fake_irq_line.h"

namespace skiff {
namespace {

constexpr uint64_t kData = 0;
constexpr uint64_t kIer = 1;
constexpr uint64_t kIir = 2;
constexpr uint64_t kFcr = 2;
constexpr uint64_t kLcr = 3;
constexpr uint64_t kMcr = 4;
constexpr uint64_t kLsr = 5;
constexpr uint64_t kMsr = 6;
constexpr uint64_t kScr = 7;

constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrThre = 0x20;
constexpr uint8_t kLsrTemt = 0x40;

class SerialTest : public ::testing::Test {
 protected:
  SerialTest()
      : irq_(std::make_shared<testing::FakeIrqLine>()),
        serial_(irq_, [this](std::span<const uint8_t> bytes) {
          output_.insert(output_.end(), bytes.begin(), bytes.end());
        }) {}

  uint8_t read_reg(uint64_t offset) {
    uint8_t value = 0;
    serial_.read(offset, std::span<uint8_t>(&value, 1));
    return value;
  }
  void write_reg(uint64_t offset, uint8_t value) {
    serial_.write(offset, std::span<const uint8_t>(&value, 1));
  }
  size_t enqueue(const std::string& text) {
    return serial_.enqueue_input(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }

  std::shared_ptr<testing::FakeIrqLine> irq_;
  std::vector<uint8_t> output_;
  Serial serial_;
};

TEST_F(SerialTest, TransmittedBytesReachTheSink) {
  for (char c : std::string("hi\n")) write_reg(kData, static_cast<uint8_t>(c));
  EXPECT_EQ(std::string(output_.begin(), output_.end()), "hi\n");
}

TEST_F(SerialTest, DivisorLatchRoundTrip) {
  write_reg(kIer, 0x05);
  write_reg(kLcr, 0x83);  // DLAB + 8N1
  write_reg(kData, 0x01);
  write_reg(kIer, 0x02);
  EXPECT_EQ(read_reg(kData), 0x01);
  EXPECT_EQ(read_reg(kIer), 0x02);
  EXPECT_TRUE(output_.empty()) << "a DLL write must not transmit";

  write_reg(kLcr, 0x03);
  EXPECT_EQ(read_reg(kLcr), 0x03);
  EXPECT_EQ(read_reg(kIer), 0x05) << "IER is kept apart from DLM";
  write_reg(kData, 'z');
  ASSERT_EQ(output_.size(), 1u);
  EXPECT_EQ(output_[0], 'z');

  write_reg(kLcr, 0x83);
  EXPECT_EQ(read_reg(kData), 0x01);
  EXPECT_EQ(read_reg(kIer), 0x02);
}

TEST_F(SerialTest, IerKeepsOnlyTheFourEnableBits) {
  write_reg(kIer, 0xff);
  EXPECT_EQ(read_reg(kIer), 0x0f);
  write_reg(kMcr, 0xff);
  EXPECT_EQ(read_reg(kMcr), 0x1f);
  write_reg(kScr, 0xa5);
  EXPECT_EQ(read_reg(kScr), 0xa5);
}

TEST_F(SerialTest, ReceiveBufferFillsEmptiesAndDrivesLsr) {
  EXPECT_EQ(read_reg(kLsr), kLsrThre | kLsrTemt);
  EXPECT_EQ(read_reg(kData), 0) << "an empty RBR reads 0";

  std::string input;
  for (size_t i = 0; i < Serial::kRxBufferCapacity + 10; ++i) {
    input.push_back(static_cast<char>('A' + i % 26));
  }
  EXPECT_EQ(enqueue(input), Serial::kRxBufferCapacity);
  EXPECT_EQ(serial_.input_space(), 0u);
  EXPECT_EQ(enqueue("more"), 0u);
  EXPECT_EQ(read_reg(kLsr), kLsrDataReady | kLsrThre | kLsrTemt);

  for (size_t i = 0; i < Serial::kRxBufferCapacity; ++i) {
    ASSERT_TRUE(read_reg(kLsr) & kLsrDataReady) << i;
    ASSERT_EQ(read_reg(kData), static_cast<uint8_t>(input[i])) << i;
  }
  EXPECT_EQ(read_reg(kLsr), kLsrThre | kLsrTemt);
  EXPECT_EQ(serial_.input_space(), Serial::kRxBufferCapacity);
}

TEST_F(SerialTest, InputBackpressureAcceptsPartiallyAndSignalsSpace) {
  int wakeups = 0;
  serial_.set_input_space_callback([&] { ++wakeups; });
  EXPECT_EQ(enqueue("abc"), 3u);
  EXPECT_EQ(wakeups, 0) << "no wake-up when nothing was turned away";
  read_reg(kData);
  EXPECT_EQ(wakeups, 0);

  const std::string big(Serial::kRxBufferCapacity + 5, 'x');
  const size_t accepted = enqueue(big);
  EXPECT_EQ(accepted, Serial::kRxBufferCapacity - 2);
  EXPECT_EQ(wakeups, 0);
  read_reg(kData);
  EXPECT_EQ(wakeups, 1) << "reading a byte frees space after a refusal";
  read_reg(kData);
  EXPECT_EQ(wakeups, 1) << "one wake-up per refusal";
  EXPECT_EQ(enqueue(big.substr(accepted)), 2u);
  write_reg(kFcr, 0x01);  // enabling the FIFOs clears them
  EXPECT_EQ(wakeups, 2);
  EXPECT_EQ(read_reg(kLsr) & kLsrDataReady, 0);

  serial_.set_input_space_callback({});
  EXPECT_EQ(enqueue(big), Serial::kRxBufferCapacity);
  read_reg(kData);  // no callback registered: nothing to call
  EXPECT_EQ(wakeups, 2);
}

TEST_F(SerialTest, IirReportsReceivedDataBeforeThre) {
  write_reg(kFcr, 0x01);
  write_reg(kMcr, kMcrOut2);
  write_reg(kIer, 0x03);  // received data + THRE
  ASSERT_EQ(enqueue("q"), 1u);
  EXPECT_EQ(read_reg(kIir), 0xc4) << "FIFO bits + received data available";
  EXPECT_EQ(read_reg(kIir), 0xc4) << "reading IIR does not clear the data interrupt";
  EXPECT_EQ(read_reg(kData), 'q');
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(read_reg(kIir), 0xc2) << "then THR empty";
  EXPECT_FALSE(irq_->level());
  EXPECT_EQ(read_reg(kIir), 0xc1) << "THRE was cleared by the IIR read";
}

TEST_F(SerialTest, ThreInterruptClearedByIirReadAndRearmedByWrite) {
  write_reg(kMcr, kMcrOut2);
  EXPECT_FALSE(irq_->level());
  write_reg(kIer, 0x02);
  EXPECT_TRUE(irq_->level()) << "enabling THRE with an empty THR interrupts at once";
  EXPECT_EQ(read_reg(kIir), 0x02);
  EXPECT_FALSE(irq_->level());
  EXPECT_EQ(read_reg(kIir), 0x01);

  write_reg(kData, 'a');
  EXPECT_TRUE(irq_->level()) << "the THR empties again after a write";
  EXPECT_EQ(read_reg(kIir), 0x02);
  EXPECT_FALSE(irq_->level());

  // Linux's UART_BUG_THRE test: IER off then on re-raises THRE.
  write_reg(kIer, 0x00);
  write_reg(kIer, 0x02);
  EXPECT_EQ(read_reg(kIir), 0x02);
}

TEST_F(SerialTest, Out2GatesTheInterruptLine) {
  write_reg(kIer, 0x01);
  ASSERT_EQ(enqueue("x"), 1u);
  EXPECT_EQ(read_reg(kIir), 0x04) << "pending inside the UART";
  EXPECT_FALSE(irq_->level()) << "but OUT2 is clear";
  write_reg(kMcr, kMcrOut2);
  EXPECT_TRUE(irq_->level());
  write_reg(kMcr, 0);
  EXPECT_FALSE(irq_->level());
  write_reg(kMcr, kMcrOut2);
  EXPECT_TRUE(irq_->level());
  read_reg(kData);
  EXPECT_FALSE(irq_->level());
  // Each change is one call: the line is not re-set to the level it already has.
  const std::vector<bool> expected{true, false, true, false};
  EXPECT_EQ(irq_->levels(), expected);
}

TEST_F(SerialTest, LoopbackReturnsTransmittedBytesAndModemLines) {
  EXPECT_EQ(read_reg(kMsr) & 0xf0, 0xb0) << "DCD, DSR, CTS outside loopback";
  write_reg(kMcr, kMcrLoop | kMcrRts | kMcrOut2);
  // Linux's 8250 autoconfig loopback check: MCR = LOOP | 0x0a must read MSR = 0x90.
  EXPECT_EQ(read_reg(kMsr) & 0xf0, 0x90);
  EXPECT_EQ(enqueue("host"), 0u) << "the receiver is disconnected from the line";
  write_reg(kData, 'L');
  EXPECT_TRUE(output_.empty());
  EXPECT_TRUE(read_reg(kLsr) & kLsrDataReady);
  EXPECT_EQ(read_reg(kData), 'L');

  write_reg(kMcr, kMcrOut2);
  EXPECT_EQ(enqueue("h"), 1u);
  write_reg(kData, 'o');
  EXPECT_EQ(output_.size(), 1u);
}

TEST_F(SerialTest, LoopbackModemStatusDeltas) {
  write_reg(kMcr, kMcrLoop);
  read_reg(kMsr);  // clear the deltas of entering loopback
  write_reg(kIer, 0x08);
  write_reg(kMcr, kMcrLoop | kMcrOut2 | kMcrRts);
  EXPECT_EQ(read_reg(kIir), 0x00) << "modem status interrupt";
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(read_reg(kMsr), 0x90 | 0x08 | 0x01) << "DCD, CTS with their deltas";
  EXPECT_EQ(read_reg(kIir), 0x01);
  EXPECT_FALSE(irq_->level());
}

TEST_F(SerialTest, LoopbackOverrunSetsOe) {
  write_reg(kMcr, kMcrLoop | kMcrOut2);
  write_reg(kIer, 0x04);
  for (size_t i = 0; i <= Serial::kRxBufferCapacity; ++i) write_reg(kData, 'o');
  EXPECT_EQ(read_reg(kIir), 0x06) << "line status interrupt";
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(read_reg(kLsr), kLsrDataReady | kLsrOverrun | kLsrThre | kLsrTemt);
  EXPECT_EQ(read_reg(kLsr), kLsrDataReady | kLsrThre | kLsrTemt) << "OE clears on read";
  EXPECT_FALSE(irq_->level());
}

TEST_F(SerialTest, FcrEnablesAndClearsFifos) {
  EXPECT_EQ(read_reg(kIir) & 0xc0, 0);
  write_reg(kFcr, 0xc1);
  EXPECT_EQ(read_reg(kIir) & 0xc0, 0xc0);
  ASSERT_EQ(enqueue("abc"), 3u);
  write_reg(kFcr, 0xc1);  // no clear bits: data stays
  EXPECT_TRUE(read_reg(kLsr) & kLsrDataReady);
  write_reg(kFcr, 0xc3);  // clear the receive FIFO
  EXPECT_FALSE(read_reg(kLsr) & kLsrDataReady);
  ASSERT_EQ(enqueue("d"), 1u);
  write_reg(kFcr, 0x00);  // disabling the FIFOs clears them too
  EXPECT_FALSE(read_reg(kLsr) & kLsrDataReady);
  EXPECT_EQ(read_reg(kIir) & 0xc0, 0);
}

TEST_F(SerialTest, WideAndOutOfRangeAccessesDoNotCrash) {
  write_reg(kLcr, 0x80);
  write_reg(kData, 0x34);
  write_reg(kIer, 0x12);
  std::array<uint8_t, 2> word{};
  serial_.read(kData, word);
  EXPECT_EQ(word[0], 0x34);
  EXPECT_EQ(word[1], 0x12);
  write_reg(kLcr, 0x03);

  std::array<uint8_t, 4> dword{};
  serial_.read(6, dword);  // MSR, SCR, then past the last register
  EXPECT_EQ(dword[2], 0xff);
  EXPECT_EQ(dword[3], 0xff);
  std::array<uint8_t, 8> qword{};
  serial_.read(100, qword);
  for (uint8_t b : qword) EXPECT_EQ(b, 0xff);
  serial_.read(UINT64_MAX, qword);
  const std::array<uint8_t, 8> junk{1, 2, 3, 4, 5, 6, 7, 8};
  serial_.write(7, junk);
  serial_.write(UINT64_MAX - 2, junk);
  serial_.write(0, std::span<const uint8_t>());
  serial_.read(0, std::span<uint8_t>());
  EXPECT_EQ(read_reg(kScr), 1);
  EXPECT_TRUE(output_.empty());
}

TEST_F(SerialTest, ConcurrentWritersLoseNoBytes) {
  constexpr int kThreads = 4;
  constexpr int kBytesEach = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this] {
      for (int i = 0; i < kBytesEach; ++i) {
        write_reg(kData, 'c');
        read_reg(kLsr);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(output_.size(), static_cast<size_t>(kThreads * kBytesEach));
}

TEST(SerialFdSinkTest, WritesToTheFdAndSurvivesAClosedReader) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  Serial::OutputSink sink = Serial::fd_output_sink(fds[1]);
  const std::string text = "boot ok\n";
  sink(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  std::array<char, 16> buffer{};
  ASSERT_EQ(::read(fds[0], buffer.data(), buffer.size()), static_cast<ssize_t>(text.size()));
  EXPECT_EQ(std::string(buffer.data(), text.size()), text);

  ::close(fds[0]);
  // Without SIGPIPE ignored this would kill the test binary.
  sink(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  sink(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  ::close(fds[1]);
}

}  // namespace
}  // namespace skiff
