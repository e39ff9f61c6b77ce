// SPDX-License-Identifier: Apache-2.0
// The ACPI pieces that describe skiff's PCI bus to the guest, for the VMM to hand to the
// ACPI table writer (AcpiPlatform::extra_tables and ::dsdt_devices):
//  - the MCFG table (PCI Firmware spec 3.0 section 4.1.2) locating the ECAM window;
//  - Device(PCI0), the host bridge (PNP0A08, compatible PNP0A03) whose _CRS lists the bus
//    range and the windows BARs are allocated from, and optionally a _PRT for INTx;
//  - Device(ECAM), a PNP0C02 "motherboard resources" device whose _CRS reserves the ECAM
//    window.
//
// What Linux (x86) expects, and why these pieces look the way they do:
//  - It uses only the address-space descriptors of PCI0's _CRS as the root bus's windows
//    (arch/x86/pci/acpi.c, pci_use_crs), so every range the allocator hands out must be
//    inside them. It drops the 0xcf8-0xcff I/O descriptor from the windows
//    (resource_is_pcicfg_ioport); QEMU lists it too, so PCI0 claims the config ports.
//  - It clips E820-reserved ranges out of the windows (pci_use_e820, on by default when
//    there is no DMI BIOS date of 2023 or later): the e820 map must not mark the windows
//    reserved.
//  - It accepts an MCFG region only when the region is reserved, in E820 (checked early) or
//    by a PNP0C01/PNP0C02 device's _CRS (arch/x86/pci/mmconfig-shared.c,
//    pci_mmcfg_reserved); otherwise it logs "not reserved in ACPI motherboard resources" and
//    falls back to mechanism #1, losing extended configuration space. ecam_reservation_aml()
//    provides the PNP0C02 reservation; an e820 reserved entry works as well.
//  - The MCFG bus range should match PCI0's _BBN / bus range (drivers/acpi/pci_mcfg.c looks
//    up the entry by segment and start bus).
#pragma once

#include <cstdint>
#include <vector>

#include "arch/x86_64/acpi/aml.h"
#include "pci/bar_allocator.h"
#include "skiff/error.h"

namespace skiff::pci {

// One INTx route for _PRT (ACPI 6.4 section 6.2.13): the interrupt pin of the device in
// `slot` is wired to a global system interrupt (an IOAPIC input).
struct PciIntxRoute {
  uint8_t slot = 0;
  uint8_t pin = 0;  // 0 = INTA# ... 3 = INTD#
  uint32_t gsi = 0;
};

// What PCI0's _CRS (and _SEG, _BBN) describe.
struct PciHostBridgeResources {
  uint16_t segment = 0;
  uint8_t bus_start = 0;
  uint8_t bus_end = 0;
  PciWindow io;                           // I/O BAR window
  PciWindow mmio32;                       // must lie below 4 GiB
  PciWindow mmio64;                       // size 0: not described
  std::vector<PciIntxRoute> intx_routes;  // empty: no _PRT
};

// The resources of skiff's bus 0 for the given windows.
PciHostBridgeResources host_bridge_resources(const PciWindows& windows);

// The MCFG body after the standard header: 8 reserved bytes, then one configuration space
// base address allocation structure (base, segment, start bus, end bus, 4 reserved bytes).
std::vector<uint8_t> mcfg_body(uint64_t ecam_base, uint16_t segment, uint8_t bus_start,
                               uint8_t bus_end);
// The complete MCFG table (revision 1) for segment 0, buses 0-0, ECAM at `ecam_base`.
std::vector<uint8_t> build_mcfg_table(uint64_t ecam_base);

// Device(PCI0) { _HID PNP0A08, _CID PNP0A03, _UID 0, _SEG, _BBN, _CRS, [_PRT] }, to be placed
// in \_SB. Fails when a window is empty where one is required (I/O and 32-bit MMIO), does not
// fit its descriptor (I/O above 0xffff, 32-bit MMIO above 4 GiB), or a route is invalid
// (slot above 31, pin above 3).
Result<x86::aml::Bytes> pci0_aml(const PciHostBridgeResources& resources);

// Device(ECAM) { _HID PNP0C02, _UID "ECAM", _CRS Memory32Fixed(base, size) }: the motherboard
// resource that makes Linux accept the MCFG region. Fails when the range is empty or not
// below 4 GiB.
Result<x86::aml::Bytes> ecam_reservation_aml(uint64_t ecam_base, uint64_t ecam_size);

}  // namespace skiff::pci
