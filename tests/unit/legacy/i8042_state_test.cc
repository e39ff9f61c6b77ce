// SPDX-License-Identifier: Apache-2.0
// I8042's state: a controller saved with a command waiting for its parameter, a full
// output buffer and keyboard replies queued behind it carries on identically after a
// restore; restore refuses blobs it cannot trust.
#include <memory>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "devices/legacy/i8042.h"
#include "unit/legacy/fake_irq_line.h"
#include "unit/legacy/state_test_util.h"

namespace skiff {
namespace {

using Port = I8042::Port;
using testing::fails_with;
using testing::through_bytes;

struct Controller {
  Controller() : irq(std::make_shared<testing::FakeIrqLine>()), kbc(irq, [this](VmExit exit) { stops.push_back(exit); }) {}
  std::shared_ptr<testing::FakeIrqLine> irq;
  std::vector<VmExit> stops;
  I8042 kbc;
};

void drive_mid_use(I8042& kbc) {
  kbc.write(Port::kCommand, 0xd2);  // write keyboard output buffer ...
  kbc.write(Port::kData, 0x42);     // ... with 0x42: the output buffer is full
  kbc.write(Port::kData, 0xf2);     // keyboard identify: ACK, 0xab, 0x41 queue behind it
  kbc.write(Port::kData, 0xed);     // keyboard set LEDs: ACK queued, waits for its parameter
  kbc.write(Port::kCommand, 0x60);  // write command byte: waits for its data byte
}

std::vector<int> carry_on(Controller& c) {
  std::vector<int> seen;
  const auto read = [&](Port port) {
    seen.push_back(c.kbc.read(port));
    seen.push_back(c.irq->level() ? 1 : 0);
  };
  const auto write = [&](Port port, uint8_t value) {
    c.kbc.write(port, value);
    seen.push_back(c.irq->level() ? 1 : 0);
  };
  read(Port::kCommand);
  write(Port::kData, 0x45);  // the waiting command takes it: the new command byte
  read(Port::kCommand);
  read(Port::kData);         // 0x42
  read(Port::kData);         // ACK of identify
  write(Port::kData, 0x02);  // the LED command's parameter: one more ACK queued
  for (int i = 0; i < 6; ++i) read(Port::kData);
  write(Port::kCommand, 0x20);
  read(Port::kData);
  write(Port::kCommand, 0xd0);
  read(Port::kData);
  write(Port::kCommand, 0x60);
  write(Port::kData, 0x44);  // keyboard interrupt off
  write(Port::kCommand, 0xaa);
  read(Port::kCommand);
  read(Port::kData);
  seen.push_back(static_cast<int>(c.stops.size()));
  return seen;
}

TEST(I8042State, RestoredControllerCarriesOnIdentically) {
  Controller original;
  drive_mid_use(original.kbc);
  ASSERT_TRUE(original.irq->level());

  auto saved = original.kbc.save_state();
  ASSERT_TRUE(saved) << saved.error().message();
  EXPECT_EQ(saved->kind(), "i8042");
  EXPECT_EQ(saved->version(), 1u);

  Controller restored;
  auto r = restored.kbc.restore_state(through_bytes(*saved));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(restored.irq->level());
  auto again = restored.kbc.save_state();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *saved) << again->describe();

