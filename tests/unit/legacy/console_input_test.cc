// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/console_input.h"

#include <fcntl.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace skiff {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kData = 0;
constexpr uint64_t kLsr = 5;
constexpr uint8_t kLsrDataReady = 0x01;

class ConsoleInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(pipe2(fds_, O_CLOEXEC), 0);
    serial_ = std::make_shared<Serial>(nullptr, nullptr);
  }
  void TearDown() override {
    console_.reset();
    close_writer();
    if (fds_[0] >= 0) ::close(fds_[0]);
  }

  void start() {
    auto console = ConsoleInput::start(fds_[0], serial_, [this](VmExit exit) {
      std::lock_guard lock(mutex_);
      stop_ = std::move(exit);
      stopped_.notify_all();
    });
    ASSERT_TRUE(console.has_value()) << console.error().message();
    console_ = std::move(*console);
  }
  void send(const std::string& text) {
    ASSERT_EQ(::write(fds_[1], text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  void close_writer() {
    if (fds_[1] >= 0) ::close(fds_[1]);
    fds_[1] = -1;
  }

  // Reads bytes from the serial as the guest would until `count` arrived or 5 s passed.
  std::string receive(size_t count) {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (got.size() < count && std::chrono::steady_clock::now() < deadline) {
      uint8_t lsr = 0;
      serial_->read(kLsr, std::span<uint8_t>(&lsr, 1));
      if ((lsr & kLsrDataReady) == 0) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      uint8_t byte = 0;
      serial_->read(kData, std::span<uint8_t>(&byte, 1));
      got.push_back(static_cast<char>(byte));
    }
    return got;
  }

  std::optional<VmExit> wait_for_stop(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    stopped_.wait_for(lock, timeout, [this] { return stop_.has_value(); });
    return stop_;
  }

  int fds_[2] = {-1, -1};
  std::shared_ptr<Serial> serial_;
  std::unique_ptr<ConsoleInput> console_;
  std::mutex mutex_;
  std::condition_variable stopped_;
  std::optional<VmExit> stop_;
};

TEST_F(ConsoleInputTest, PipeInputReachesTheSerialWithoutRawMode) {
  start();
  EXPECT_FALSE(console_->raw_mode());
  send("hello\n");
  EXPECT_EQ(receive(6), "hello\n");
}

TEST_F(ConsoleInputTest, InputBeyondTheReceiveBufferIsHeldBackNotLost) {
  start();
  std::string input;
  for (size_t i = 0; i < 5 * Serial::kRxBufferCapacity + 7; ++i) {
    input.push_back(static_cast<char>('a' + i % 26));
  }
  send(input);
  // Let the console thread fill the buffer and block before the guest starts reading.
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(serial_->input_space(), 0u);
  EXPECT_EQ(receive(input.size()), input);
}

TEST_F(ConsoleInputTest, CtrlAXRequestsAStop) {
  start();
  send("ab\x01x");
  const std::optional<VmExit> exit = wait_for_stop(5s);
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->reason, StopReason::kStopRequested);
  EXPECT_EQ(exit->exit_code, kExitStopped);
  EXPECT_EQ(exit->detail, "stopped from the console (Ctrl-A x)");
}

TEST_F(ConsoleInputTest, CtrlACtrlASendsOneCtrlA) {
  start();
  send("\x01\x01z\x01q!");  // Ctrl-A q is an unknown escape: dropped
  EXPECT_EQ(receive(3), "\x01z!");
  EXPECT_FALSE(wait_for_stop(0ms).has_value());
}

TEST_F(ConsoleInputTest, EscapeSplitAcrossReads) {
  start();
  send("\x01");
  std::this_thread::sleep_for(20ms);
  send("x");
  EXPECT_TRUE(wait_for_stop(5s).has_value());
}

TEST_F(ConsoleInputTest, EndOfInputEndsQuietly) {
  start();
  send("bye");
  close_writer();
  EXPECT_EQ(receive(3), "bye");
  console_->shutdown();
  EXPECT_FALSE(wait_for_stop(0ms).has_value());
}

TEST_F(ConsoleInputTest, ShutdownInterruptsAThreadWaitingForSpace) {
  start();
  send(std::string(3 * Serial::kRxBufferCapacity, 'w'));
  std::this_thread::sleep_for(50ms);
  const auto before = std::chrono::steady_clock::now();
  console_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - before, 2s);
  // The serial no longer holds a callback into the destroyed console.
  std::string drained = receive(Serial::kRxBufferCapacity);
  EXPECT_EQ(drained.size(), Serial::kRxBufferCapacity);
}

