// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/acpi/acpi_tables.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "arch/x86_64/layout.h"
#include "devices/legacy/acpi_pm.h"

namespace skiff::x86 {
namespace {

constexpr size_t kRsdpSize = 36;
constexpr size_t kFadtSize = 276;  // ACPI 6.4 table 5.9, through the hypervisor vendor id
constexpr size_t kFacsSize = 64;
constexpr size_t kTableAlignment = 16;
constexpr size_t kFacsAlignment = 64;  // ACPI 6.4 section 5.2.10: 64-byte aligned

constexpr uint8_t kXsdtRevision = 1;
constexpr uint8_t kFadtMajorRevision = 6;  // ACPI 6.4
constexpr uint8_t kFadtMinorRevision = 4;
constexpr uint8_t kMadtRevision = 5;
constexpr uint8_t kDsdtRevision = 2;  // 2 and up: AML integers are 64 bits
constexpr uint8_t kFacsVersion = 2;
constexpr uint8_t kRsdpRevision = 2;  // ACPI 2.0+: has the XSDT address

// FADT Fixed Feature Flags (ACPI 6.4 table 5.10).
constexpr uint32_t kFadtWbinvd = 1 << 0;
constexpr uint32_t kFadtProcC1 = 1 << 2;
// "A one indicates the power button is handled as a control method device. If the system
// does not have a power button, this value would be one and no power button device would
// be present." skiff has no power button, fixed or control-method; same for sleep.
constexpr uint32_t kFadtPowerButton = 1 << 4;
constexpr uint32_t kFadtSleepButton = 1 << 5;
constexpr uint32_t kFadtFixedRtc = 1 << 6;  // no RTC_STS/RTC_EN in the fixed registers
constexpr uint32_t kFadtResetRegSupported = 1 << 10;

// IA-PC Boot Architecture Flags (ACPI 6.4 table 5.11).
constexpr uint16_t kBootArchLegacyDevices = 1 << 0;  // ISA devices (COM1, RTC) exist
constexpr uint16_t kBootArch8042 = 1 << 1;
constexpr uint16_t kBootArchVgaNotPresent = 1 << 2;

// Generic Address Structure (ACPI 6.4 section 5.2.3.2).
constexpr uint8_t kGasSystemIo = 1;
constexpr uint8_t kGasAccessUndefined = 0;
constexpr uint8_t kGasAccessByte = 1;
constexpr uint8_t kGasAccessWord = 2;

// MADT (ACPI 6.4 section 5.2.12).
constexpr uint32_t kMadtPcatCompat = 1 << 0;
constexpr uint8_t kMadtLocalApic = 0;
constexpr uint8_t kMadtIoApic = 1;
constexpr uint8_t kMadtInterruptOverride = 2;
constexpr uint8_t kMadtLocalApicNmi = 4;
constexpr uint32_t kMadtLocalApicEnabled = 1 << 0;
constexpr uint8_t kMadtAllProcessors = 0xff;
// MPS INTI flags (table 5.26): polarity bits 1-0 (01 active high), trigger bits 3-2
// (01 edge, 11 level).
constexpr uint16_t kIntiEdgeActiveHigh = 0x0005;
constexpr uint16_t kIntiLevelActiveHigh = 0x000d;
constexpr uint8_t kIsaBus = 0;
constexpr uint8_t kPitIrq = 0;
constexpr uint32_t kPitGsi = 2;  // the PIT's output is wired to IOAPIC pin 2

// Little-endian byte sink with patching, for laying out table fields in order.
class ByteWriter {
 public:
  void u8(uint8_t value) { bytes_.push_back(value); }
  void u16(uint16_t value) { put(value, 2); }
  void u32(uint32_t value) { put(value, 4); }
  void u64(uint64_t value) { put(value, 8); }
  // `text` padded with spaces (or cut) to exactly `width` bytes.
  void text(std::string_view value, size_t width) {
    for (size_t i = 0; i < width; ++i) bytes_.push_back(i < value.size() ? value[i] : ' ');
  }
  void zeros(size_t count) { bytes_.insert(bytes_.end(), count, 0); }
  void append(std::span<const uint8_t> data) {
    bytes_.insert(bytes_.end(), data.begin(), data.end());
  }
  void gas(uint8_t space, uint8_t bit_width, uint8_t access_size, uint64_t address) {
    u8(space);
    u8(bit_width);
    u8(0);  // bit offset
    u8(access_size);
    u64(address);
  }
  size_t size() const { return bytes_.size(); }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  void put(uint64_t value, size_t width) {
    for (size_t i = 0; i < width; ++i) bytes_.push_back(static_cast<uint8_t>(value >> (8 * i)));
  }
  std::vector<uint8_t> bytes_;
};

void put_u32(std::vector<uint8_t>& bytes, size_t offset, uint32_t value) {
  for (size_t i = 0; i < 4; ++i) bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

uint32_t get_u32(std::span<const uint8_t> bytes, size_t offset) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) value |= static_cast<uint32_t>(bytes[offset + i]) << (8 * i);
  return value;
}

size_t align_up(size_t value, size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

// Table bodies: the bytes after the 36-byte header.

std::vector<uint8_t> build_fadt_body(uint64_t facs_addr, uint64_t dsdt_addr) {
  ByteWriter w;
  // Offsets in comments are from the start of the table (ACPI 6.4 table 5.9).
  w.u32(static_cast<uint32_t>(facs_addr));  // 36 FIRMWARE_CTRL (below 4 GiB: X_ field stays 0)
  w.u32(static_cast<uint32_t>(dsdt_addr));  // 40 DSDT
  w.u8(0);                                  // 44 reserved
  w.u8(0);                                  // 45 Preferred_PM_Profile: unspecified
  w.u16(static_cast<uint16_t>(kAcpiSciIrq));  // 46 SCI_INT
  w.u32(0);  // 48 SMI_CMD: 0 = no SMI port, the platform is always in ACPI mode
  w.u8(0);   // 52 ACPI_ENABLE
  w.u8(0);   // 53 ACPI_DISABLE
  w.u8(0);   // 54 S4BIOS_REQ
  w.u8(0);   // 55 PSTATE_CNT
  w.u32(kAcpiPm1EventPort);    // 56 PM1a_EVT_BLK
  w.u32(0);                    // 60 PM1b_EVT_BLK
  w.u32(kAcpiPm1ControlPort);  // 64 PM1a_CNT_BLK
  w.u32(0);                    // 68 PM1b_CNT_BLK
  w.u32(0);                    // 72 PM2_CNT_BLK
  w.u32(0);                    // 76 PM_TMR_BLK: none (optional since ACPI 5.0A)
  w.u32(0);                    // 80 GPE0_BLK
  w.u32(0);                    // 84 GPE1_BLK
  w.u8(static_cast<uint8_t>(kAcpiPm1EventBlockSize));    // 88 PM1_EVT_LEN
  w.u8(static_cast<uint8_t>(kAcpiPm1ControlBlockSize));  // 89 PM1_CNT_LEN
  w.u8(0);       // 90 PM2_CNT_LEN
  w.u8(0);       // 91 PM_TMR_LEN
  w.u8(0);       // 92 GPE0_BLK_LEN
  w.u8(0);       // 93 GPE1_BLK_LEN
  w.u8(0);       // 94 GPE1_BASE
  w.u8(0);       // 95 CST_CNT
  w.u16(101);    // 96 P_LVL2_LAT: > 100 = C2 not supported
  w.u16(1001);   // 98 P_LVL3_LAT: > 1000 = C3 not supported
  w.u16(0);      // 100 FLUSH_SIZE
  w.u16(0);      // 102 FLUSH_STRIDE
  w.u8(0);       // 104 DUTY_OFFSET
  w.u8(0);       // 105 DUTY_WIDTH
  w.u8(0);       // 106 DAY_ALRM
  w.u8(0);       // 107 MON_ALRM
  w.u8(0);       // 108 CENTURY
  w.u16(kBootArchLegacyDevices | kBootArch8042 | kBootArchVgaNotPresent);  // 109 IAPC_BOOT_ARCH
  w.u8(0);                                                                  // 111 reserved
  w.u32(kFadtWbinvd | kFadtProcC1 | kFadtPowerButton | kFadtSleepButton | kFadtFixedRtc |
        kFadtResetRegSupported);  // 112 Flags
  // 116 RESET_REG: the reset register must be 8 bits wide at bit offset 0 (section 4.8.3.6).
  w.gas(kGasSystemIo, 8, kGasAccessByte, kAcpiResetPort);
  w.u8(kAcpiResetValue);     // 128 RESET_VALUE
  w.u16(0);                  // 129 ARM_BOOT_ARCH
  w.u8(kFadtMinorRevision);  // 131 FADT Minor Version
  w.u64(0);                  // 132 X_FIRMWARE_CTRL: must be 0 when FIRMWARE_CTRL is used
  w.u64(dsdt_addr);          // 140 X_DSDT
  w.gas(kGasSystemIo, static_cast<uint8_t>(kAcpiPm1EventBlockSize * 8), kGasAccessUndefined,
        kAcpiPm1EventPort);  // 148 X_PM1a_EVT_BLK
  w.zeros(12);               // 160 X_PM1b_EVT_BLK
  w.gas(kGasSystemIo, static_cast<uint8_t>(kAcpiPm1ControlBlockSize * 8), kGasAccessWord,
        kAcpiPm1ControlPort);  // 172 X_PM1a_CNT_BLK
  w.zeros(12);                 // 184 X_PM1b_CNT_BLK
  w.zeros(12);                 // 196 X_PM2_CNT_BLK
  w.zeros(12);                 // 208 X_PM_TMR_BLK
  w.zeros(12);                 // 220 X_GPE0_BLK
  w.zeros(12);                 // 232 X_GPE1_BLK
  w.zeros(12);                 // 244 SLEEP_CONTROL_REG (hardware-reduced only)
  w.zeros(12);                 // 256 SLEEP_STATUS_REG (hardware-reduced only)
  w.u64(0);                    // 268 Hypervisor Vendor Identity
  return std::move(w.bytes());
}

std::vector<uint8_t> build_facs() {
  // ACPI 6.4 table 5.14. The FACS has no checksum.
  ByteWriter w;
  w.text("FACS", 4);
  w.u32(kFacsSize);
  w.u32(0);  // hardware signature
  w.u32(0);  // firmware waking vector
  w.u32(0);  // global lock
  w.u32(0);  // flags: no S4BIOS, no 64-bit wake
  w.u64(0);  // X firmware waking vector
  w.u8(kFacsVersion);
  w.zeros(3);
  w.u32(0);  // OSPM flags
  w.zeros(24);
  return std::move(w.bytes());
}

std::vector<uint8_t> build_madt_body(uint32_t vcpus) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(kLapicAddr));  // Local Interrupt Controller Address
  w.u32(kMadtPcatCompat);  // dual 8259s present: the OS must mask them when using APICs
  for (uint32_t cpu = 0; cpu < vcpus; ++cpu) {
    // Processor Local APIC (section 5.2.12.2): ACPI processor UID and APIC id = index.
    w.u8(kMadtLocalApic);
    w.u8(8);
    w.u8(static_cast<uint8_t>(cpu));
    w.u8(static_cast<uint8_t>(cpu));
    w.u32(kMadtLocalApicEnabled);
  }
  // I/O APIC (section 5.2.12.3), numbered after the vCPUs so APIC ids stay unique.
  w.u8(kMadtIoApic);
  w.u8(12);
  w.u8(static_cast<uint8_t>(vcpus));
  w.u8(0);
  w.u32(static_cast<uint32_t>(kIoapicAddr));
  w.u32(0);  // global system interrupt base
  // Interrupt Source Overrides (section 5.2.12.5): ISA IRQ 0 (PIT) arrives at GSI 2, and the
  // SCI is level-triggered, active high.
  w.u8(kMadtInterruptOverride);
  w.u8(10);
  w.u8(kIsaBus);
  w.u8(kPitIrq);
  w.u32(kPitGsi);
  w.u16(kIntiEdgeActiveHigh);
  w.u8(kMadtInterruptOverride);
  w.u8(10);
  w.u8(kIsaBus);
  w.u8(static_cast<uint8_t>(kAcpiSciIrq));
  w.u32(kAcpiSciIrq);
  w.u16(kIntiLevelActiveHigh);
  // Local APIC NMI (section 5.2.12.7): NMI on LINT1 of every processor.
  w.u8(kMadtLocalApicNmi);
  w.u8(6);
  w.u8(kMadtAllProcessors);
  w.u16(kIntiEdgeActiveHigh);
  w.u8(1);  // LINT1
  return std::move(w.bytes());
}

