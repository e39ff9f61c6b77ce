// SPDX-License-Identifier: Apache-2.0
// DebugExit keeps no state: its blob is an empty "debug-exit" version 1, and restore still
// checks the kind and version.
#include <vector>

#include <gtest/gtest.h>

#include "devices/legacy/debug_exit.h"
#include "unit/legacy/state_test_util.h"

namespace skiff {
namespace {

using testing::fails_with;
using testing::through_bytes;

TEST(DebugExitState, SavesAnEmptyBlobOfItsKind) {
  DebugExit device(nullptr);
  auto saved = device.save_state();
  ASSERT_TRUE(saved);
  EXPECT_EQ(*saved, state::StateBlob("debug-exit", 1)) << saved->describe();

  std::vector<VmExit> stops;
  DebugExit restored([&](VmExit exit) { stops.push_back(exit); });
  ASSERT_TRUE(restored.restore_state(through_bytes(*saved)));
  const uint8_t code = 3;
  restored.write(0, std::span(&code, 1));
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].exit_code, 3);
}

TEST(DebugExitState, RefusesAnotherKindOrANewerVersion) {
  DebugExit device(nullptr);
  EXPECT_TRUE(fails_with(device.restore_state(state::StateBlob("pvpanic", 1)), "state of pvpanic where debug-exit was expected"));
  EXPECT_TRUE(fails_with(device.restore_state(state::StateBlob("debug-exit", 2)), "version 2 is newer"));
}

}  // namespace
}  // namespace skiff
