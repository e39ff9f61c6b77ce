// SPDX-License-Identifier: Apache-2.0
// An IOAPIC/PIC input pin driven with KVM_IRQ_LINE: how the legacy devices (COM1, i8042,
// the ACPI SCI) and the shared PCI INTx lines reach the in-kernel irqchip.
#pragma once

#include <spdlog/spdlog.h>

#include "bus/bus_device.h"
#include "kvm/kvm_vm.h"

namespace skiff {

// An input pin of the in-kernel PIC/IOAPIC, driven with KVM_IRQ_LINE.
class KvmIrqLine : public IrqLine {
 public:
  KvmIrqLine(const KvmVm& vm, uint32_t irq) : vm_(vm), irq_(irq) {}
  void set_level(bool high) override {
    if (auto r = vm_.set_irq_line(irq_, high); !r) {
      spdlog::error("{}", r.error().message());
    }
  }

 private:
  const KvmVm& vm_;
  uint32_t irq_;
};

}  // namespace skiff