std::vector<uint8_t> build_rsdp(uint64_t xsdt_addr) {
  // ACPI 6.4 section 5.2.5.3.
  ByteWriter w;
  w.text("RSD PTR ", 8);
  w.u8(0);  // checksum of the first 20 bytes
  w.text(kAcpiOemId, 6);
  w.u8(kRsdpRevision);
  w.u32(0);  // RSDT address: no RSDT, ACPI 2.0+ OSes use the XSDT
  w.u32(kRsdpSize);
  w.u64(xsdt_addr);
  w.u8(0);  // extended checksum of all 36 bytes
  w.zeros(3);
  std::vector<uint8_t> rsdp = std::move(w.bytes());
  rsdp[8] = acpi_checksum(std::span(rsdp).first(20));
  rsdp[32] = acpi_checksum(rsdp);
  return rsdp;
}

bool is_table_signature_char(uint8_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

Result<void> check_extra_table(size_t index, std::span<const uint8_t> table) {
  const std::string what = fmt::format("ACPI extra table {}", index);
  if (table.size() < kAcpiTableHeaderSize) {
    return internal_error(fmt::format("{}: {} bytes, shorter than the {}-byte table header", what,
                                      table.size(), kAcpiTableHeaderSize));
  }
  const std::string signature(table.begin(), table.begin() + 4);
  if (!std::all_of(table.begin(), table.begin() + 4, is_table_signature_char)) {
    return internal_error(fmt::format("{}: signature is not 4 characters A-Z, 0-9, _", what));
  }
  static constexpr std::array<std::string_view, 6> kBuiltIn = {"RSDT", "XSDT", "FACP",
                                                               "FACS", "APIC", "DSDT"};
  if (std::find(kBuiltIn.begin(), kBuiltIn.end(), signature) != kBuiltIn.end()) {
    return internal_error(fmt::format("{} ({}): skiff writes this table itself", what, signature));
  }
  if (get_u32(table, 4) != table.size()) {
    return internal_error(fmt::format("{} ({}): header length {} but {} bytes given", what,
                                      signature, get_u32(table, 4), table.size()));
  }
  if (acpi_checksum(table) != 0) {
    return internal_error(fmt::format("{} ({}): bytes do not sum to 0 (bad checksum)", what,
                                      signature));
  }
  return {};
}

bool is_acpi_id(std::string_view hid) {
  // ACPI 6.4 section 6.1.5: an ACPI id is four upper-case letters or digits (vendor) and
  // four upper-case hex digits.
  if (hid.size() != 8) return false;
  for (size_t i = 0; i < 8; ++i) {
    const char c = hid[i];
    const bool digit = c >= '0' && c <= '9';
    const bool upper = c >= 'A' && c <= 'Z';
    if (i < 4 ? !(digit || upper) : !(digit || (c >= 'A' && c <= 'F'))) return false;
  }
  return true;
}

}  // namespace

