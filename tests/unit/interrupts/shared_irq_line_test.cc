// SPDX-License-Identifier: Apache-2.0
#include "interrupts/shared_irq_line.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "unit/legacy/fake_irq_line.h"

namespace skiff {
namespace {

TEST(SharedIrqLine, HighWhileAnyInputIsHigh) {
  auto pin = std::make_shared<testing::FakeIrqLine>();
  auto shared = std::make_shared<SharedIrqLine>(pin);
  auto first = shared->add_input();
  auto second = shared->add_input();
  EXPECT_FALSE(shared->level());

  first->set_level(true);
  second->set_level(true);
  EXPECT_TRUE(shared->level());
  // One device lowering its input must not hide the other's.
  first->set_level(false);
  EXPECT_TRUE(shared->level());
  EXPECT_TRUE(pin->level());
  second->set_level(false);
  EXPECT_FALSE(shared->level());
  // The pin saw one rising and one falling edge, not one per input.
  EXPECT_EQ(pin->levels(), (std::vector<bool>{true, false}));
}

TEST(SharedIrqLine, RepeatedLevelsAreNotEdges) {
  auto pin = std::make_shared<testing::FakeIrqLine>();
  auto shared = std::make_shared<SharedIrqLine>(pin);
  auto input = shared->add_input();
  input->set_level(true);
  input->set_level(true);
  input->set_level(false);
  input->set_level(false);
  EXPECT_EQ(pin->levels(), (std::vector<bool>{true, false}));
}

TEST(SharedIrqLine, InputsKeepTheLineAlive) {
  auto pin = std::make_shared<testing::FakeIrqLine>();
  std::shared_ptr<IrqLine> input;
  {
    auto shared = std::make_shared<SharedIrqLine>(pin);
    input = shared->add_input();
  }
  input->pulse();
  EXPECT_EQ(pin->rising_edges(), 1);
}

}  // namespace
}  // namespace skiff
