// SPDX-License-Identifier: Apache-2.0
// The Intel MultiProcessor Specification 1.4 tables (MP floating pointer + configuration
// table) that kernels without ACPI MADT parsing, or booted with acpi=off, use to find vCPUs
// and the IOAPIC. Written at kMpTableAddr, the first KiB of the EBDA (which is also the last
// KiB of base memory, a range Linux scans for "_MP_").
#pragma once

#include <cstdint>
#include <span>

#include "memory/guest_memory.h"
#include "skiff/error.h"

namespace skiff::x86 {

// A PCI device's INTx pin wired to an IOAPIC input (level-triggered, active low).
struct MpPciInterrupt {
  uint8_t slot = 0;        // device number on bus 0
  uint8_t pin = 0;         // 0 = INTA# ... 3 = INTD#
  uint8_t ioapic_pin = 0;  // the GSI
};

// The number of bytes write_mp_table() writes for `vcpus` processors and `pci_interrupts`
// PCI interrupt entries.
uint64_t mp_table_size(uint32_t vcpus, size_t pci_interrupts = 0);

// The largest vCPU count whose tables fit in kMpTableMaxSize.
uint32_t mp_table_max_vcpus(size_t pci_interrupts = 0);

// Writes the MP floating pointer and configuration table: one processor entry per vCPU
// (APIC id = index, the bootstrap processor flag on vCPU 0), PCI bus 0 and ISA bus 1, the
// IOAPIC (id = vcpus), ISA IRQ routing (IRQ0 -> INTIN2, the SCI level-triggered), the PCI
// INTx routes (MP spec 1.4 appendix D: source bus IRQ = slot << 2 | pin) and the local
// interrupts (ExtINT on LINT0, NMI on LINT1). Fails when vcpus is 0, the tables do not fit
// in kMpTableMaxSize, a PCI entry is out of range, or guest memory does not cover the area.
Result<void> write_mp_table(const GuestMemory& mem, uint32_t vcpus,
                            std::span<const MpPciInterrupt> pci_interrupts = {});

}  // namespace skiff::x86
