// SPDX-License-Identifier: Apache-2.0
// The GSI routing table skiff installs in KVM, matching what the MADT and MP table tell the
// guest: ISA IRQ 0 (the PIT) arrives on IOAPIC pin 2 (the "IRQ0 → GSI 2" interrupt source
// override of every PC since the IOAPIC), the other ISA IRQs on the pins of their number, and
// GSI 16-23 on IOAPIC pins 16-23. KVM's default table instead sends GSI 0 to IOAPIC pin 0,
// which leaves a guest that trusts the MADT without a timer tick once it switches to the
// IOAPIC.
#pragma once

#include <linux/kvm.h>

#include <vector>

namespace skiff::x86 {

std::vector<kvm_irq_routing_entry> pc_gsi_routes();

}  // namespace skiff::x86
