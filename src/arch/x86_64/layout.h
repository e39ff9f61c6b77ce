// SPDX-License-Identifier: Apache-2.0
// Every guest-physical address and fixed hardware number skiff uses on x86_64, in one
// place. The guest memory map (see docs/architecture.md):
//
//   0x0000_0000  real-mode IVT + BIOS data area (RAM, left zero)
//   0x0000_0500  boot GDT                   0x0000_0520  boot IDT (empty)
//   0x0000_6000  PVH hvm_start_info + memmap  0x0000_7000  boot_params ("zero page")
//   0x0000_9000  boot page tables: PML4, PDPT, 4 x PD (identity map of the low 4 GiB)
//   0x0002_0000  kernel command line (up to kCmdlineMaxSize)
//   0x0009_fc00  EBDA: MP floating pointer + MP config table (reserved in e820)
//   0x000e_0000  ACPI tables: RSDP first, then XSDT, FADT, MADT, DSDT... (reserved)
//   0x0010_0000  kernel load address (1 MiB); initrd at the top of low RAM
//   0xc000_0000  32-bit MMIO hole start: PCI/virtio-mmio windows, then chipset devices
//   0xe000_0000  PCI ECAM window   0xf000_0000  virtio-mmio slots (4 KiB each)
//   0xfec0_0000  IOAPIC   0xfee0_0000  LAPIC
//   0xfffb_c000  KVM identity-map page + TSS (3 pages), inside the hole
//   0x1_0000_0000  RAM above the hole, when the spec asks for more than the hole leaves
#pragma once

#include <cstdint>