uint8_t acpi_checksum(std::span<const uint8_t> bytes) {
  uint8_t sum = 0;
  for (uint8_t b : bytes) sum = static_cast<uint8_t>(sum + b);
  return static_cast<uint8_t>(0x100 - sum);
}

std::vector<uint8_t> make_acpi_table(std::string_view signature, uint8_t revision,
                                     std::span<const uint8_t> body) {
  // System Description Table Header (ACPI 6.4 section 5.2.6).
  ByteWriter w;
  w.text(signature, 4);
  w.u32(0);  // length, patched below
  w.u8(revision);
  w.u8(0);  // checksum, patched below
  w.text(kAcpiOemId, 6);
  w.text(kAcpiOemTableId, 8);
  w.u32(kAcpiOemRevision);
  w.text(kAcpiCreatorId, 4);
  w.u32(kAcpiCreatorRevision);
  w.append(body);
  std::vector<uint8_t> table = std::move(w.bytes());
  put_u32(table, 4, static_cast<uint32_t>(table.size()));
  table[9] = acpi_checksum(table);
  return table;
}

Result<aml::Bytes> AcpiDevice::to_aml() const {
  auto device_name = aml::Name::parse(name);
  if (!device_name) return std::unexpected(device_name.error().with_context("ACPI device"));
  if (!device_name->is_single_segment()) {
    return config_error(
        fmt::format("ACPI device \"{}\": the name must be one segment of 1-4 characters", name));
  }
  std::vector<aml::Bytes> terms;
  if (auto eisa = aml::encode_eisa_id(hid)) {
    terms.push_back(aml::name("_HID", aml::eisa_id(*eisa)));
  } else if (is_acpi_id(hid)) {
    terms.push_back(aml::name("_HID", aml::string(hid)));
  } else {
    return config_error(fmt::format(
        "ACPI device \"{}\": _HID \"{}\" is neither an EISA id (e.g. PNP0501) nor an ACPI id "
        "(e.g. LNRO0005)",
        name, hid));
  }
  if (uid) terms.push_back(aml::name("_UID", aml::integer(*uid)));
  if (!resources.empty()) terms.push_back(aml::name("_CRS", aml::resource_template(resources)));
  terms.insert(terms.end(), extra.begin(), extra.end());
  return aml::device(*device_name, terms);
}

