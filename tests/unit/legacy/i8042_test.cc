// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/i8042.h"

#include <algorithm>
#include <array>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "unit/legacy/fake_irq_line.h"

namespace skiff {
namespace {

using Port = I8042::Port;

constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystemFlag = 0x04;
constexpr uint8_t kStatusCommand = 0x08;

class I8042Test : public ::testing::Test {
 protected:
  I8042Test()
      : irq_(std::make_shared<testing::FakeIrqLine>()),
        controller_(std::make_shared<I8042>(irq_, [this](VmExit exit) {
          stops_.push_back(std::move(exit));
        })) {}

  std::shared_ptr<testing::FakeIrqLine> irq_;
  std::vector<VmExit> stops_;
  std::shared_ptr<I8042> controller_;
};

TEST_F(I8042Test, SelfTestAnswers0x55) {
  controller_->write(Port::kCommand, 0xaa);
  const uint8_t status = controller_->read(Port::kCommand);
  EXPECT_TRUE(status & kStatusOutputFull);
  EXPECT_TRUE(status & kStatusSystemFlag);
  EXPECT_EQ(controller_->read(Port::kData), 0x55);
  EXPECT_FALSE(controller_->read(Port::kCommand) & kStatusOutputFull);
  EXPECT_EQ(controller_->read(Port::kData), 0) << "an empty output buffer reads 0";
  EXPECT_TRUE(stops_.empty());
}

TEST_F(I8042Test, InterfaceTestAnswers0) {
  controller_->write(Port::kCommand, 0xab);
  EXPECT_TRUE(controller_->read(Port::kCommand) & kStatusOutputFull);
  EXPECT_EQ(controller_->read(Port::kData), 0x00);
}

TEST_F(I8042Test, CommandByteRoundTrip) {
  controller_->write(Port::kCommand, 0x60);
  controller_->write(Port::kData, 0x30);
  controller_->write(Port::kCommand, 0x20);
  EXPECT_EQ(controller_->read(Port::kData), 0x30);
  EXPECT_FALSE(controller_->read(Port::kCommand) & kStatusSystemFlag)
      << "the status system flag follows command byte bit 2";

  controller_->write(Port::kCommand, 0xae);  // enable keyboard: clears bit 4
  controller_->write(Port::kCommand, 0x20);
  EXPECT_EQ(controller_->read(Port::kData), 0x20);
  controller_->write(Port::kCommand, 0xad);
  controller_->write(Port::kCommand, 0xa8);  // enable aux: clears bit 5
  controller_->write(Port::kCommand, 0x20);
  EXPECT_EQ(controller_->read(Port::kData), 0x10);
}

TEST_F(I8042Test, StatusTracksCommandOrDataWrite) {
  controller_->write(Port::kCommand, 0x60);
  EXPECT_TRUE(controller_->read(Port::kCommand) & kStatusCommand);
  controller_->write(Port::kData, 0x45);
  EXPECT_FALSE(controller_->read(Port::kCommand) & kStatusCommand);
}

TEST_F(I8042Test, PulseResetLineStopsTheVm) {
  controller_->write(Port::kCommand, 0xfe);
  ASSERT_EQ(stops_.size(), 1u);
  EXPECT_EQ(stops_[0].reason, StopReason::kGuestReboot);
  EXPECT_EQ(stops_[0].exit_code, kExitOk);
  EXPECT_EQ(stops_[0].detail, "guest reset (i8042)");
  controller_->write(Port::kCommand, 0xff);  // pulses no line
  EXPECT_EQ(stops_.size(), 1u);
}

TEST_F(I8042Test, WriteOutputPortWithResetBitClearStopsTheVm) {
  controller_->write(Port::kCommand, 0xd0);
  EXPECT_EQ(controller_->read(Port::kData), 0x03) << "reset deasserted, A20 on";
  controller_->write(Port::kCommand, 0xd1);
  controller_->write(Port::kData, 0x03);
  EXPECT_TRUE(stops_.empty());
  controller_->write(Port::kCommand, 0xd1);
  controller_->write(Port::kData, 0x02);
  ASSERT_EQ(stops_.size(), 1u);
  EXPECT_EQ(stops_[0].reason, StopReason::kGuestReboot);
  EXPECT_EQ(stops_[0].detail, "guest reset (i8042)");
}

TEST_F(I8042Test, KeyboardIrqOnlyWithDataAndEnabled) {
  controller_->write(Port::kCommand, 0x60);
  controller_->write(Port::kData, 0x00);  // keyboard interrupt off
  controller_->write(Port::kCommand, 0xaa);
  EXPECT_FALSE(irq_->level());
  EXPECT_EQ(controller_->read(Port::kData), 0x55);

  controller_->write(Port::kCommand, 0x60);
  controller_->write(Port::kData, 0x01);
  EXPECT_FALSE(irq_->level()) << "no data yet";
  controller_->write(Port::kCommand, 0xd2);  // write keyboard output buffer
  controller_->write(Port::kData, 0x1c);
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(controller_->read(Port::kData), 0x1c);
  EXPECT_FALSE(irq_->level());
}

TEST_F(I8042Test, UnknownControllerCommandsAreIgnored) {
  controller_->write(Port::kCommand, 0x12);
  EXPECT_FALSE(controller_->read(Port::kCommand) & kStatusOutputFull);
  EXPECT_TRUE(stops_.empty());
}

// Reads every byte the keyboard queued, one output-buffer fill at a time.
std::vector<uint8_t> drain(I8042& controller) {
  std::vector<uint8_t> bytes;
  for (int i = 0; i < 32 && (controller.read(Port::kCommand) & kStatusOutputFull); ++i) {
    bytes.push_back(controller.read(Port::kData));
  }
  return bytes;
}

TEST_F(I8042Test, KeyboardResetAnswersAckThenSelfTestPassed) {
  controller_->write(Port::kData, 0xff);
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(drain(*controller_), (std::vector<uint8_t>{0xfa, 0xaa}));
  EXPECT_FALSE(irq_->level());
  // Each queued byte is a new rising edge on IRQ1 (edge-triggered ISA pin).
  // The device only reports changes, so every recorded `true` is a rising edge.
  auto levels = irq_->levels();
  EXPECT_EQ(std::count(levels.begin(), levels.end(), true), 2);
  EXPECT_TRUE(stops_.empty());
}

TEST_F(I8042Test, KeyboardIdentifyDependsOnTranslation) {
  controller_->write(Port::kData, 0xf2);
  EXPECT_EQ(drain(*controller_), (std::vector<uint8_t>{0xfa, 0xab, 0x41}));
  controller_->write(Port::kCommand, 0x60);  // command byte without translation
  controller_->write(Port::kData, 0x01);
  controller_->write(Port::kData, 0xf2);
  EXPECT_EQ(drain(*controller_), (std::vector<uint8_t>{0xfa, 0xab, 0x83}));
}

TEST_F(I8042Test, KeyboardCommandsWithParameters) {
  controller_->write(Port::kData, 0xed);  // LEDs
  EXPECT_EQ(drain(*controller_), (std::vector<uint8_t>{0xfa}));
  controller_->write(Port::kData, 0x07);  // the LED bits: a parameter, not a command
  EXPECT_EQ(drain(*controller_), (std::vector<uint8_t>{0xfa}));
  controller_->write(Port::kData, 0xf0);  // scancode set: query
  controller_->write(Port::kData, 0x00);
  EXPECT_EQ(drain(*controller_), (std::vector<uint8_t>{0xfa, 0xfa, 0x02}));
  controller_->write(Port::kData, 0xee);
  EXPECT_EQ(drain(*controller_), (std::vector<uint8_t>{0xee}));
  controller_->write(Port::kData, 0x42);  // not a keyboard command
  EXPECT_EQ(drain(*controller_), (std::vector<uint8_t>{0xfe}));
}

TEST_F(I8042Test, KeyboardReplyQueueIsBounded) {
  for (int i = 0; i < 100; ++i) controller_->write(Port::kData, 0xf4);  // guest never reads
  EXPECT_LE(drain(*controller_).size(), 17u);
}

TEST_F(I8042Test, PortDevicesShareTheController) {
  I8042PortDevice data(controller_, Port::kData);
  I8042PortDevice command(controller_, Port::kCommand);
  const uint8_t self_test = 0xaa;
  command.write(0, std::span<const uint8_t>(&self_test, 1));
  uint8_t status = 0;
  command.read(0, std::span<uint8_t>(&status, 1));
  EXPECT_TRUE(status & kStatusOutputFull);
  std::array<uint8_t, 4> wide{};
  data.read(0, wide);  // only byte 0 reaches the controller
  EXPECT_EQ(wide[0], 0x55);
  EXPECT_EQ(wide[1], 0xff);
  data.read(3, wide);
  const std::array<uint8_t, 8> junk{0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe};
  command.write(5, junk);
  EXPECT_TRUE(stops_.empty()) << "a write at another offset does not reach the controller";
  command.write(0, std::span<const uint8_t>(junk.data(), 2));
  EXPECT_EQ(stops_.size(), 1u);
}

TEST_F(I8042Test, CtrlAltDelInTranslatedScancodes) {
  ASSERT_TRUE(controller_->press_ctrl_alt_del());
  EXPECT_TRUE(irq_->level()) << "IRQ1 rises with the first byte";
  EXPECT_EQ(drain(*controller_), (std::vector<uint8_t>{0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d}));
  EXPECT_FALSE(irq_->level());
  EXPECT_TRUE(stops_.empty());
}

TEST_F(I8042Test, CtrlAltDelInSet2WithoutTranslation) {
  controller_->write(Port::kCommand, 0x60);
  controller_->write(Port::kData, 0x01);  // interrupt on, translation off
  ASSERT_TRUE(controller_->press_ctrl_alt_del());
  EXPECT_EQ(drain(*controller_),
            (std::vector<uint8_t>{0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14}));
}

TEST_F(I8042Test, CtrlAltDelNeedsAnEnabledKeyboard) {
  controller_->write(Port::kCommand, 0xad);  // disable the keyboard
  EXPECT_FALSE(controller_->press_ctrl_alt_del());
  EXPECT_TRUE(drain(*controller_).empty());
}

}  // namespace
}  // namespace skiff
