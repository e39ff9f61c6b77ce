// SPDX-License-Identifier: Apache-2.0
// Pvpanic's state: the count of crash-kernel events survives a save and restore.
#include <vector>

#include <gtest/gtest.h>

#include "devices/legacy/pvpanic.h"
#include "unit/legacy/state_test_util.h"

namespace skiff {
namespace {

using testing::fails_with;
using testing::through_bytes;

TEST(PvpanicState, CrashLoadedCountSurvives) {
  Pvpanic original(nullptr);
  const uint8_t crash_loaded = kPvpanicCrashLoaded;
  original.write(0, std::span(&crash_loaded, 1));
  original.write(0, std::span(&crash_loaded, 1));
  auto saved = original.save_state();
  ASSERT_TRUE(saved);
  EXPECT_EQ(saved->kind(), "pvpanic");
  EXPECT_EQ(saved->version(), 1u);

  std::vector<VmExit> stops;
  Pvpanic restored([&](VmExit exit) { stops.push_back(exit); });
  ASSERT_TRUE(restored.restore_state(through_bytes(*saved)));
  EXPECT_EQ(restored.crash_loaded_events(), 2u);
  uint8_t supported = 0;
  restored.read(0, std::span(&supported, 1));
  EXPECT_EQ(supported, kPvpanicSupportedEvents);
  const uint8_t panicked = kPvpanicPanicked;
  restored.write(0, std::span(&panicked, 1));
  EXPECT_EQ(stops.size(), 1u);
}

TEST(PvpanicState, RefusesBadBlobs) {
  Pvpanic device(nullptr);
  EXPECT_TRUE(fails_with(device.restore_state(state::StateBlob("debug-exit", 1)), "state of debug-exit where pvpanic was expected"));
  EXPECT_TRUE(fails_with(device.restore_state(state::StateBlob("pvpanic", 2)), "version 2 is newer"));
  EXPECT_TRUE(fails_with(device.restore_state(state::StateBlob("pvpanic", 1)), "field \"crash_loaded_events\" is missing"));
  state::StateBlob too_big("pvpanic", 1);
  too_big.put("crash_loaded_events", 0x100000000);
  EXPECT_TRUE(fails_with(device.restore_state(too_big), "field \"crash_loaded_events\" is 4294967296"));
  EXPECT_EQ(device.crash_loaded_events(), 0u);
}

}  // namespace
}  // namespace skiff
