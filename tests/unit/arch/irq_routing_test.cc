// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/irq_routing.h"

#include <gtest/gtest.h>

#include <optional>

namespace skiff::x86 {
namespace {

std::optional<uint32_t> pin_for(const std::vector<kvm_irq_routing_entry>& routes, uint32_t gsi, uint32_t chip) {
  std::optional<uint32_t> pin;
  for (const auto& route : routes) {
    if (route.gsi == gsi && route.type == KVM_IRQ_ROUTING_IRQCHIP && route.u.irqchip.irqchip == chip) {
      EXPECT_FALSE(pin) << "GSI " << gsi << " routed twice to chip " << chip;
      pin = route.u.irqchip.pin;
    }
  }
  return pin;
}

TEST(IrqRouting, TimerReachesIoapicPin2LikeTheMadtSays) {
  auto routes = pc_gsi_routes();
  EXPECT_EQ(pin_for(routes, 0, KVM_IRQCHIP_IOAPIC), 2u);
  EXPECT_EQ(pin_for(routes, 0, KVM_IRQCHIP_PIC_MASTER), 0u);
  // Nothing may drive GSI 2 (the cascade), or a second source would share the timer's pin.
  EXPECT_FALSE(pin_for(routes, 2, KVM_IRQCHIP_IOAPIC));
  EXPECT_FALSE(pin_for(routes, 2, KVM_IRQCHIP_PIC_MASTER));
}

TEST(IrqRouting, IsaAndPciPinsMapOneToOne) {
  auto routes = pc_gsi_routes();
  for (uint32_t gsi : {1u, 4u, 5u, 9u, 15u, 16u, 23u}) EXPECT_EQ(pin_for(routes, gsi, KVM_IRQCHIP_IOAPIC), gsi);
  EXPECT_EQ(pin_for(routes, 4, KVM_IRQCHIP_PIC_MASTER), 4u);
  EXPECT_EQ(pin_for(routes, 9, KVM_IRQCHIP_PIC_SLAVE), 1u);
  EXPECT_EQ(pin_for(routes, 15, KVM_IRQCHIP_PIC_SLAVE), 7u);
  EXPECT_FALSE(pin_for(routes, 16, KVM_IRQCHIP_PIC_MASTER));
  EXPECT_FALSE(pin_for(routes, 24, KVM_IRQCHIP_IOAPIC));
}

}  // namespace
}  // namespace skiff::x86
