// SPDX-License-Identifier: Apache-2.0
// The Intel MultiProcessor Specification 1.4 tables (MP floating pointer + configuration
// table) that kernels without ACPI MADT parsing, or booted with acpi=off, use to find vCPUs
// and the IOAPIC. Written at kMpTableAddr, the first KiB of the EBDA (which is also the last
// KiB of base memory, a range Linux scans for "_MP_").
#pragma once

#include <cstdint>

#include "memory/guest_memory.h"
#include "skiff/error.h"

namespace skiff::x86 {

// The number of bytes write_mp_table() writes for `vcpus` processors.
uint64_t mp_table_size(uint32_t vcpus);

// The largest vCPU count whose tables fit in kMpTableMaxSize.
uint32_t mp_table_max_vcpus();

// Writes the MP floating pointer and configuration table: one processor entry per vCPU
// (APIC id = index, the bootstrap processor flag on vCPU 0), PCI bus 0 and ISA bus 1, the
// IOAPIC (id = vcpus), ISA IRQ routing (IRQ0 -> INTIN2, the SCI level-triggered) and the
// local interrupts (ExtINT on LINT0, NMI on LINT1). Fails when vcpus is 0, the tables do
// not fit in kMpTableMaxSize, or guest memory does not cover the area.
Result<void> write_mp_table(const GuestMemory& mem, uint32_t vcpus);

}  // namespace skiff::x86
