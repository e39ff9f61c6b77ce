// SPDX-License-Identifier: Apache-2.0
// Tier 2: pausing, resuming and shutting down a running guest through the library. The test
// guest's wait-shutdown action (tests/guest/lifecycle.c) prints tick=<n> lines while it runs
// and powers off when the host presses the ACPI power button or sends Ctrl-Alt-Del.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "guest_runner.h"
#include "skiff/vm.h"

namespace skiff::test {
namespace {

using namespace std::chrono_literals;

// Complete tick lines printed so far.
size_t tick_lines(const std::string& console) {
  size_t count = 0;
  for (size_t at = console.find("SKIFF-GUEST tick="); at != std::string::npos;
       at = console.find("SKIFF-GUEST tick=", at + 1)) {
    if (console.find('\n', at) != std::string::npos) ++count;
  }
  return count;
}

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << *reason;
  }
};

// A pause right after start, before the vCPU threads reach their first KVM_RUN, and a
// resume: the guest must run (it once spun on interrupted KVM_RUNs forever).
TEST_F(LifecycleTest, PauseRightAfterStartThenResumeRuns) {
  LiveGuest guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=wait-shutdown", 2, 64));
  ASSERT_FALSE(guest.error()) << *guest.error();
  ASSERT_TRUE(guest.vm().pause());
  ASSERT_TRUE(guest.vm().resume());
  ASSERT_TRUE(guest.next_line("tick=", 20s)) << guest.console();
  ASSERT_TRUE(guest.vm().shutdown(20s));
  auto exit = guest.wait(30s);
  ASSERT_TRUE(exit) << guest.console();
  EXPECT_EQ(exit->reason, StopReason::kGuestPowerOff) << guest.console();
}

TEST_F(LifecycleTest, PauseStopsTheGuestResumeContinuesShutdownPowersOff) {
  LiveGuest guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=wait-shutdown", 2, 64));
  ASSERT_FALSE(guest.error()) << *guest.error();
  ASSERT_TRUE(guest.next_line("tick=")) << guest.console();

  auto paused = guest.vm().pause();
  ASSERT_TRUE(paused) << paused.error().message();
  EXPECT_TRUE(guest.vm().paused());
  EXPECT_TRUE(guest.vm().pause()) << "pausing a paused VM does nothing";
  const size_t at_pause = tick_lines(guest.console());
  std::this_thread::sleep_for(700ms);
  EXPECT_EQ(tick_lines(guest.console()), at_pause) << "the guest made progress while paused";
  EXPECT_FALSE(guest.wait(0ms)) << "a paused VM is still a running VM";

  auto resumed = guest.vm().resume();
  ASSERT_TRUE(resumed) << resumed.error().message();
  EXPECT_FALSE(guest.vm().paused());
  auto tick = guest.next_line("tick=", 10s);
  ASSERT_TRUE(tick) << guest.console();
  EXPECT_GT(tick_lines(guest.console()), at_pause);

  // Shutdown from a paused VM resumes it so the guest can act on the request.
  ASSERT_TRUE(guest.vm().pause());
  auto shutdown = guest.vm().shutdown(20s);
  ASSERT_TRUE(shutdown) << shutdown.error().message();
  EXPECT_TRUE(guest.vm().shutdown(20s)) << "asking again while a shutdown is under way does nothing";
  EXPECT_TRUE(guest.next_line("shutdown-request=acpi", 20s)) << guest.console();
  auto exit = guest.wait(20s);
  ASSERT_TRUE(exit) << guest.console();
  EXPECT_EQ(exit->reason, StopReason::kGuestPowerOff) << exit->detail;
  EXPECT_EQ(exit->exit_code, kExitOk);

  auto after = guest.vm().pause();
  ASSERT_FALSE(after);
  EXPECT_NE(after.error().message().find("stopped"), std::string::npos) << after.error().message();
  EXPECT_FALSE(guest.vm().resume());
}