aml::Bytes build_dsdt_aml(const AcpiPlatform& platform) {
  // ISA devices the kernel binds through PNP ids (ACPI 6.4 section 6.1.5 _HID, 6.2.2 _CRS).
  std::vector<aml::Bytes> devices;
  devices.push_back(aml::device(
      "COM1", {aml::name("_HID", aml::eisa_id(*aml::encode_eisa_id("PNP0501"))),
               aml::name("_UID", aml::one()),
               aml::name("_CRS", aml::resource_template(
                                     {aml::io(kSerialCom1Port, kSerialCom1Port, 1,
                                              static_cast<uint8_t>(kSerialPortSize)),
                                      aml::irq_no_flags(static_cast<uint8_t>(kSerialCom1Irq))}))}));
  const aml::Bytes i8042_resources = aml::resource_template(
      {aml::io(kI8042DataPort, kI8042DataPort, 1, 1),
       aml::io(kI8042CommandPort, kI8042CommandPort, 1, 1),
       aml::irq_no_flags(static_cast<uint8_t>(kI8042KeyboardIrq))});
  devices.push_back(aml::device(
      "PS2K", {aml::name("_HID", aml::eisa_id(*aml::encode_eisa_id("PNP0303"))),
               aml::name("_CRS", i8042_resources)}));
  devices.push_back(aml::device(
      "RTC_", {aml::name("_HID", aml::eisa_id(*aml::encode_eisa_id("PNP0B00"))),
               aml::name("_CRS", aml::resource_template(
                                     {aml::io(kCmosPort, kCmosPort, 1,
                                              static_cast<uint8_t>(kCmosPortSize)),
                                      aml::irq_no_flags(static_cast<uint8_t>(kRtcIrq))}))}));
  for (const auto& blob : platform.dsdt_devices) devices.push_back(blob);

  std::vector<aml::Bytes> terms;
  terms.push_back(aml::scope("\\_SB_", devices));
  // \_S5 (ACPI 6.4 section 7.4.2): SLP_TYPa, SLP_TYPb for soft-off, matched by AcpiPmDevice.
  terms.push_back(aml::name("\\_S5_", aml::package({aml::integer(kAcpiS5SleepType),
                                                    aml::integer(kAcpiS5SleepType)})));
  return aml::concat(terms);
}