namespace skiff::x86 {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kPageSize = 4 * kKiB;

// Low memory used by the boot path.
inline constexpr uint64_t kBootGdtAddr = 0x500;
inline constexpr uint64_t kBootIdtAddr = 0x520;
inline constexpr uint64_t kPvhStartInfoAddr = 0x6000;
inline constexpr uint64_t kPvhMemmapAddr = 0x6040;
inline constexpr uint64_t kPvhMemmapMaxEntries = 128;
inline constexpr uint64_t kZeroPageAddr = 0x7000;
inline constexpr uint64_t kBootStackTop = 0x8ff0;  // initial rsp for 64-bit/ELF entries
inline constexpr uint64_t kPml4Addr = 0x9000;
inline constexpr uint64_t kPdptAddr = 0xa000;
inline constexpr uint64_t kPdAddr = 0xb000;  // 4 consecutive page directories
inline constexpr uint64_t kIdentityMappedBytes = 4 * kGiB;
inline constexpr uint64_t kCmdlineAddr = 0x20000;
inline constexpr uint64_t kCmdlineMaxSize = 0x10000;  // including the terminating NUL

// Regions the e820 map reports as reserved below 1 MiB.
inline constexpr uint64_t kEbdaStart = 0x9fc00;
inline constexpr uint64_t kMpTableAddr = kEbdaStart;
inline constexpr uint64_t kMpTableMaxSize = 0x400;  // up to 0xa0000
inline constexpr uint64_t kLowRamEnd = 0xa0000;      // VGA hole starts here
inline constexpr uint64_t kBiosAreaStart = 0xe0000;
inline constexpr uint64_t kAcpiTablesAddr = kBiosAreaStart;  // RSDP scanned for here
inline constexpr uint64_t kAcpiTablesMaxSize = 0x20000;      // up to 1 MiB
inline constexpr uint64_t kHighMemStart = 1 * kMiB;

// Kernels and initrds.
inline constexpr uint64_t kKernelLoadAddr = kHighMemStart;

// The 32-bit MMIO hole below 4 GiB.
inline constexpr uint64_t kMmioHoleStart = 3 * kGiB;
inline constexpr uint64_t kMmioHoleEnd = 4 * kGiB;
inline constexpr uint64_t kMmio32WindowStart = kMmioHoleStart;  // device BARs, virtio-mmio
inline constexpr uint64_t kMmio32WindowSize = 512 * kMiB;
inline constexpr uint64_t kPciEcamAddr = 0xe0000000;
inline constexpr uint64_t kPciEcamSize = 256 * kMiB;  // buses 0..255
// virtio-mmio register blocks, one 4 KiB slot per device, after the ECAM window and
// outside the PCI BAR windows.
inline constexpr uint64_t kVirtioMmioBase = 0xf0000000;
inline constexpr uint64_t kVirtioMmioSlotSize = 0x1000;
// Their interrupts: ISA IRQs no legacy device of ours uses, edge-triggered and active high
// (the MADT's default for ISA IRQs), so a KVM irqfd pulse is one interrupt.
inline constexpr uint32_t kVirtioMmioIrqs[] = {5, 6, 7, 10, 11, 12, 13, 14, 15};
inline constexpr uint64_t kVirtioMmioSlots = sizeof(kVirtioMmioIrqs) / sizeof(kVirtioMmioIrqs[0]);
inline constexpr uint64_t kIoapicAddr = 0xfec00000;
inline constexpr uint64_t kIoapicSize = 0x1000;
inline constexpr uint64_t kLapicAddr = 0xfee00000;
inline constexpr uint64_t kKvmIdentityMapAddr = 0xfffbc000;
inline constexpr uint64_t kKvmTssAddr = 0xfffbd000;
inline constexpr uint64_t kRamAboveHoleStart = kMmioHoleEnd;

// Legacy I/O ports.
inline constexpr uint16_t kSerialCom1Port = 0x3f8;
inline constexpr uint16_t kSerialPortSize = 8;
inline constexpr uint32_t kSerialCom1Irq = 4;
inline constexpr uint16_t kI8042DataPort = 0x60;
inline constexpr uint16_t kI8042CommandPort = 0x64;
inline constexpr uint32_t kI8042KeyboardIrq = 1;
inline constexpr uint16_t kCmosPort = 0x70;  // index at 0x70, data at 0x71
inline constexpr uint16_t kCmosPortSize = 2;
inline constexpr uint32_t kRtcIrq = 8;
inline constexpr uint16_t kDebugExitPort = 0xf4;  // same port as QEMU's isa-debug-exit
inline constexpr uint16_t kDebugExitPortSize = 4;
inline constexpr uint16_t kPvpanicPort = 0x505;  // QEMU's ISA pvpanic (ACPI QEMU0001)
inline constexpr uint16_t kPvpanicPortSize = 1;
inline constexpr uint16_t kPciConfigAddressPort = 0xcf8;
inline constexpr uint16_t kPciConfigDataPort = 0xcfc;
// ACPI fixed-hardware PM registers (FADT), a reduced set: PM1a event and control blocks.
inline constexpr uint16_t kAcpiPm1EventPort = 0x600;  // 4 bytes: status, enable
inline constexpr uint16_t kAcpiPm1ControlPort = 0x604;  // 2 bytes
inline constexpr uint16_t kAcpiResetPort = 0x608;       // FADT reset register (1 byte)
inline constexpr uint8_t kAcpiResetValue = 0x1;
inline constexpr uint32_t kAcpiSciIrq = 9;

// Interrupt controller numbers.
inline constexpr uint32_t kIoapicPins = 24;
// PCI INTx: IOAPIC pins 16-23, level-triggered and active low (what _PRT entries without a
// link device and the MP table's PCI entries mean). A device's pin goes to
// kPciIntxFirstGsi + (slot + pin) % kPciIntxGsiCount, the usual swizzle; devices that share a
// pin are ORed by the VMM.
inline constexpr uint32_t kPciIntxFirstGsi = 16;
inline constexpr uint32_t kPciIntxGsiCount = 8;
constexpr uint32_t pci_intx_gsi(uint32_t slot, uint32_t pin) {
  return kPciIntxFirstGsi + (slot + pin) % kPciIntxGsiCount;
}
// vCPU APIC ids are 0..vcpus-1; the IOAPIC's id (MADT and MP table) is the vCPU count.

}  // namespace skiff::x86
