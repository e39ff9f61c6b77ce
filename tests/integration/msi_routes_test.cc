// SPDX-License-Identifier: Apache-2.0
// MSI messages as KVM GSI routes + irqfds, against a real KVM VM.
#include "vmm/msi_routes.h"

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

}  // namespace
}  // namespace skiff
