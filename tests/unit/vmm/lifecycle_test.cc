// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "vmm/lifecycle.h"

namespace skiff {
namespace {

constexpr std::array<VmState, 5> kAllStates = {VmState::created, VmState::running, VmState::paused,
                                               VmState::stopping, VmState::stopped};

bool expected_valid(VmState from, VmState to) {
  using enum VmState;
  return (from == created && to == running) || (from == running && to == paused) ||
         (from == paused && to == running) || (from == running && to == stopping) ||
         (from == paused && to == stopping) || (from == stopping && to == stopped) ||
         (from == created && to == stopped);
}

TEST(Lifecycle, NamesEveryState) {
  EXPECT_EQ(to_string(VmState::created), "created");
  EXPECT_EQ(to_string(VmState::running), "running");
  EXPECT_EQ(to_string(VmState::paused), "paused");
  EXPECT_EQ(to_string(VmState::stopping), "stopping");
  EXPECT_EQ(to_string(VmState::stopped), "stopped");
}

TEST(Lifecycle, StartsCreated) { EXPECT_EQ(Lifecycle().state(), VmState::created); }

// All 25 pairs: the seven drawn in skiff/state.h succeed, every other one is refused and leaves
// the state unchanged.
TEST(Lifecycle, EveryTransitionValidOrRefused) {
  for (VmState from : kAllStates) {
    for (VmState to : kAllStates) {
      SCOPED_TRACE(fmt::format("{} -> {}", to_string(from), to_string(to)));
      EXPECT_EQ(is_valid_transition(from, to), expected_valid(from, to));
      Lifecycle lifecycle(from);
      auto result = lifecycle.transition(to);
      if (expected_valid(from, to)) {
        EXPECT_TRUE(result);
        EXPECT_EQ(lifecycle.state(), to);
      } else {
        ASSERT_FALSE(result);
        EXPECT_EQ(result.error().kind(), ErrorKind::kState);
        EXPECT_NE(result.error().message().find(fmt::format("the VM is {}", to_string(from))), std::string::npos)
            << result.error().message();
        EXPECT_EQ(lifecycle.state(), from);
      }
    }
  }
}

TEST(Lifecycle, RefusalNamesTheRequest) {
  Lifecycle stopped(VmState::stopped);
  EXPECT_EQ(stopped.transition(VmState::paused).error().message(), "cannot pause: the VM is stopped");
  EXPECT_EQ(stopped.transition(VmState::running).error().message(), "cannot resume: the VM is stopped");
  EXPECT_EQ(stopped.transition(VmState::stopped).error().message(), "cannot stop: the VM is stopped");
  Lifecycle created;
  EXPECT_EQ(created.transition(VmState::paused).error().message(), "cannot pause: the VM is created");
  EXPECT_EQ(created.transition(VmState::stopping).error().message(), "cannot shut down: the VM is created");
  Lifecycle running(VmState::running);
  EXPECT_EQ(running.transition(VmState::running).error().message(), "cannot resume: the VM is running");
  EXPECT_EQ(running.transition(VmState::running, "start").error().message(), "cannot start: the VM is running");
}

TEST(Lifecycle, FullLife) {
  Lifecycle lifecycle;
  EXPECT_TRUE(lifecycle.transition(VmState::running));
  EXPECT_TRUE(lifecycle.transition(VmState::paused));
  EXPECT_TRUE(lifecycle.transition(VmState::running));
  EXPECT_TRUE(lifecycle.transition(VmState::paused));
  EXPECT_TRUE(lifecycle.transition(VmState::stopping));
  EXPECT_FALSE(lifecycle.transition(VmState::running));
  EXPECT_TRUE(lifecycle.transition(VmState::stopped));
  for (VmState to : kAllStates) EXPECT_FALSE(lifecycle.transition(to));
}

TEST(Lifecycle, WaitForSeesAnotherThreadsTransition) {
  Lifecycle lifecycle(VmState::running);
  EXPECT_FALSE(lifecycle.wait_for(VmState::stopped, std::chrono::milliseconds(10)));
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(lifecycle.transition(VmState::stopping));
    ASSERT_TRUE(lifecycle.transition(VmState::stopped));
  });
  EXPECT_TRUE(lifecycle.wait_for(VmState::stopped, std::chrono::seconds(10)));
  stopper.join();
}

// Many threads racing to pause and resume: exactly one of each pair of racers wins, and
// the state is always one of the two.
TEST(Lifecycle, ConcurrentTransitionsAreSerialised) {
  Lifecycle lifecycle(VmState::running);
  std::atomic<int> pauses{0};
  std::atomic<int> resumes{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (lifecycle.transition(VmState::paused)) ++pauses;
        if (lifecycle.transition(VmState::running)) ++resumes;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(lifecycle.state(), VmState::running);
  EXPECT_EQ(pauses.load(), resumes.load());
  EXPECT_GT(pauses.load(), 0);
}

}  // namespace
}  // namespace skiff
