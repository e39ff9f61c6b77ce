// SPDX-License-Identifier: Apache-2.0
// The ACPI tables skiff gives an x86_64 guest: RSDP, XSDT, FADT (with FACS), MADT, DSDT and
// any extra tables (e.g. MCFG), written to guest memory at kAcpiTablesAddr where a kernel
// finds the RSDP by scanning the BIOS area (or through boot_params.acpi_rsdp_addr).
// Layouts follow the ACPI 6.4 specification, chapter 5.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "arch/x86_64/acpi/aml.h"
#include "memory/guest_memory.h"
#include "skiff/error.h"

namespace skiff::x86 {

// Identification written into every table header.
inline constexpr std::string_view kAcpiOemId = "SKIFF ";        // 6 bytes
inline constexpr std::string_view kAcpiOemTableId = "SKIFFVM ";  // 8 bytes
inline constexpr uint32_t kAcpiOemRevision = 1;
inline constexpr std::string_view kAcpiCreatorId = "SKIF";  // 4 bytes
inline constexpr uint32_t kAcpiCreatorRevision = 1;
inline constexpr size_t kAcpiTableHeaderSize = 36;

// The MADT describes vCPUs with Processor Local APIC entries, whose 8-bit APIC id 0xff is
// the broadcast id; the IOAPIC takes the id after the last vCPU. x2APIC entries (needed
// beyond this) are not implemented.
inline constexpr uint32_t kAcpiMaxVcpus = 254;

// A device in the DSDT's \_SB scope, built with the AML builder. Later subsystems (PCI host
// bridge, virtio-mmio) describe their devices with this and append the result of to_aml()
// to AcpiPlatform::dsdt_devices.
struct AcpiDevice {
  // One NameSeg of 1-4 characters, unique within \_SB (e.g. "COM1", "VR00").
  std::string name{};
  // A compressed EISA id when of the form "PNP0501" (three letters, four hex digits), else
  // an ACPI id string of four letters/digits and four hex digits (e.g. "LNRO0005").
  std::string hid{};
  std::optional<uint64_t> uid{};               // _UID when set
  std::vector<aml::Bytes> resources{};         // _CRS descriptors; no _CRS when empty
  std::vector<aml::Bytes> extra{};             // more terms inside the Device (_CID, _STA...)

  // The Device() term, or a config error naming the invalid name or id.
  Result<aml::Bytes> to_aml() const;
};

struct AcpiPlatform {
  uint32_t vcpus = 1;
  // Device() terms placed inside Scope(\_SB) after the built-in legacy devices.
  std::vector<std::vector<uint8_t>> dsdt_devices{};
  // Complete tables (header included, checksum valid), listed in the XSDT after the MADT.
  std::vector<std::vector<uint8_t>> extra_tables{};
};

// Builds a complete table: the standard header with skiff's OEM fields, then `body`, with
// the length and checksum filled in. For callers that add extra tables (e.g. MCFG).
std::vector<uint8_t> make_acpi_table(std::string_view signature, uint8_t revision,
                                     std::span<const uint8_t> body);

// The 8-bit checksum that makes the bytes sum to zero when stored in them.
uint8_t acpi_checksum(std::span<const uint8_t> bytes);

// The DSDT's AML body (what follows the table header), exposed for tests.
aml::Bytes build_dsdt_aml(const AcpiPlatform& platform);

// Writes every table inside [kAcpiTablesAddr, kAcpiTablesAddr + kAcpiTablesMaxSize) and
// returns the guest address of the RSDP. Fails when the vCPU count is 0 or above
// kAcpiMaxVcpus, an extra table is malformed, the tables do not fit, or guest memory does
// not cover the area.
Result<uint64_t> write_acpi_tables(const GuestMemory& mem, const AcpiPlatform& platform);

}  // namespace skiff::x86
