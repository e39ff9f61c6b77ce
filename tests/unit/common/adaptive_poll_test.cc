// SPDX-License-Identifier: Apache-2.0
#include "common/adaptive_poll.h"

#include <gtest/gtest.h>

namespace skiff {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using Duration = AdaptivePoll::Duration;

AdaptivePoll::Params params(microseconds max, uint32_t shrink = 0) {
  AdaptivePoll::Params p;
  p.max = max;
  p.initial = microseconds(4);
  p.grow = 2;
  p.shrink = shrink;
  p.contention_holdoff = 3;
  p.min_cpu_percent = 75;
  p.late_wakeups_to_shrink = 1;  // the rules one at a time; the streak has its own tests
  return p;
}

TEST(AdaptivePoll, StartsWithoutPolling) {
  AdaptivePoll poll(params(microseconds(32)));
  EXPECT_TRUE(poll.enabled());
  EXPECT_EQ(poll.window(), Duration::zero());
}

TEST(AdaptivePoll, GrowsFromTheInitialStepUpToTheCap) {
  AdaptivePoll poll(params(microseconds(32)));
  // Each event came after the window closed but within the cap: a longer window would
  // have caught it.
  poll.on_wakeup(microseconds(20));
  EXPECT_EQ(poll.window(), microseconds(4));
  poll.on_wakeup(microseconds(20));
  EXPECT_EQ(poll.window(), microseconds(8));
  poll.on_wakeup(microseconds(20));
  EXPECT_EQ(poll.window(), microseconds(16));
  poll.on_wakeup(microseconds(30));
  EXPECT_EQ(poll.window(), microseconds(32));
  poll.on_wakeup(microseconds(32));  // at the cap: no further
  EXPECT_EQ(poll.window(), microseconds(32));
  EXPECT_EQ(poll.counters().grows, 4u);
}

TEST(AdaptivePoll, GrowingIsCappedBetweenSteps) {
  AdaptivePoll poll(params(microseconds(20)));
  for (int i = 0; i < 3; ++i) poll.on_wakeup(microseconds(19));  // 4, 8, 16
  EXPECT_EQ(poll.window(), microseconds(16));
  poll.on_wakeup(microseconds(19));  // 32 would pass the cap
  EXPECT_EQ(poll.window(), microseconds(20));
}

TEST(AdaptivePoll, EventWithinTheWindowKeepsIt) {
  AdaptivePoll poll(params(microseconds(32)));
  poll.on_wakeup(microseconds(10));
  poll.on_wakeup(microseconds(10));
  ASSERT_EQ(poll.window(), microseconds(8));
  // Arrived just as the window ended: it is about right.
  poll.on_wakeup(microseconds(8));
  EXPECT_EQ(poll.window(), microseconds(8));
}

TEST(AdaptivePoll, WorkFoundByPollingKeepsTheWindow) {
  AdaptivePoll poll(params(microseconds(32)));
  poll.on_wakeup(microseconds(10));
  ASSERT_EQ(poll.window(), microseconds(4));
  for (int i = 0; i < 100; ++i) poll.on_poll_hit();
  EXPECT_EQ(poll.window(), microseconds(4));
  EXPECT_EQ(poll.counters().hits, 100u);
}

TEST(AdaptivePoll, LongWaitShrinksToZeroByDefault) {
  AdaptivePoll poll(params(microseconds(32)));
  for (int i = 0; i < 4; ++i) poll.on_wakeup(microseconds(30));
  ASSERT_EQ(poll.window(), microseconds(32));
  // The guest went quiet for longer than any window we would pay for.
  poll.on_wakeup(milliseconds(5));
  EXPECT_EQ(poll.window(), Duration::zero());
  EXPECT_EQ(poll.counters().shrinks, 1u);
  // Still quiet: nothing to shrink, nothing counted.
  poll.on_wakeup(milliseconds(5));
  EXPECT_EQ(poll.window(), Duration::zero());
  EXPECT_EQ(poll.counters().shrinks, 1u);
}

TEST(AdaptivePoll, ShrinkFactorDivides) {
  AdaptivePoll poll(params(microseconds(32), 2));
  for (int i = 0; i < 4; ++i) poll.on_wakeup(microseconds(30));
  ASSERT_EQ(poll.window(), microseconds(32));
  poll.on_wakeup(microseconds(33));
  EXPECT_EQ(poll.window(), microseconds(16));
  poll.on_wakeup(milliseconds(1));
  EXPECT_EQ(poll.window(), microseconds(8));
  poll.on_wakeup(milliseconds(1));
  EXPECT_EQ(poll.window(), microseconds(4));
  // Below the initial step a window catches too little to be worth spinning: off.
  poll.on_wakeup(milliseconds(1));
  EXPECT_EQ(poll.window(), Duration::zero());
}

TEST(AdaptivePoll, ZeroCapDisablesPolling) {
  AdaptivePoll poll(params(microseconds(0)));
  EXPECT_FALSE(poll.enabled());
  for (int i = 0; i < 10; ++i) poll.on_wakeup(microseconds(1));
  EXPECT_EQ(poll.window(), Duration::zero());
  EXPECT_EQ(poll.counters().grows, 0u);
}

TEST(AdaptivePoll, DisableHoldsTheWindowAtZero) {
  AdaptivePoll poll(params(microseconds(32)));
  poll.on_wakeup(microseconds(10));
  ASSERT_EQ(poll.window(), microseconds(4));
  poll.disable();
  EXPECT_FALSE(poll.enabled());
  EXPECT_EQ(poll.window(), Duration::zero());
  for (int i = 0; i < 10; ++i) poll.on_wakeup(microseconds(10));
  EXPECT_EQ(poll.window(), Duration::zero());
}

TEST(AdaptivePoll, EpisodeWithTheCpuToItselfChangesNothing) {
  AdaptivePoll poll(params(microseconds(32)));
  poll.on_wakeup(microseconds(10));
  poll.on_wakeup(microseconds(10));
  ASSERT_EQ(poll.window(), microseconds(8));
  EXPECT_FALSE(poll.on_episode(microseconds(8), microseconds(8)));
  EXPECT_FALSE(poll.on_episode(microseconds(6), microseconds(8)));  // exactly 75 %
  EXPECT_EQ(poll.window(), microseconds(8));
  EXPECT_EQ(poll.counters().episodes, 2u);
  EXPECT_EQ(poll.counters().contended, 0u);
}

TEST(AdaptivePoll, PreemptedEpisodeDropsToZeroAndHoldsOff) {
  AdaptivePoll poll(params(microseconds(32)));
  for (int i = 0; i < 4; ++i) poll.on_wakeup(microseconds(30));
  ASSERT_EQ(poll.window(), microseconds(32));
  // 32 µs on the CPU in 4 ms of wall time: a vCPU had the CPU meanwhile.
  EXPECT_TRUE(poll.on_episode(microseconds(32), milliseconds(4)));
  EXPECT_EQ(poll.window(), Duration::zero());
  EXPECT_EQ(poll.counters().contended, 1u);
  // Holding off (3 wake-ups here): short waits do not grow the window yet.
  for (int i = 0; i < 3; ++i) {
    poll.on_wakeup(microseconds(10));
    EXPECT_EQ(poll.window(), Duration::zero()) << i;
  }
  // Then growing starts over from the initial step.
  poll.on_wakeup(microseconds(10));
  EXPECT_EQ(poll.window(), microseconds(4));
}

TEST(AdaptivePoll, EpisodeWithoutWallTimeIsIgnored) {
  AdaptivePoll poll(params(microseconds(32)));
  poll.on_wakeup(microseconds(10));
  EXPECT_FALSE(poll.on_episode(Duration::zero(), Duration::zero()));
  EXPECT_EQ(poll.window(), microseconds(4));
}

TEST(AdaptivePoll, InitialStepAboveTheCapStartsAtTheCap) {
  AdaptivePoll::Params p = params(microseconds(2));
  AdaptivePoll poll(p);
  poll.on_wakeup(microseconds(1) + microseconds(1));
  EXPECT_EQ(poll.window(), microseconds(2));
}

TEST(AdaptivePoll, DefaultsAreQemuLike) {
  AdaptivePoll poll;
  EXPECT_EQ(poll.max(), microseconds(32));
  poll.on_wakeup(microseconds(10));
  EXPECT_EQ(poll.window(), microseconds(4));
  poll.on_wakeup(milliseconds(1));
  poll.on_wakeup(milliseconds(1));
  EXPECT_EQ(poll.window(), Duration::zero());
}

// Queue depth 1 on a disk slower than the cap: each completion wakes the thread late, and
// polling then catches the guest's next request. That pattern keeps the window.
TEST(AdaptivePoll, LateCompletionsBetweenHitsKeepTheWindow) {
  AdaptivePoll::Params p = params(microseconds(32));
  p.late_wakeups_to_shrink = 2;
  AdaptivePoll poll(p);
  for (int i = 0; i < 4; ++i) poll.on_wakeup(microseconds(30));
  ASSERT_EQ(poll.window(), microseconds(32));
  for (int i = 0; i < 100; ++i) {
    poll.on_wakeup(microseconds(100));  // the read completes after the window
    poll.on_poll_hit();                 // the next request, caught by polling
  }
  EXPECT_EQ(poll.window(), microseconds(32));
  EXPECT_EQ(poll.counters().shrinks, 0u);
}

TEST(AdaptivePoll, LateWakeupsInARowShrink) {
  AdaptivePoll::Params p = params(microseconds(32));
  p.late_wakeups_to_shrink = 2;
  AdaptivePoll poll(p);
  for (int i = 0; i < 4; ++i) poll.on_wakeup(microseconds(30));
  poll.on_wakeup(milliseconds(5));
  EXPECT_EQ(poll.window(), microseconds(32)) << "one late wake-up is not a trend";
  poll.on_wakeup(milliseconds(5));
  EXPECT_EQ(poll.window(), Duration::zero()) << "the guest went quiet";
  EXPECT_EQ(poll.counters().shrinks, 1u);
}

TEST(AdaptivePoll, ATimelyEventBreaksTheStreak) {
  AdaptivePoll::Params p = params(microseconds(32));
  p.late_wakeups_to_shrink = 2;
  AdaptivePoll poll(p);
  for (int i = 0; i < 4; ++i) poll.on_wakeup(microseconds(30));
  poll.on_wakeup(milliseconds(5));
  poll.on_wakeup(microseconds(20));  // within the window
  poll.on_wakeup(milliseconds(5));
  EXPECT_EQ(poll.window(), microseconds(32));
}

}  // namespace
}  // namespace skiff