TEST_F(LifecycleTest, GuestWithoutAcpiEventsGetsCtrlAltDel) {
  LiveGuest guest(
      guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=wait-shutdown skiff.shutdown-via=keyboard", 1, 64));
  ASSERT_FALSE(guest.error()) << *guest.error();
  ASSERT_TRUE(guest.next_line("waiting-for-shutdown")) << guest.console();
  ASSERT_TRUE(guest.vm().shutdown(20s));
  auto request = guest.next_line("shutdown-request=", 20s);
  ASSERT_TRUE(request) << guest.console();
  // The controller translates (the BIOS default): set 1 make and break codes.
  EXPECT_EQ(*request, "shutdown-request=keyboard bytes=1d,38,e0,53,e0,d3,b8,9d");
  auto exit = guest.wait(20s);
  ASSERT_TRUE(exit) << guest.console();
  EXPECT_EQ(exit->reason, StopReason::kGuestPowerOff) << exit->detail;
}

TEST_F(LifecycleTest, GuestThatIgnoresShutdownIsStoppedAtTheDeadline) {
  LiveGuest guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=halt", 1, 64));
  ASSERT_FALSE(guest.error()) << *guest.error();
  ASSERT_TRUE(guest.next_line("action=halt")) << guest.console();
  auto asked = std::chrono::steady_clock::now();
  ASSERT_TRUE(guest.vm().shutdown(1500ms));
  auto exit = guest.wait(20s);
  ASSERT_TRUE(exit);
  auto took = std::chrono::steady_clock::now() - asked;
  EXPECT_EQ(exit->reason, StopReason::kStopRequested);
  EXPECT_EQ(exit->exit_code, kExitStopped);
  EXPECT_NE(exit->detail.find("did not shut down"), std::string::npos) << exit->detail;
  EXPECT_GE(took, 1400ms);
}

TEST_F(LifecycleTest, StateAndStatsFollowTheVm) {
  TempFile image(std::vector<uint8_t>(1 << 20, 0x11), ".img");
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.virtio=1 skiff.blk=rw skiff.action=wait-shutdown", 1, 64);
  DiskSpec disk;
  disk.id = "d0";
  disk.path = image.path();
  spec.disks.push_back(disk);
  {
    auto created = Vm::create(spec, test_vm_options());  // holds the disk's lock until it goes
    ASSERT_TRUE(created) << created.error().message();
    EXPECT_EQ((*created)->state(), VmState::created);
    EXPECT_EQ((*created)->stats().uptime_s, 0.0);
  }

  LiveGuest guest(spec);
  ASSERT_FALSE(guest.error()) << *guest.error();
  ASSERT_TRUE(guest.next_line("waiting-for-shutdown")) << guest.console();
  EXPECT_EQ(guest.vm().state(), VmState::running);
  VmStats stats = guest.vm().stats();
  EXPECT_EQ(stats.state, VmState::running);
  EXPECT_GT(stats.uptime_s, 0.0);
  ASSERT_EQ(stats.vcpus.size(), 1u);
  EXPECT_GT(stats.vcpus[0].exits["io"], 0u) << "the guest printed through the UART";
  EXPECT_GT(stats.vcpus[0].exits["mmio"], 0u) << "the guest drove virtio-pci";
  ASSERT_EQ(stats.disks.size(), 1u);
  EXPECT_EQ(stats.disks[0].id, "d0");
  EXPECT_GT(stats.disks[0].writes, 0u);
  EXPECT_GT(stats.disks[0].reads, 0u);
  EXPECT_GT(stats.disks[0].write_bytes, 0u);
  ASSERT_TRUE(stats.disks[0].latency);
  EXPECT_GE(stats.disks[0].latency->requests, stats.disks[0].reads + stats.disks[0].writes);
  EXPECT_TRUE(stats.nets.empty());
  EXPECT_FALSE(stats.balloon);

  ASSERT_TRUE(guest.vm().pause());
  EXPECT_EQ(guest.vm().state(), VmState::paused);
  ASSERT_TRUE(guest.vm().shutdown(20s));
  auto state = guest.vm().state();
  EXPECT_TRUE(state == VmState::stopping || state == VmState::stopped) << to_string(state);
  ASSERT_TRUE(guest.wait(20s));
  EXPECT_EQ(guest.vm().state(), VmState::stopped);
  const double uptime = guest.vm().stats().uptime_s;
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(guest.vm().stats().uptime_s, uptime) << "uptime stops with the VM";
}

TEST_F(LifecycleTest, PauseAndShutdownBeforeStartAreRefused) {
  auto vm = Vm::create(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=0", 1, 64), test_vm_options());
  ASSERT_TRUE(vm) << vm.error().message();
  auto paused = (*vm)->pause();
  ASSERT_FALSE(paused);
  EXPECT_NE(paused.error().message().find("not been started"), std::string::npos) << paused.error().message();
  EXPECT_EQ(paused.error().kind(), ErrorKind::kState);
  EXPECT_EQ(exit_code_for(paused.error()), kExitState);
  auto resumed = (*vm)->resume();
  ASSERT_FALSE(resumed);
  EXPECT_EQ(resumed.error().kind(), ErrorKind::kState);
  auto shut_down = (*vm)->shutdown(1s);
  ASSERT_FALSE(shut_down);
  EXPECT_EQ(shut_down.error().kind(), ErrorKind::kState);
}

}  // namespace
}  // namespace skiff::test
