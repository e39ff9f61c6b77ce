// SPDX-License-Identifier: Apache-2.0
// The ACPI tables as a guest kernel reads them: RSDP found by scanning the BIOS area, every
// table reached through the XSDT/FADT with a valid signature, length and checksum.
#include "arch/x86_64/acpi/acpi_tables.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "unit/acpi/acpi_test_util.h"
#include "arch/x86_64/layout.h"
#include "devices/legacy/acpi_pm.h"

namespace skiff::x86 {
namespace {

using testing::LowMemory;

constexpr uint64_t kBiosAreaEnd = 0x100000;

// The scan Linux's ACPICA does (acpi_tb_scan_memory_for_rsdp): 16-byte steps through
// 0xe0000-0xfffff, "RSD PTR " with a valid checksum over the first 20 bytes and, for
// revision 2+, a valid extended checksum over the whole structure.
std::optional<uint64_t> scan_for_rsdp(const LowMemory& low) {
  for (uint64_t addr = kBiosAreaStart; addr + 36 <= kBiosAreaEnd; addr += 16) {
    if (low.text(addr, 8) != "RSD PTR ") continue;
    if (low.sum(addr, 20) != 0) continue;
    if (low.u8(addr + 15) >= 2 && low.sum(addr, low.u32(addr + 20)) != 0) continue;
    return addr;
  }
  return std::nullopt;
}

// Checks the header of the table at `addr` and returns its signature.
std::string expect_valid_table(const LowMemory& low, uint64_t addr) {
  const std::string signature = low.text(addr, 4);
  const uint32_t length = low.u32(addr + 4);
  EXPECT_GE(length, kAcpiTableHeaderSize) << signature;
  EXPECT_LE(addr + length, kAcpiTablesAddr + kAcpiTablesMaxSize) << signature;
  EXPECT_EQ(low.sum(addr, length), 0) << signature << " checksum";
  EXPECT_EQ(low.text(addr + 10, 6), "SKIFF ") << signature;
  return signature;
}

struct Tables {
  uint64_t rsdp = 0;
  std::map<std::string, uint64_t> by_signature;  // XSDT entries plus DSDT and FACS
  std::vector<uint64_t> xsdt_entries;
};

Tables collect(const LowMemory& low) {
  Tables tables;
  auto rsdp = scan_for_rsdp(low);
  EXPECT_TRUE(rsdp.has_value());
  if (!rsdp) return tables;
  tables.rsdp = *rsdp;
  const uint64_t xsdt = low.u64(*rsdp + 24);
  EXPECT_EQ(expect_valid_table(low, xsdt), "XSDT");
  const uint32_t xsdt_length = low.u32(xsdt + 4);
  EXPECT_EQ((xsdt_length - kAcpiTableHeaderSize) % 8, 0u);
  for (uint64_t at = xsdt + kAcpiTableHeaderSize; at < xsdt + xsdt_length; at += 8) {
    const uint64_t entry = low.u64(at);
    tables.xsdt_entries.push_back(entry);
    tables.by_signature[expect_valid_table(low, entry)] = entry;
  }
  if (tables.by_signature.contains("FACP")) {
    const uint64_t fadt = tables.by_signature["FACP"];
    tables.by_signature["DSDT"] = low.u64(fadt + 140);
    tables.by_signature["FACS"] = low.u32(fadt + 36);
  }
  return tables;
}

// Decodes a PkgLength at `at`; returns {value, bytes used}.
std::pair<size_t, size_t> read_pkg_length(std::span<const uint8_t> aml, size_t at) {
  const uint8_t lead = aml[at];
  const size_t extra = lead >> 6;
  if (extra == 0) return {lead & 0x3f, 1};
  size_t value = lead & 0x0f;
  for (size_t i = 0; i < extra; ++i) value |= static_cast<size_t>(aml[at + 1 + i]) << (4 + 8 * i);
  return {value, 1 + extra};
}

bool contains(std::span<const uint8_t> haystack, std::span<const uint8_t> needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) !=
         haystack.end();
}

TEST(AcpiTables, RsdpFoundByScanningBiosArea) {
  LowMemory low;
  auto rsdp = write_acpi_tables(low.memory(), AcpiPlatform{.vcpus = 2});
  ASSERT_TRUE(rsdp.has_value()) << rsdp.error().message();
  EXPECT_EQ(*rsdp, kAcpiTablesAddr);
  EXPECT_EQ(*rsdp % 16, 0u);
  EXPECT_EQ(scan_for_rsdp(low), *rsdp);
  EXPECT_EQ(low.u8(*rsdp + 15), 2);        // revision
  EXPECT_EQ(low.u32(*rsdp + 16), 0u);      // no RSDT
  EXPECT_EQ(low.u32(*rsdp + 20), 36u);     // length
  EXPECT_EQ(low.text(*rsdp + 9, 6), "SKIFF ");
}

TEST(AcpiTables, XsdtListsEveryTableWithValidPointers) {
  LowMemory low;
  const auto mcfg = make_acpi_table("MCFG", 1, std::vector<uint8_t>(8 + 16, 0));
  const auto ssdt = make_acpi_table("SSDT", 2, aml::name("TEST", aml::integer(7)));
  ASSERT_TRUE(write_acpi_tables(low.memory(), {.vcpus = 1, .extra_tables = {mcfg, ssdt}}));
  Tables tables = collect(low);
  ASSERT_EQ(tables.xsdt_entries.size(), 4u);
  EXPECT_EQ(low.text(tables.xsdt_entries[0], 4), "FACP");
  EXPECT_EQ(low.text(tables.xsdt_entries[1], 4), "APIC");
  EXPECT_EQ(low.text(tables.xsdt_entries[2], 4), "MCFG");
  EXPECT_EQ(low.text(tables.xsdt_entries[3], 4), "SSDT");
  for (uint64_t entry : tables.xsdt_entries) EXPECT_EQ(entry % 16, 0u);
  const auto written = low.bytes(tables.xsdt_entries[2], mcfg.size());
  EXPECT_TRUE(std::equal(mcfg.begin(), mcfg.end(), written.begin()));
  EXPECT_EQ(expect_valid_table(low, tables.by_signature["DSDT"]), "DSDT");
}

TEST(AcpiTables, FadtDescribesPmRegistersAndReset) {
  LowMemory low;
  ASSERT_TRUE(write_acpi_tables(low.memory(), {.vcpus = 1}));
  Tables tables = collect(low);
  const uint64_t fadt = tables.by_signature.at("FACP");
  EXPECT_EQ(low.u32(fadt + 4), 276u);  // ACPI 6.x FADT length
  EXPECT_EQ(low.u8(fadt + 8), 6);      // major revision
  EXPECT_EQ(low.u8(fadt + 131), 4);    // minor revision
  EXPECT_EQ(low.u16(fadt + 46), kAcpiSciIrq);
  EXPECT_EQ(low.u32(fadt + 48), 0u);  // no SMI_CMD: always in ACPI mode
  EXPECT_EQ(low.u32(fadt + 56), kAcpiPm1EventPort);
  EXPECT_EQ(low.u32(fadt + 64), kAcpiPm1ControlPort);
  EXPECT_EQ(low.u8(fadt + 88), 4);  // PM1_EVT_LEN
  EXPECT_EQ(low.u8(fadt + 89), 2);  // PM1_CNT_LEN
  // X_PM1a_EVT_BLK / X_PM1a_CNT_BLK: system I/O, widths matching the legacy lengths.
  EXPECT_EQ(low.u8(fadt + 148), 1);
  EXPECT_EQ(low.u8(fadt + 149), 32);
  EXPECT_EQ(low.u64(fadt + 152), kAcpiPm1EventPort);
  EXPECT_EQ(low.u8(fadt + 172), 1);
  EXPECT_EQ(low.u8(fadt + 173), 16);
  EXPECT_EQ(low.u64(fadt + 176), kAcpiPm1ControlPort);
  const uint16_t boot_arch = low.u16(fadt + 109);
  EXPECT_TRUE(boot_arch & (1 << 1)) << "8042 present";
  EXPECT_TRUE(boot_arch & (1 << 2)) << "VGA not present";
  EXPECT_FALSE(boot_arch & (1 << 5)) << "CMOS RTC present";
  const uint32_t flags = low.u32(fadt + 112);
  EXPECT_TRUE(flags & (1 << 0)) << "WBINVD";
  EXPECT_TRUE(flags & (1 << 4)) << "PWR_BUTTON: no fixed power button";
  EXPECT_TRUE(flags & (1 << 10)) << "RESET_REG_SUP";
  EXPECT_FALSE(flags & (1 << 20)) << "not hardware-reduced";
  // RESET_REG: system I/O, 8 bits at offset 0, kAcpiResetPort; RESET_VALUE.
  EXPECT_EQ(low.u8(fadt + 116), 1);
  EXPECT_EQ(low.u8(fadt + 117), 8);
  EXPECT_EQ(low.u8(fadt + 118), 0);
  EXPECT_EQ(low.u64(fadt + 120), kAcpiResetPort);
  EXPECT_EQ(low.u8(fadt + 128), kAcpiResetValue);
  // DSDT and X_DSDT agree; FACS through FIRMWARE_CTRL only.
  EXPECT_EQ(low.u32(fadt + 40), low.u64(fadt + 140));
  EXPECT_EQ(low.u64(fadt + 132), 0u);
}

TEST(AcpiTables, FacsIsPresentAndAligned) {
  LowMemory low;
  ASSERT_TRUE(write_acpi_tables(low.memory(), {.vcpus = 1}));
  Tables tables = collect(low);
  const uint64_t facs = tables.by_signature.at("FACS");
  EXPECT_EQ(facs % 64, 0u);
  EXPECT_EQ(low.text(facs, 4), "FACS");
  EXPECT_EQ(low.u32(facs + 4), 64u);
  EXPECT_EQ(low.u8(facs + 32), 2);  // version
}

class AcpiMadtTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(AcpiMadtTest, OneLocalApicPerVcpuAndTheIoApic) {
  const uint32_t vcpus = GetParam();
  LowMemory low;
  ASSERT_TRUE(write_acpi_tables(low.memory(), {.vcpus = vcpus}));
  Tables tables = collect(low);
  const uint64_t madt = tables.by_signature.at("APIC");
  EXPECT_EQ(low.u32(madt + 36), kLapicAddr);
  EXPECT_EQ(low.u32(madt + 40), 1u);  // PCAT_COMPAT
  uint32_t lapics = 0;
  uint32_t ioapics = 0;
  uint32_t overrides = 0;
  uint32_t nmis = 0;
  const uint64_t end = madt + low.u32(madt + 4);
  for (uint64_t at = madt + 44; at < end;) {
    const uint8_t type = low.u8(at);
    const uint8_t length = low.u8(at + 1);
    ASSERT_GE(length, 2);
    ASSERT_LE(at + length, end);
    switch (type) {
      case 0:
        EXPECT_EQ(length, 8);
        EXPECT_EQ(low.u8(at + 2), lapics);  // processor UID
        EXPECT_EQ(low.u8(at + 3), lapics);  // APIC id
        EXPECT_EQ(low.u32(at + 4) & 1, 1u);  // enabled
        ++lapics;
        break;
      case 1:
        EXPECT_EQ(length, 12);
        EXPECT_EQ(low.u8(at + 2), vcpus);  // IOAPIC id after the vCPUs
        EXPECT_EQ(low.u32(at + 4), kIoapicAddr);
        EXPECT_EQ(low.u32(at + 8), 0u);
        ++ioapics;
        break;
      case 2:
        EXPECT_EQ(length, 10);
        if (low.u8(at + 3) == 0) {
          EXPECT_EQ(low.u32(at + 4), 2u);
          EXPECT_EQ(low.u16(at + 8), 0x0005);  // edge, active high
        } else {
          EXPECT_EQ(low.u8(at + 3), kAcpiSciIrq);
          EXPECT_EQ(low.u32(at + 4), kAcpiSciIrq);
          EXPECT_EQ(low.u16(at + 8), 0x000d);  // level, active high
        }
        ++overrides;
        break;
      case 4:
        EXPECT_EQ(length, 6);
        EXPECT_EQ(low.u8(at + 2), 0xff);  // all processors
        EXPECT_EQ(low.u8(at + 5), 1);     // LINT1
        ++nmis;
        break;
      default:
        ADD_FAILURE() << "unexpected MADT entry type " << int{type};
    }
    at += length;
  }
  EXPECT_EQ(lapics, vcpus);
  EXPECT_EQ(ioapics, 1u);
  EXPECT_EQ(overrides, 2u);
  EXPECT_EQ(nmis, 1u);
}

INSTANTIATE_TEST_SUITE_P(AcpiMadt, AcpiMadtTest, ::testing::Values(1u, 4u, 254u));

TEST(AcpiTables, VcpuCountOutOfRangeIsRejected) {
  LowMemory low;
  EXPECT_FALSE(write_acpi_tables(low.memory(), {.vcpus = 0}).has_value());
  auto too_many = write_acpi_tables(low.memory(), {.vcpus = kAcpiMaxVcpus + 1});
  ASSERT_FALSE(too_many.has_value());
  EXPECT_EQ(too_many.error().kind(), ErrorKind::kConfig);
  EXPECT_NE(too_many.error().message().find("255 vCPUs"), std::string::npos);
}

TEST(AcpiTables, DsdtParsesAndHoldsS5AndAppendedDevices) {
  LowMemory low;
  AcpiDevice virtio{.name = "VR00",
                    .hid = "LNRO0005",
                    .uid = 0,
                    .resources = {aml::memory32_fixed(true, 0xd0000000, 0x200), aml::interrupt(5)}};
  auto virtio_aml = virtio.to_aml();
  ASSERT_TRUE(virtio_aml.has_value()) << virtio_aml.error().message();
  ASSERT_TRUE(write_acpi_tables(low.memory(), {.vcpus = 1, .dsdt_devices = {*virtio_aml}}));
  Tables tables = collect(low);
  const uint64_t dsdt = tables.by_signature.at("DSDT");
  ASSERT_EQ(expect_valid_table(low, dsdt), "DSDT");
  EXPECT_EQ(low.u8(dsdt + 8), 2);  // revision 2: 64-bit integers
  const uint32_t length = low.u32(dsdt + 4);
  std::span<const uint8_t> aml =
      low.bytes(dsdt + kAcpiTableHeaderSize, length - kAcpiTableHeaderSize);

  // Walk the top-level terms: Scope(\_SB_) {...} then Name(\_S5_, Package...). Every
  // PkgLength must end exactly where the next term starts.
  size_t at = 0;
  ASSERT_EQ(aml[at], 0x10);  // ScopeOp
  auto [scope_length, scope_length_bytes] = read_pkg_length(aml, at + 1);
  const size_t scope_end = at + 1 + scope_length;
  ASSERT_LE(scope_end, aml.size());
  size_t inner = at + 1 + scope_length_bytes;
  EXPECT_EQ(std::string(aml.begin() + inner, aml.begin() + inner + 5), "\\_SB_");
  inner += 5;
  std::vector<std::string> devices;
  while (inner < scope_end) {
    ASSERT_EQ(aml[inner], 0x5b);
    ASSERT_EQ(aml[inner + 1], 0x82);  // DeviceOp
    auto [device_length, device_length_bytes] = read_pkg_length(aml, inner + 2);
    const size_t name_at = inner + 2 + device_length_bytes;
    devices.emplace_back(aml.begin() + name_at, aml.begin() + name_at + 4);
    inner += 2 + device_length;
  }
  EXPECT_EQ(inner, scope_end);
  EXPECT_EQ(devices, (std::vector<std::string>{"COM1", "PS2K", "RTC_", "VR00"}));
  EXPECT_TRUE(contains(aml, *virtio_aml));

  at = scope_end;
  const aml::Bytes s5 = {0x08, '\\', '_', 'S', '5', '_', 0x12, 0x06, 0x02,
                         0x0a, kAcpiS5SleepType, 0x0a, kAcpiS5SleepType};
  ASSERT_LE(at + s5.size(), aml.size());
  EXPECT_TRUE(std::equal(s5.begin(), s5.end(), aml.begin() + at));
  EXPECT_EQ(at + s5.size(), aml.size());
}

TEST(AcpiTables, DsdtDescribesLegacyDevices) {
  aml::Bytes dsdt = build_dsdt_aml({.vcpus = 1});
  // COM1: IO(0x3f8, 0x3f8, 1, 8) + IRQNoFlags {4}
  EXPECT_TRUE(contains(dsdt, aml::io(kSerialCom1Port, kSerialCom1Port, 1, 8)));
  EXPECT_TRUE(contains(dsdt, aml::Bytes{0x22, 0x10, 0x00}));
  // i8042: 0x60 and 0x64, IRQ 1
  EXPECT_TRUE(contains(dsdt, aml::io(0x60, 0x60, 1, 1)));
  EXPECT_TRUE(contains(dsdt, aml::io(0x64, 0x64, 1, 1)));
  EXPECT_TRUE(contains(dsdt, aml::Bytes{0x22, 0x02, 0x00}));
  // RTC: 0x70 length 2, IRQ 8
  EXPECT_TRUE(contains(dsdt, aml::io(0x70, 0x70, 1, 2)));
  EXPECT_TRUE(contains(dsdt, aml::Bytes{0x22, 0x00, 0x01}));
  // PNP ids
  EXPECT_TRUE(contains(dsdt, aml::eisa_id(*aml::encode_eisa_id("PNP0501"))));
  EXPECT_TRUE(contains(dsdt, aml::eisa_id(*aml::encode_eisa_id("PNP0303"))));
  EXPECT_TRUE(contains(dsdt, aml::eisa_id(*aml::encode_eisa_id("PNP0B00"))));
}

TEST(AcpiTables, AcpiDeviceValidatesNameAndHid) {
  AcpiDevice eisa{.name = "PCI0", .hid = "PNP0A08"};
  auto encoded = eisa.to_aml();
  ASSERT_TRUE(encoded.has_value());
  EXPECT_TRUE(contains(*encoded, aml::eisa_id(*aml::encode_eisa_id("PNP0A08"))));

  AcpiDevice string_id{.name = "VR01", .hid = "LNRO0005", .extra = {aml::name("_CCA", aml::one())}};
  encoded = string_id.to_aml();
  ASSERT_TRUE(encoded.has_value());
  EXPECT_TRUE(contains(*encoded, aml::string("LNRO0005")));
  EXPECT_TRUE(contains(*encoded, aml::name("_CCA", aml::one())));
  EXPECT_FALSE(contains(*encoded, aml::Bytes{'_', 'C', 'R', 'S'}));

  EXPECT_FALSE((AcpiDevice{.name = "TOOLONG", .hid = "PNP0501"}.to_aml().has_value()));
  EXPECT_FALSE((AcpiDevice{.name = "\\_SB_.X", .hid = "PNP0501"}.to_aml().has_value()));
  auto bad_hid = AcpiDevice{.name = "X", .hid = "virtio"}.to_aml();
  ASSERT_FALSE(bad_hid.has_value());
  EXPECT_NE(bad_hid.error().message().find("\"virtio\""), std::string::npos);
}

TEST(AcpiTables, TablesThatDoNotFitAreRejected) {
  LowMemory low;
  AcpiPlatform platform{.vcpus = 1};
  platform.dsdt_devices.push_back(std::vector<uint8_t>(kAcpiTablesMaxSize - 0x100, 0));
  auto result = write_acpi_tables(low.memory(), platform);
  ASSERT_FALSE(result.has_value());
  EXPECT_NE(result.error().message().find("do not fit"), std::string::npos)
      << result.error().message();

  platform.dsdt_devices.assign(1, std::vector<uint8_t>(kAcpiTablesMaxSize + 1, 0));
  EXPECT_FALSE(write_acpi_tables(low.memory(), platform).has_value());
}

TEST(AcpiTables, MalformedExtraTablesAreRejected) {
  LowMemory low;
  auto table = make_acpi_table("MCFG", 1, std::vector<uint8_t>(8, 0));
  auto bad_checksum = table;
  bad_checksum[9] ^= 1;
  EXPECT_FALSE(write_acpi_tables(low.memory(), {.vcpus = 1, .extra_tables = {bad_checksum}}));
  auto bad_length = table;
  bad_length.push_back(0);
  EXPECT_FALSE(write_acpi_tables(low.memory(), {.vcpus = 1, .extra_tables = {bad_length}}));
  EXPECT_FALSE(write_acpi_tables(low.memory(), {.vcpus = 1, .extra_tables = {{1, 2, 3}}}));
  auto duplicate = make_acpi_table("APIC", 1, {});
  EXPECT_FALSE(write_acpi_tables(low.memory(), {.vcpus = 1, .extra_tables = {duplicate}}));
  EXPECT_TRUE(write_acpi_tables(low.memory(), {.vcpus = 1, .extra_tables = {table}}));
}

TEST(AcpiTables, MemoryNotCoveringTheAreaIsAnError) {
  LowMemory low(kAcpiTablesAddr + 0x100);
  auto result = write_acpi_tables(low.memory(), {.vcpus = 1});
  ASSERT_FALSE(result.has_value());
  EXPECT_NE(result.error().message().find("ACPI tables"), std::string::npos);
}

TEST(AcpiTables, ChecksumMakesBytesSumToZero) {
  std::vector<uint8_t> bytes = {1, 2, 3, 250};
  bytes.push_back(acpi_checksum(bytes));
  uint8_t sum = 0;
  for (uint8_t b : bytes) sum = static_cast<uint8_t>(sum + b);
  EXPECT_EQ(sum, 0);
}

}  // namespace
}  // namespace skiff::x86