TEST_F(ConsoleInputTest, RestoreWithoutATerminalIsHarmless) {
  start();
  ConsoleInput::restore();
  ConsoleInput::restore();
  send("k");
  EXPECT_EQ(receive(1), "k");
}

TEST_F(ConsoleInputTest, RejectsAMissingSerial) {
  auto console = ConsoleInput::start(fds_[0], nullptr, {});
  EXPECT_FALSE(console.has_value());
}

// A pseudo-terminal stands in for an interactive stdin.
TEST(ConsoleInputTerminalTest, RawModeWhileRunningRestoredAfterwards) {
  const int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(master, 0);
  ASSERT_EQ(grantpt(master), 0);
  ASSERT_EQ(unlockpt(master), 0);
  const int slave = ::open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(slave, 0);
  struct termios before {};
  ASSERT_EQ(tcgetattr(slave, &before), 0);
  ASSERT_TRUE(before.c_lflag & ICANON);

  auto serial = std::make_shared<Serial>(nullptr, nullptr);
  {
    auto console = ConsoleInput::start(slave, serial, {});
    ASSERT_TRUE(console.has_value()) << console.error().message();
    EXPECT_TRUE((*console)->raw_mode());
    struct termios raw {};
    ASSERT_EQ(tcgetattr(slave, &raw), 0);
    EXPECT_FALSE(raw.c_lflag & (ICANON | ECHO | ISIG));
    EXPECT_TRUE(raw.c_oflag & OPOST) << "output processing stays on for skiff's logs";

    auto second = ConsoleInput::start(slave, serial, {});
    EXPECT_FALSE(second.has_value()) << "only one console can hold a terminal in raw mode";

    // Ctrl-C reaches the guest instead of raising SIGINT; no line buffering.
    const char input[] = {'\x03', 'r'};
    ASSERT_EQ(::write(master, input, sizeof(input)), 2);
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (got.size() < 2 && std::chrono::steady_clock::now() < deadline) {
      uint8_t lsr = 0;
      serial->read(kLsr, std::span<uint8_t>(&lsr, 1));
      if ((lsr & kLsrDataReady) == 0) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      uint8_t byte = 0;
      serial->read(kData, std::span<uint8_t>(&byte, 1));
      got.push_back(static_cast<char>(byte));
    }
    EXPECT_EQ(got, std::string("\x03r"));

    // The signal-handler path: restores at once, and the destructor does not mind.
    ConsoleInput::restore();
    struct termios restored {};
    ASSERT_EQ(tcgetattr(slave, &restored), 0);
    EXPECT_TRUE(restored.c_lflag & ICANON);
  }
  struct termios after {};
  ASSERT_EQ(tcgetattr(slave, &after), 0);
  EXPECT_EQ(after.c_lflag, before.c_lflag);
  EXPECT_EQ(after.c_iflag, before.c_iflag);

  // Destroyed: another console may take the terminal now.
  auto again = ConsoleInput::start(slave, serial, {});
  ASSERT_TRUE(again.has_value()) << again.error().message();
  again->reset();
  ASSERT_EQ(tcgetattr(slave, &after), 0);
  EXPECT_EQ(after.c_lflag, before.c_lflag);
  ::close(slave);
  ::close(master);
}

}  // namespace
}  // namespace skiff