Result<uint64_t> write_acpi_tables(const GuestMemory& mem, const AcpiPlatform& platform) {
  if (platform.vcpus == 0 || platform.vcpus > kAcpiMaxVcpus) {
    return config_error(fmt::format("ACPI tables: {} vCPUs; the MADT supports 1 to {}",
                                    platform.vcpus, kAcpiMaxVcpus));
  }
  size_t device_bytes = 0;
  for (const auto& blob : platform.dsdt_devices) device_bytes += blob.size();
  if (device_bytes > kAcpiTablesMaxSize) {
    return config_error(fmt::format(
        "ACPI tables: {} DSDT devices take {} bytes, more than the {:#x}-byte table area",
        platform.dsdt_devices.size(), device_bytes, kAcpiTablesMaxSize));
  }
  for (size_t i = 0; i < platform.extra_tables.size(); ++i) {
    if (auto ok = check_extra_table(i, platform.extra_tables[i]); !ok) {
      return std::unexpected(ok.error());
    }
  }

  const std::vector<uint8_t> dsdt =
      make_acpi_table("DSDT", kDsdtRevision, build_dsdt_aml(platform));
  const std::vector<uint8_t> facs = build_facs();
  const std::vector<uint8_t> madt =
      make_acpi_table("APIC", kMadtRevision, build_madt_body(platform.vcpus));
  const size_t xsdt_size = kAcpiTableHeaderSize + 8 * (2 + platform.extra_tables.size());

  // Layout: RSDP first (the scan target), then each table 16-byte aligned, FACS 64-byte.
  const size_t rsdp_offset = 0;
  const size_t xsdt_offset = align_up(rsdp_offset + kRsdpSize, kTableAlignment);
  const size_t fadt_offset = align_up(xsdt_offset + xsdt_size, kTableAlignment);
  const size_t facs_offset = align_up(fadt_offset + kFadtSize, kFacsAlignment);
  const size_t madt_offset = align_up(facs_offset + facs.size(), kTableAlignment);
  const size_t dsdt_offset = align_up(madt_offset + madt.size(), kTableAlignment);
  std::vector<size_t> extra_offsets;
  size_t end = dsdt_offset + dsdt.size();
  for (const auto& table : platform.extra_tables) {
    extra_offsets.push_back(align_up(end, kTableAlignment));
    end = extra_offsets.back() + table.size();
  }
  if (end > kAcpiTablesMaxSize) {
    return config_error(fmt::format(
        "ACPI tables: {} bytes do not fit the {:#x}-byte area at {:#x} (DSDT {} bytes, {} extra "
        "tables)",
        end, kAcpiTablesMaxSize, kAcpiTablesAddr, dsdt.size(), platform.extra_tables.size()));
  }
  auto addr = [](size_t offset) { return kAcpiTablesAddr + offset; };

  const std::vector<uint8_t> fadt =
      make_acpi_table("FACP", kFadtMajorRevision,
                      build_fadt_body(addr(facs_offset), addr(dsdt_offset)));
  ByteWriter xsdt_body;
  xsdt_body.u64(addr(fadt_offset));
  xsdt_body.u64(addr(madt_offset));
  for (size_t offset : extra_offsets) xsdt_body.u64(addr(offset));
  const std::vector<uint8_t> xsdt = make_acpi_table("XSDT", kXsdtRevision, xsdt_body.bytes());
  const std::vector<uint8_t> rsdp = build_rsdp(addr(xsdt_offset));

  std::vector<uint8_t> image(end, 0);
  auto place = [&image](size_t offset, std::span<const uint8_t> table) {
    std::copy(table.begin(), table.end(), image.begin() + static_cast<ptrdiff_t>(offset));
  };
  place(rsdp_offset, rsdp);
  place(xsdt_offset, xsdt);
  place(fadt_offset, fadt);
  place(facs_offset, facs);
  place(madt_offset, madt);
  place(dsdt_offset, dsdt);
  for (size_t i = 0; i < extra_offsets.size(); ++i) {
    place(extra_offsets[i], platform.extra_tables[i]);
  }

  if (auto ok = mem.write(kAcpiTablesAddr, image); !ok) {
    return std::unexpected(ok.error().with_context(
        fmt::format("writing {} bytes of ACPI tables at {:#x}", image.size(), kAcpiTablesAddr)));
  }
  return addr(rsdp_offset);
}

}  // namespace skiff::x86
