// SPDX-License-Identifier: Apache-2.0
#include "common/event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "common/unique_fd.h"

namespace skiff {
namespace {

using namespace std::chrono_literals;

// A plain thread: the loop itself knows nothing of seccomp (devices pass
// security::filtered_thread_starter).
Result<std::thread> plain_thread(std::string, std::function<void()> body) { return std::thread(std::move(body)); }

TEST(EventLoop, DispatchesReadableFdsOnItsThread) {
  auto loop = EventLoop::create("skiff-test", plain_thread);
  ASSERT_TRUE(loop) << loop.error().message();
  UniqueFd event(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_TRUE(event.valid());
  std::atomic<int> calls{0};
  std::atomic<bool> other_thread{false};
  const auto test_thread = std::this_thread::get_id();
  ASSERT_TRUE((*loop)->add(event.get(), [&] {
    uint64_t value = 0;
    ASSERT_EQ(::read(event.get(), &value, sizeof(value)), static_cast<ssize_t>(sizeof(value)));
    other_thread = std::this_thread::get_id() != test_thread;
    calls += static_cast<int>(value);
  }));
  ASSERT_TRUE((*loop)->start());
  uint64_t three = 3;
  ASSERT_EQ(::write(event.get(), &three, sizeof(three)), static_cast<ssize_t>(sizeof(three)));
  for (int i = 0; i < 1000 && calls.load() < 3; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(calls.load(), 3);
  EXPECT_TRUE(other_thread.load());
  (*loop)->stop();
  (*loop)->stop();  // idempotent
}

TEST(EventLoop, AStarterThatFailsRunsNoHandler) {
  bool asked = false;
  auto loop = EventLoop::create("skiff-test", [&](std::string name, std::function<void()>) -> Result<std::thread> {
    asked = true;
    return internal_error(name + ": refused");
  });
  ASSERT_TRUE(loop) << loop.error().message();
  auto started = (*loop)->start();
  ASSERT_FALSE(started);
  EXPECT_TRUE(asked);
  EXPECT_EQ(started.error().message(), "skiff-test: refused");
  (*loop)->stop();  // nothing to join
}

}  // namespace
}  // namespace skiff
