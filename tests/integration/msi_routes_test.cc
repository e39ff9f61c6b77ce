// SPDX-License-Identifier: Apache-2.0
// MSI messages as KVM GSI routes + irqfds, against a real KVM VM.
#include "interrupts/msi_routes.h"

#include <gtest/gtest.h>

#include "arch/x86_64/irq_routing.h"
#include "arch/x86_64/layout.h"
#include "guest_runner.h"
#include "kvm/kvm_system.h"

namespace skiff {
namespace {

class MsiRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = test::kvm_unavailable_reason()) GTEST_SKIP() << "needs /dev/kvm: " << *reason;
    auto kvm = KvmSystem::open();
    ASSERT_TRUE(kvm) << kvm.error().message();
    auto vm = kvm->create_vm();
    ASSERT_TRUE(vm) << vm.error().message();
    vm_.emplace(std::move(*vm));
    ASSERT_TRUE(vm_->create_irqchip());
  }
  std::optional<KvmVm> vm_;
};

TEST_F(MsiRoutesTest, OneRoutePerDistinctMessage) {
  MsiRoutes routes(*vm_, x86::pc_gsi_routes(), x86::kIoapicPins, 8);
  ASSERT_TRUE(routes.prepare(0xfee00000, 0x41));
  ASSERT_TRUE(routes.prepare(0xfee00000, 0x41));  // the same message reuses its route
  EXPECT_EQ(routes.route_count(), 1u);
  ASSERT_TRUE(routes.prepare(0xfee00000, 0x42));
  EXPECT_EQ(routes.route_count(), 2u);
  routes.deliver(0xfee00000, 0x43);  // first use creates the route too
  EXPECT_EQ(routes.route_count(), 3u);
}

TEST_F(MsiRoutesTest, PastTheCapMessagesStillGetThrough) {
  MsiRoutes routes(*vm_, x86::pc_gsi_routes(), x86::kIoapicPins, 1);
  ASSERT_TRUE(routes.prepare(0xfee00000, 0x41));
  ASSERT_TRUE(routes.prepare(0xfee00000, 0x42));  // full: no route, not an error
  EXPECT_EQ(routes.route_count(), 1u);
  routes.deliver(0xfee00000, 0x42);  // falls back to KVM_SIGNAL_MSI
  EXPECT_EQ(routes.route_count(), 1u);
}

TEST_F(MsiRoutesTest, UnheldRoutesAreReclaimedWhenTheTableIsFull) {
  MsiRoutes routes(*vm_, x86::pc_gsi_routes(), x86::kIoapicPins, 2);
  ASSERT_TRUE(routes.retain(0xfee00000, 0x41));
  ASSERT_TRUE(routes.retain(0xfee00000, 0x42));
  EXPECT_EQ(routes.held_route_count(), 2u);
  routes.release(0xfee00000, 0x41);
  // Full, but one route is no longer held: it makes room for the new message.
  ASSERT_TRUE(routes.retain(0xfee00000, 0x43));
  EXPECT_EQ(routes.route_count(), 2u);
  EXPECT_EQ(routes.held_route_count(), 2u);
  // All held now: the next message has no route and is delivered by KVM_SIGNAL_MSI.
  ASSERT_TRUE(routes.retain(0xfee00000, 0x44));
  EXPECT_EQ(routes.route_count(), 2u);
  routes.deliver(0xfee00000, 0x44);
  routes.deliver(0xfee00000, 0x42);
}

TEST_F(MsiRoutesTest, TrackerFollowsReprogrammedAndMaskedVectors) {
  auto routes = std::make_shared<MsiRoutes>(*vm_, x86::pc_gsi_routes(), x86::kIoapicPins, 64);
  {
    MsixRouteTracker tracker(routes);
    ASSERT_TRUE(tracker.on_vector_changed(0, 0xfee00000, 0x41, false));
    ASSERT_TRUE(tracker.on_vector_changed(1, 0xfee00000, 0x42, false));
    ASSERT_TRUE(tracker.on_vector_changed(1, 0xfee00000, 0x42, false));  // unchanged: no double hold
    EXPECT_EQ(routes->held_route_count(), 2u);
    // Linux moving vector 0 to another CPU rewrites its message.
    ASSERT_TRUE(tracker.on_vector_changed(0, 0xfee01000, 0x41, false));
    EXPECT_EQ(routes->held_route_count(), 2u);
    EXPECT_EQ(routes->route_count(), 3u);
    ASSERT_TRUE(tracker.on_vector_changed(1, 0xfee00000, 0x42, true));  // masked
    EXPECT_EQ(routes->held_route_count(), 1u);
  }
  EXPECT_EQ(routes->held_route_count(), 0u);  // the tracker released everything it held
}

TEST_F(MsiRoutesTest, ReprogrammingManyTimesNeverExhaustsTheTable) {
  auto routes = std::make_shared<MsiRoutes>(*vm_, x86::pc_gsi_routes(), x86::kIoapicPins, 8);
  MsixRouteTracker tracker(routes);
  for (uint32_t round = 0; round < 100; ++round) {
    for (uint16_t vector = 0; vector < 4; ++vector) {
      ASSERT_TRUE(tracker.on_vector_changed(vector, 0xfee00000 | ((round % 4) << 12), 0x40 + vector, false));
    }
  }
  EXPECT_LE(routes->route_count(), 8u);
  EXPECT_EQ(routes->held_route_count(), 4u);
}

}  // namespace
}  // namespace skiff
