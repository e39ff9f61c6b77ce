// SPDX-License-Identifier: Apache-2.0
// The processor state the boot vCPU starts in: identity-mapped page tables and a flat GDT in
// guest memory, and the kvm_regs/kvm_sregs values for either the Linux 64-bit boot protocol
// (Documentation/arch/x86/boot.rst, "64-bit BOOT PROTOCOL") or the Xen PVH entry
// (docs/misc/pvh.pandoc, "Initial state"). Nothing here issues ioctls.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "arch/x86_64/boot/boot_loader.h"
#include "memory/guest_memory.h"
#include "skiff/error.h"

namespace skiff::x86 {

// Boot GDT at kBootGdtAddr. Linux's 64-bit boot protocol requires flat segments at
// __BOOT_CS (0x10, execute/read) and __BOOT_DS (0x18, read/write); the PVH entry uses the
// 32-bit code segment at 0x08 (its selector values are unspecified by the ABI).
inline constexpr uint16_t kBootCode32Selector = 0x08;
inline constexpr uint16_t kBootCode64Selector = 0x10;
inline constexpr uint16_t kBootDataSelector = 0x18;
inline constexpr uint64_t kBootGdtEntries = 4;  // null, code32, code64, data
inline constexpr uint64_t kBootIdtSize = 8;     // one zero (not present) gate

// Control register and EFER bits (Intel SDM Vol. 3A, 2.5 "Control Registers", 2.2.1 EFER).
inline constexpr uint64_t kCr0Pe = 1ull << 0;
inline constexpr uint64_t kCr0Et = 1ull << 4;
inline constexpr uint64_t kCr0Pg = 1ull << 31;
inline constexpr uint64_t kCr4Pae = 1ull << 5;
inline constexpr uint64_t kEferLme = 1ull << 8;
inline constexpr uint64_t kEferLma = 1ull << 10;
inline constexpr uint64_t kRflagsReserved = 1ull << 1;  // bit 1 always reads as 1

// Page-table entry bits.
inline constexpr uint64_t kPtePresent = 1ull << 0;
inline constexpr uint64_t kPteWritable = 1ull << 1;
inline constexpr uint64_t kPteLargePage = 1ull << 7;  // PS: 2 MiB page in a PD entry

// Identity-maps [0, kIdentityMappedBytes) with 2 MiB pages: PML4 at kPml4Addr, PDPT at
// kPdptAddr, four page directories from kPdAddr.
Result<void> write_boot_page_tables(const GuestMemory& mem);

// Writes the boot GDT at kBootGdtAddr and an empty IDT at kBootIdtAddr.
Result<void> write_boot_gdt(const GuestMemory& mem);

// Sets the registers for the plan's entry. regs is overwritten; sregs should come from
// KVM_GET_SREGS so fields skiff does not set (apic_base, LDT, interrupt bitmap...) are kept.
// 64-bit entry: long mode, paging on with the boot page tables, CS = 0x10 (L=1), data
// segments 0x18, rip = entry, rsi = zero page, rsp = kBootStackTop.
// PVH entry: 32-bit flat protected mode, paging off, CS = 0x08, ebx = hvm_start_info.
void setup_boot_registers(const BootPlan& plan, kvm_regs* regs, kvm_sregs* sregs);

}  // namespace skiff::x86
