// SPDX-License-Identifier: Apache-2.0
#include "vmm/kernel_panic_watch.h"

#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "unit/vmm/console_test_util.h"

namespace skiff {
namespace {

using testing::bytes_of;

constexpr std::string_view kPanicLog =
    "[    5.512345] sysrq: Trigger a crash\n"
    "[    5.512400] Kernel panic - not syncing: sysrq triggered crash\n"
    "[    5.512500] CPU: 0 PID: 1 Comm: sh Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.158-1\n"
    "[    5.512600] Call Trace:\n";

TEST(KernelPanicWatch, BannerAloneDoesNotStop) {
  KernelPanicWatch watch;
  EXPECT_EQ(watch.feed(bytes_of(kPanicLog)), std::nullopt);
  EXPECT_TRUE(watch.panicked());
  EXPECT_EQ(watch.banner(), std::optional<std::string>("Kernel panic - not syncing: sysrq triggered crash"));
}

TEST(KernelPanicWatch, EndBannerStops) {
  // panic=0: the kernel prints the end banner and spins.
  KernelPanicWatch watch;
  watch.feed(bytes_of(kPanicLog));
  auto stop = watch.feed(bytes_of("[    5.6] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n"));
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->reason, StopReason::kGuestPanic);
  EXPECT_EQ(stop->exit_code, kExitGuestPanic);
  EXPECT_EQ(stop->detail, "guest kernel panicked: Kernel panic - not syncing: sysrq triggered crash");
  // Only once.
  EXPECT_EQ(watch.feed(bytes_of("---[ end Kernel panic - not syncing: again ]---\n")), std::nullopt);
}

TEST(KernelPanicWatch, RebootingLineStopsWithoutWaiting) {
  // panic=N > 0: "Rebooting in N seconds.." and then N seconds of nothing.
  KernelPanicWatch watch;
  watch.feed(bytes_of(kPanicLog));
  auto stop = watch.feed(bytes_of("[    5.7] Rebooting in 10 seconds..\n"));
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->reason, StopReason::kGuestPanic);
}

TEST(KernelPanicWatch, RebootingWithoutABannerIsNothing) {
  KernelPanicWatch watch;
  EXPECT_EQ(watch.feed(bytes_of("Rebooting in 5 seconds..\n")), std::nullopt);
  EXPECT_FALSE(watch.panicked());
}

TEST(KernelPanicWatch, EndBannerAloneIsAPanic) {
  KernelPanicWatch watch;
  auto stop = watch.feed(bytes_of("[ 9.0] ---[ end Kernel panic - not syncing: Fatal exception ]---\n"));
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->detail, "guest kernel panicked: Kernel panic - not syncing: Fatal exception");
  EXPECT_TRUE(watch.panicked());
}

TEST(KernelPanicWatch, BannerSplitAcrossChunks) {
  KernelPanicWatch watch;
  const std::string_view text = "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n";
  for (size_t i = 0; i < text.size(); i += 3) watch.feed(bytes_of(text.substr(i, 3)));
  EXPECT_EQ(watch.banner(), std::optional<std::string>("Kernel panic - not syncing: VFS: Unable to mount root fs"));
}

TEST(KernelPanicWatch, FeedLine) {
  KernelPanicWatch watch;
  EXPECT_EQ(watch.feed_line("Kernel panic - not syncing: Attempted to kill init!"), std::nullopt);
  EXPECT_TRUE(watch.feed_line("---[ end Kernel panic - not syncing: Attempted to kill init! ]---").has_value());
}

TEST(KernelPanicWatch, ResetAfterTheBannerIsAPanic) {
  // panic=-1: the kernel resets at once; the reset is how the panic ends, not a verdict.
  KernelPanicWatch watch;
  watch.feed(bytes_of(kPanicLog));
  for (StopReason reason : {StopReason::kGuestReboot, StopReason::kGuestPowerOff, StopReason::kGuestCrash}) {
    auto panic = watch.reclassify(VmExit{reason, 0, "guest reset (ACPI reset register)"});
    ASSERT_TRUE(panic.has_value()) << to_string(reason);
    EXPECT_EQ(panic->reason, StopReason::kGuestPanic);
    EXPECT_EQ(panic->exit_code, kExitGuestPanic);
    EXPECT_NE(panic->detail.find("sysrq triggered crash"), std::string::npos) << panic->detail;
    EXPECT_NE(panic->detail.find("ACPI reset register"), std::string::npos) << panic->detail;
  }
}

TEST(KernelPanicWatch, PvpanicStopGainsTheBanner) {
  KernelPanicWatch watch;
  watch.feed(bytes_of(kPanicLog));
  auto panic = watch.reclassify(VmExit{StopReason::kGuestPanic, kExitGuestPanic, "guest kernel panicked (pvpanic)"});
  ASSERT_TRUE(panic.has_value());
  EXPECT_EQ(panic->detail, "guest kernel panicked (pvpanic): Kernel panic - not syncing: sysrq triggered crash");
  // The watch's own stop already names the banner: left as it is.
  auto own = watch.feed(bytes_of("---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n"));
  ASSERT_TRUE(own.has_value());
  EXPECT_EQ(watch.reclassify(*own), std::nullopt);
}

TEST(KernelPanicWatch, OtherStopsStand) {
  KernelPanicWatch watch;
  EXPECT_EQ(watch.reclassify(VmExit{StopReason::kGuestReboot, 0, "guest reset"}), std::nullopt);
  watch.feed(bytes_of(kPanicLog));
  // The guest's explicit verdict, a host stop, a timeout: not explained by the banner.
  EXPECT_EQ(watch.reclassify(VmExit{StopReason::kDebugExit, 3, "guest wrote 3"}), std::nullopt);
  EXPECT_EQ(watch.reclassify(VmExit{StopReason::kStopRequested, kExitStopped, "signal"}), std::nullopt);
  EXPECT_EQ(watch.reclassify(VmExit{StopReason::kTimeout, kExitTimeout, "timeout"}), std::nullopt);
}

}  // namespace
}  // namespace skiff