  EXPECT_EQ(carry_on(restored), carry_on(original));
}

TEST(I8042State, AWaitingOutputPortWriteStillResets) {
  Controller original;
  original.kbc.write(Port::kCommand, 0xd1);  // write output port: waits for its data byte
  auto saved = original.kbc.save_state();
  ASSERT_TRUE(saved);
  Controller restored;
  ASSERT_TRUE(restored.kbc.restore_state(through_bytes(*saved)));
  restored.kbc.write(Port::kData, 0x02);  // reset line (bit 0) low
  ASSERT_EQ(restored.stops.size(), 1u);
  EXPECT_EQ(restored.stops[0].reason, StopReason::kGuestReboot);
}

state::StateBlob hand_made(std::string_view skip = "") {
  state::StateBlob blob("i8042", 1);
  const std::vector<uint8_t> replies = {0xfa};
  const auto put = [&](std::string_view field, uint64_t value) {
    if (field != skip) blob.put(field, value);
  };
  put("command_byte", 0x45);
  put("output_port", 0x03);
  put("output_buffer", 0xfa);
  if (skip != "output_full") blob.put_bool("output_full", true);
  if (skip != "last_write_was_command") blob.put_bool("last_write_was_command", false);
  put("waiting_command", 0);
  put("keyboard_command", 0xf3);
  if (skip != "keyboard_replies") blob.put_bytes("keyboard_replies", replies);
  if (skip != "irq_level") blob.put_bool("irq_level", true);
  return blob;
}

TEST(I8042State, HandMadeBlobIsAccepted) {
  Controller c;
  auto r = c.kbc.restore_state(through_bytes(hand_made()));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(c.irq->level());
  EXPECT_EQ(c.kbc.read(Port::kData), 0xfa);
  EXPECT_EQ(c.kbc.read(Port::kData), 0xfa);
  EXPECT_EQ(c.kbc.read(Port::kCommand) & 0x01, 0);
}

TEST(I8042State, RefusesAnotherKindOrANewerVersion) {
  Controller c;
  EXPECT_TRUE(fails_with(c.kbc.restore_state(state::StateBlob("serial", 1)), "state of serial where i8042 was expected"));
  EXPECT_TRUE(fails_with(c.kbc.restore_state(state::StateBlob("i8042", 2)), "version 2 is newer"));
}

TEST(I8042State, RefusesEveryMissingField) {
  for (std::string_view field : {"command_byte", "output_port", "output_buffer", "output_full", "last_write_was_command",
                                 "waiting_command", "keyboard_command", "keyboard_replies", "irq_level"}) {
    Controller c;
    EXPECT_TRUE(fails_with(c.kbc.restore_state(hand_made(field)), fmt::format("field \"{}\" is missing", field)));
  }
}

TEST(I8042State, RefusesInvalidFields) {
  Controller c;
  state::StateBlob blob = hand_made();
  blob.put("waiting_command", 0xaa);  // self-test takes no parameter
  EXPECT_TRUE(fails_with(c.kbc.restore_state(blob), "field \"waiting_command\" is 0xaa"));
  blob = hand_made();
  blob.put("keyboard_command", 0xff);
  EXPECT_TRUE(fails_with(c.kbc.restore_state(blob), "field \"keyboard_command\" is 0xff"));
  blob = hand_made();
  blob.put("command_byte", 0x100);
  EXPECT_TRUE(fails_with(c.kbc.restore_state(blob), "field \"command_byte\" is 256"));
  blob = hand_made();
  blob.put_bytes("keyboard_replies", std::vector<uint8_t>(17, 0xfa));
  EXPECT_TRUE(fails_with(c.kbc.restore_state(through_bytes(blob)), "field \"keyboard_replies\" holds 17 bytes, above the maximum 16"));
  EXPECT_TRUE(c.irq->levels().empty()) << "a refused restore leaves the controller alone";
}

TEST(I8042State, RefusesInconsistentFields) {
  Controller c;
  state::StateBlob blob = hand_made();
  blob.put_bool("output_full", false);
  blob.put_bool("irq_level", false);
  EXPECT_TRUE(fails_with(c.kbc.restore_state(blob), "field \"keyboard_replies\" holds bytes while the output buffer is empty"));
  blob = hand_made();
  blob.put("command_byte", 0x44);  // keyboard interrupt off: IRQ1 cannot be high
  EXPECT_TRUE(fails_with(c.kbc.restore_state(blob), "field \"irq_level\" disagrees"));
}

}  // namespace
}  // namespace skiff
