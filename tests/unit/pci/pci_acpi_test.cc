// SPDX-License-Identifier: Apache-2.0
#include "pci/pci_acpi.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "arch/x86_64/acpi/acpi_tables.h"
#include "arch/x86_64/layout.h"

namespace skiff::pci {
namespace {

namespace aml = x86::aml;

bool contains(const std::vector<uint8_t>& haystack, const std::vector<uint8_t>& needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) !=
         haystack.end();
}

std::vector<uint8_t> text(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

uint64_t le(const std::vector<uint8_t>& bytes, size_t offset, size_t size) {
  uint64_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= uint64_t{bytes.at(offset + i)} << (8 * i);
  return value;
}

TEST(PciAcpi, McfgTableDescribesBusZeroOfTheEcamWindow) {
  const auto table = build_mcfg_table(x86::kPciEcamAddr);
  ASSERT_EQ(table.size(), x86::kAcpiTableHeaderSize + 8 + 16);
  EXPECT_EQ(std::string(table.begin(), table.begin() + 4), "MCFG");
  EXPECT_EQ(le(table, 4, 4), table.size());
  EXPECT_EQ(table[8], 1);  // revision
  uint8_t sum = 0;
  for (uint8_t b : table) sum = static_cast<uint8_t>(sum + b);
  EXPECT_EQ(sum, 0);
  EXPECT_EQ(le(table, 36, 8), 0u);                 // reserved
  EXPECT_EQ(le(table, 44, 8), x86::kPciEcamAddr);  // base address
  EXPECT_EQ(le(table, 52, 2), 0u);                 // segment group
  EXPECT_EQ(table[54], 0);                         // start bus
  EXPECT_EQ(table[55], 0);                         // end bus
  EXPECT_EQ(le(table, 56, 4), 0u);

  const auto body = mcfg_body(0xb000'0000, 1, 2, 0x1f);
  ASSERT_EQ(body.size(), 24u);
  EXPECT_EQ(le(body, 8, 8), 0xb000'0000u);
  EXPECT_EQ(le(body, 16, 2), 1u);
  EXPECT_EQ(body[18], 2);
  EXPECT_EQ(body[19], 0x1f);
}

TEST(PciAcpi, Pci0DescribesTheHostBridgeWindows) {
  const PciWindows windows = default_pci_windows(uint64_t{6} << 30);
  auto resources = host_bridge_resources(windows);
  auto device = pci0_aml(resources);
  ASSERT_TRUE(device) << device.error().message();
  const auto& bytes = *device;
  EXPECT_EQ(bytes[0], 0x5b);  // ExtOpPrefix
  EXPECT_EQ(bytes[1], 0x82);  // DeviceOp
  EXPECT_TRUE(contains(bytes, text("PCI0")));
  EXPECT_TRUE(contains(bytes, aml::name("_HID", aml::eisa_id(*aml::encode_eisa_id("PNP0A08")))));
  EXPECT_TRUE(contains(bytes, aml::name("_CID", aml::eisa_id(*aml::encode_eisa_id("PNP0A03")))));
  EXPECT_TRUE(contains(bytes, aml::name("_SEG", aml::zero())));
  EXPECT_TRUE(contains(bytes, aml::name("_BBN", aml::zero())));
  EXPECT_TRUE(contains(bytes, {0x41, 0xd0, 0x0a, 0x08}));  // EISA "PNP0A08"
  EXPECT_TRUE(contains(bytes, text("_CRS")));
  EXPECT_FALSE(contains(bytes, text("_PRT")));
  // Each window as a descriptor: bus 0-0, the config ports, I/O, 32-bit and 64-bit MMIO.
  EXPECT_TRUE(contains(bytes, aml::word_bus_number(0, 0)));
  EXPECT_TRUE(contains(bytes, aml::io(0xcf8, 0xcf8, 1, 8)));
  EXPECT_TRUE(contains(bytes, aml::word_io(0xc000, 0xffff)));
  EXPECT_TRUE(contains(
      bytes, aml::dword_memory(aml::MemoryCaching::kNonCacheable, true, 0xc000'0000, 0xdfff'ffff)));
  EXPECT_TRUE(
      contains(bytes, aml::qword_memory(aml::MemoryCaching::kNonCacheable, true, uint64_t{6} << 30,
                                        (uint64_t{6} << 30) + kDefaultMmio64WindowSize - 1)));
  // The raw little-endian limits appear too (DWord descriptor: min then max).
  EXPECT_TRUE(contains(bytes, {0x00, 0x00, 0x00, 0xc0, 0xff, 0xff, 0xff, 0xdf}));

  // Without a 64-bit window there is no QWord descriptor (tag 0x8a).
  resources.mmio64 = {};
  auto small = pci0_aml(resources);
  ASSERT_TRUE(small);
  EXPECT_LT(small->size(), bytes.size());
  EXPECT_FALSE(contains(*small, {0x8a, 0x2b, 0x00}));
  EXPECT_TRUE(contains(bytes, {0x8a, 0x2b, 0x00}));
}

TEST(PciAcpi, Pci0RoutingTable) {
  auto resources = host_bridge_resources(default_pci_windows(0));
  resources.intx_routes = {{.slot = 1, .pin = 0, .gsi = 16}, {.slot = 2, .pin = 3, .gsi = 19}};
  auto device = pci0_aml(resources);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_TRUE(contains(*device, text("_PRT")));
  const auto entry = aml::package(
      {aml::dword_const(0x0002'ffff), aml::integer(3), aml::zero(), aml::dword_const(19)});
  EXPECT_TRUE(contains(*device, entry));

  resources.intx_routes = {{.slot = 32, .pin = 0, .gsi = 16}};
  EXPECT_FALSE(pci0_aml(resources));
  resources.intx_routes = {{.slot = 1, .pin = 4, .gsi = 16}};
  EXPECT_FALSE(pci0_aml(resources));
}

TEST(PciAcpi, Pci0RejectsWindowsItCannotDescribe) {
  const auto good = host_bridge_resources(default_pci_windows(0));
  auto r = good;
  r.io = {.start = 0xc000, .size = 0x8000};
  EXPECT_FALSE(pci0_aml(r));
  r = good;
  r.io = {};
  EXPECT_FALSE(pci0_aml(r));
  r = good;
  r.mmio32 = {.start = 0xf000'0000, .size = 0x2000'0000};
  EXPECT_FALSE(pci0_aml(r));
  r = good;
  r.mmio64 = {.start = 0xffff'ffff'ffff'0000, .size = 0x2'0000};
  EXPECT_FALSE(pci0_aml(r));
  r = good;
  r.bus_start = 1;
  EXPECT_FALSE(pci0_aml(r));
}

TEST(PciAcpi, EcamReservationIsAMotherboardResource) {
  auto device = ecam_reservation_aml(x86::kPciEcamAddr, x86::kPciEcamSize);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_TRUE(contains(*device, aml::name("_HID", aml::eisa_id(*aml::encode_eisa_id("PNP0C02")))));
  EXPECT_TRUE(contains(*device, aml::memory32_fixed(false, 0xe000'0000, 0x1000'0000)));
  EXPECT_FALSE(ecam_reservation_aml(0xf000'0000, 0x2000'0000));
  EXPECT_FALSE(ecam_reservation_aml(0xe000'0000, 0));
}

TEST(PciAcpi, TablesFitTheAcpiWriter) {
  // The pieces go into AcpiPlatform as the VMM will put them there.
  x86::AcpiPlatform platform;
  platform.extra_tables.push_back(build_mcfg_table(x86::kPciEcamAddr));
  auto pci0 = pci0_aml(host_bridge_resources(default_pci_windows(0)));
  auto ecam = ecam_reservation_aml(x86::kPciEcamAddr, x86::kPciEcamSize);
  ASSERT_TRUE(pci0 && ecam);
  platform.dsdt_devices.push_back(*pci0);
  platform.dsdt_devices.push_back(*ecam);
  const auto dsdt = x86::build_dsdt_aml(platform);
  EXPECT_TRUE(contains(dsdt, *pci0));
  EXPECT_TRUE(contains(dsdt, *ecam));
}

}  // namespace
}  // namespace skiff::pci
