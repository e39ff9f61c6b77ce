// SPDX-License-Identifier: Apache-2.0
#include "pci/pci_acpi.h"

#include <fmt/format.h>

#include "arch/x86_64/acpi/acpi_tables.h"
#include "arch/x86_64/layout.h"
#include "pci/pci_root.h"

namespace skiff::pci {
namespace {

namespace aml = x86::aml;

constexpr uint64_t kFourGiB = uint64_t{1} << 32;
constexpr uint64_t kIoSpaceEnd = 0x10000;
// PCI Firmware spec 3.0 section 4.1.2, table 4-2: MCFG revision 1.
constexpr uint8_t kMcfgRevision = 1;

template <typename T>
void append_le(std::vector<uint8_t>& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

}  // namespace

PciHostBridgeResources host_bridge_resources(const PciWindows& windows) {
  return PciHostBridgeResources{.segment = 0,
                                .bus_start = 0,
                                .bus_end = 0,
                                .io = windows.io,
                                .mmio32 = windows.mmio32,
                                .mmio64 = windows.mmio64,
                                .intx_routes = {}};
}

std::vector<uint8_t> mcfg_body(uint64_t ecam_base, uint16_t segment, uint8_t bus_start,
                               uint8_t bus_end) {
  std::vector<uint8_t> body;
  append_le<uint64_t>(body, 0);  // reserved (table 4-2)
  // Table 4-3: memory mapped enhanced configuration space base address allocation structure.
  append_le<uint64_t>(body, ecam_base);
  append_le<uint16_t>(body, segment);
  body.push_back(bus_start);
  body.push_back(bus_end);
  append_le<uint32_t>(body, 0);  // reserved
  return body;
}

std::vector<uint8_t> build_mcfg_table(uint64_t ecam_base) {
  const auto body = mcfg_body(ecam_base, 0, 0, 0);
  return x86::make_acpi_table("MCFG", kMcfgRevision, body);
}

Result<aml::Bytes> pci0_aml(const PciHostBridgeResources& r) {
  if (r.bus_end < r.bus_start) {
    return internal_error(fmt::format("PCI0: bus range {}-{} is empty", r.bus_start, r.bus_end));
  }
  if (r.io.size == 0 || r.io.end() > kIoSpaceEnd) {
    return internal_error(fmt::format("PCI0: I/O window [{:#x}, +{:#x}) is empty or above 0xffff",
                                      r.io.start, r.io.size));
  }
  if (r.mmio32.size == 0 || r.mmio32.start >= kFourGiB ||
      r.mmio32.size > kFourGiB - r.mmio32.start) {
    return internal_error(
        fmt::format("PCI0: 32-bit MMIO window [{:#x}, +{:#x}) is empty or crosses 4 GiB",
                    r.mmio32.start, r.mmio32.size));
  }
  if (r.mmio64.size != 0 && r.mmio64.end() < r.mmio64.start) {
    return internal_error(fmt::format("PCI0: 64-bit MMIO window [{:#x}, +{:#x}) wraps",
                                      r.mmio64.start, r.mmio64.size));
  }

  // ACPI 6.4 section 6.4.3.5: the windows are producer address-space descriptors with fixed
  // minimum and maximum. Non-cacheable (not prefetchable) memory, because Linux refuses to
  // put a non-prefetchable BAR in a prefetchable window, while the reverse is allowed.
  std::vector<aml::Bytes> crs;
  crs.push_back(aml::word_bus_number(r.bus_start, r.bus_end));
  crs.push_back(aml::io(x86::kPciConfigAddressPort, x86::kPciConfigAddressPort, 1,
                        static_cast<uint8_t>(kPciConfigIoSize)));
  crs.push_back(
      aml::word_io(static_cast<uint16_t>(r.io.start), static_cast<uint16_t>(r.io.end() - 1)));
  crs.push_back(aml::dword_memory(aml::MemoryCaching::kNonCacheable, true,
                                  static_cast<uint32_t>(r.mmio32.start),
                                  static_cast<uint32_t>(r.mmio32.end() - 1)));
  if (r.mmio64.size != 0) {
    crs.push_back(aml::qword_memory(aml::MemoryCaching::kNonCacheable, true, r.mmio64.start,
                                    r.mmio64.end() - 1));
  }

  // PNP0A08 is a PCI Express root bridge, listed as compatible with PNP0A03, the PCI root
  // bridge (ACPI 6.4 sections 6.1.5 _HID and 6.1.2 _CID), as Linux's pci_root driver expects.
  std::vector<aml::Bytes> terms{
      aml::name("_HID", aml::eisa_id(*aml::encode_eisa_id("PNP0A08"))),
      aml::name("_CID", aml::eisa_id(*aml::encode_eisa_id("PNP0A03"))),
      aml::name("_UID", aml::integer(r.segment)),
      aml::name("_SEG", aml::integer(r.segment)),    // ACPI 6.4 section 6.5.6
      aml::name("_BBN", aml::integer(r.bus_start)),  // section 6.5.5
      aml::name("_CRS", aml::resource_template(crs)),
  };

  if (!r.intx_routes.empty()) {
    // ACPI 6.4 section 6.2.13, table 6.2.13: Package {Address, Pin, Source, Source Index}.
    // Address: device number in the high word, 0xffff (any function) in the low word; a
    // Source of 0 makes Source Index a global system interrupt.
    std::vector<aml::Bytes> entries;
    for (const auto& route : r.intx_routes) {
      if (route.slot >= kSlotsPerBus || route.pin > 3) {
        return internal_error(
            fmt::format("PCI0 _PRT: slot {} pin {} is out of range", route.slot, route.pin));
      }
      entries.push_back(
          aml::package({aml::dword_const((uint32_t{route.slot} << 16) | 0xffff),
                        aml::integer(route.pin), aml::zero(), aml::dword_const(route.gsi)}));
    }
    terms.push_back(aml::name("_PRT", aml::package(entries)));
  }
  return aml::device("PCI0", terms);
}

Result<aml::Bytes> ecam_reservation_aml(uint64_t ecam_base, uint64_t ecam_size) {
  if (ecam_size == 0 || ecam_base >= kFourGiB || ecam_size > kFourGiB - ecam_base) {
    return internal_error(
        fmt::format("ECAM reservation [{:#x}, +{:#x}) is empty or not below "
                    "4 GiB",
                    ecam_base, ecam_size));
  }
  // PNP0C02: the generic id for motherboard resources no other device reports; Linux's pnp
  // "system" driver reserves them, and mmconfig-shared.c looks for the MCFG region there.
  return aml::device("ECAM", {aml::name("_HID", aml::eisa_id(*aml::encode_eisa_id("PNP0C02"))),
                              aml::name("_UID", aml::string("ECAM")),
                              aml::name("_CRS", aml::resource_template({aml::memory32_fixed(
                                                    false, static_cast<uint32_t>(ecam_base),
                                                    static_cast<uint32_t>(ecam_size))}))});
}

}  // namespace skiff::pci
