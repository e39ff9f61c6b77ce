// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/irq_routing.h"

#include "arch/x86_64/layout.h"

namespace skiff::x86 {
namespace {

constexpr uint32_t kIsaIrqs = 16;
constexpr uint32_t kPicPins = 8;
constexpr uint32_t kCascadeIrq = 2;  // the slave 8259 hangs off master pin 2: no device there
constexpr uint32_t kTimerIoapicPin = 2;

kvm_irq_routing_entry route(uint32_t gsi, uint32_t chip, uint32_t pin) {
  kvm_irq_routing_entry entry{};
  entry.gsi = gsi;
  entry.type = KVM_IRQ_ROUTING_IRQCHIP;
  entry.u.irqchip.irqchip = chip;
  entry.u.irqchip.pin = pin;
  return entry;
}

}  // namespace

std::vector<kvm_irq_routing_entry> pc_gsi_routes() {
  std::vector<kvm_irq_routing_entry> routes;
  // The 8259 pair, for guests (or boot phases) that use the PIC.
  for (uint32_t irq = 0; irq < kIsaIrqs; ++irq) {
    if (irq == kCascadeIrq) continue;
    uint32_t chip = irq < kPicPins ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
    routes.push_back(route(irq, chip, irq % kPicPins));
  }
  // The IOAPIC: GSI n on pin n, except the PIT's IRQ 0 on pin 2; nothing drives GSI 2.
  for (uint32_t gsi = 0; gsi < kIoapicPins; ++gsi) {
    if (gsi == kCascadeIrq) continue;
    routes.push_back(route(gsi, KVM_IRQCHIP_IOAPIC, gsi == 0 ? kTimerIoapicPin : gsi));
  }
  return routes;
}

}  // namespace skiff::x86
