// SPDX-License-Identifier: Apache-2.0
// The MP tables as a kernel reads them (MultiProcessor Specification 1.4, chapter 4).
#include "arch/x86_64/mptable.h"

#include <optional>

#include <gtest/gtest.h>

#include "unit/acpi/acpi_test_util.h"
#include "arch/x86_64/layout.h"

namespace skiff::x86 {
namespace {

using testing::LowMemory;

// Linux's smp_scan_config(): "_MP_" on a 16-byte boundary, length 1, checksum over 16 bytes.
std::optional<uint64_t> scan_for_floating_pointer(const LowMemory& low, uint64_t start,
                                                  uint64_t length) {
  for (uint64_t addr = start; addr + 16 <= start + length; addr += 16) {
    if (low.text(addr, 4) == "_MP_" && low.u8(addr + 8) == 1 && low.sum(addr, 16) == 0) {
      return addr;
    }
  }
  return std::nullopt;
}

struct Entries {
  uint32_t processors = 0;
  uint32_t bootstrap = 0;
  uint32_t buses = 0;
  uint32_t ioapics = 0;
  uint32_t io_interrupts = 0;
  uint32_t local_interrupts = 0;
  std::vector<std::string> bus_types;
};

Entries parse(const LowMemory& low, uint32_t vcpus) {
  Entries entries;
  auto pointer = scan_for_floating_pointer(low, 639 * 1024, 1024);
  EXPECT_TRUE(pointer.has_value());
  if (!pointer) return entries;
  EXPECT_EQ(*pointer, kMpTableAddr);
  EXPECT_EQ(low.u8(*pointer + 9), 4);  // spec revision 1.4
  const uint64_t config = low.u32(*pointer + 4);
  EXPECT_EQ(low.text(config, 4), "PCMP");
  const uint16_t length = low.u16(config + 4);
  EXPECT_EQ(low.sum(config, length), 0) << "configuration table checksum";
  EXPECT_LE(config + length, kMpTableAddr + kMpTableMaxSize);
  EXPECT_EQ(low.u32(config + 36), kLapicAddr);
  const uint16_t count = low.u16(config + 34);
  uint64_t at = config + 44;
  for (uint16_t i = 0; i < count; ++i) {
    switch (low.u8(at)) {
      case 0:
        EXPECT_EQ(low.u8(at + 1), entries.processors);  // APIC id
        EXPECT_TRUE(low.u8(at + 3) & 1) << "enabled";
        if (low.u8(at + 3) & 2) {
          ++entries.bootstrap;
          EXPECT_EQ(low.u8(at + 1), 0) << "BSP is vCPU 0";
        }
        ++entries.processors;
        at += 20;
        break;
      case 1:
        entries.bus_types.push_back(low.text(at + 2, 6));
        ++entries.buses;
        at += 8;
        break;
      case 2:
        EXPECT_EQ(low.u8(at + 1), vcpus);  // IOAPIC id
        EXPECT_EQ(low.u32(at + 4), kIoapicAddr);
        ++entries.ioapics;
        at += 8;
        break;
      case 3:
        EXPECT_EQ(low.u8(at + 6), vcpus);  // destination IOAPIC
        if (low.u8(at + 5) == 0) {
          EXPECT_EQ(low.u8(at + 7), 2) << "IRQ0 -> INTIN2";
        }
        ++entries.io_interrupts;
        at += 8;
        break;
      case 4:
        if (entries.local_interrupts == 0) {
          EXPECT_EQ(low.u8(at + 1), 3);  // ExtINT
          EXPECT_EQ(low.u8(at + 7), 0);  // LINT0
        } else {
          EXPECT_EQ(low.u8(at + 1), 1);  // NMI
          EXPECT_EQ(low.u8(at + 7), 1);  // LINT1
        }
        ++entries.local_interrupts;
        at += 8;
        break;
      default:
        ADD_FAILURE() << "unknown MP entry type " << int{low.u8(at)};
        return entries;
    }
  }
  EXPECT_EQ(at, config + length);
  return entries;
}

class MpTableTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(MpTableTest, ChecksumsAndProcessorCount) {
  const uint32_t vcpus = GetParam();
  LowMemory low;
  auto result = write_mp_table(low.memory(), vcpus);
  ASSERT_TRUE(result.has_value()) << result.error().message();
  Entries entries = parse(low, vcpus);
  EXPECT_EQ(entries.processors, vcpus);
  EXPECT_EQ(entries.bootstrap, 1u);
  EXPECT_EQ(entries.bus_types, (std::vector<std::string>{"PCI   ", "ISA   "}));
  EXPECT_EQ(entries.ioapics, 1u);
  EXPECT_EQ(entries.io_interrupts, 15u);  // ISA IRQs 0-15 without the cascade (IRQ 2)
  EXPECT_EQ(entries.local_interrupts, 2u);
}

INSTANTIATE_TEST_SUITE_P(MpTable, MpTableTest, ::testing::Values(1u, 4u, 40u));

TEST(MpTable, TooManyVcpusIsAnError) {
  LowMemory low;
  EXPECT_EQ(mp_table_max_vcpus(), 40u);
  EXPECT_LE(mp_table_size(mp_table_max_vcpus()), kMpTableMaxSize);
  EXPECT_GT(mp_table_size(mp_table_max_vcpus() + 1), kMpTableMaxSize);
  auto result = write_mp_table(low.memory(), mp_table_max_vcpus() + 1);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().kind(), ErrorKind::kConfig);
  EXPECT_NE(result.error().message().find("41 vCPUs"), std::string::npos);
  EXPECT_FALSE(write_mp_table(low.memory(), 0).has_value());
  // Nothing was written.
  EXPECT_EQ(low.text(kMpTableAddr, 4), std::string(4, '\0'));
}

TEST(MpTable, SciIsLevelTriggered) {
  LowMemory low;
  ASSERT_TRUE(write_mp_table(low.memory(), 1).has_value());
  const uint64_t config = low.u32(kMpTableAddr + 4);
  bool found = false;
  for (uint64_t at = config + 44 + 20; at < config + low.u16(config + 4); at += 8) {
    if (low.u8(at) == 3 && low.u8(at + 5) == kAcpiSciIrq) {
      EXPECT_EQ(low.u16(at + 2), 0x000d);
      found = true;
    }
  }
  EXPECT_TRUE(found);
}

TEST(MpTable, MemoryNotCoveringTheAreaIsAnError) {
  LowMemory low(kMpTableAddr + 0x10);
  auto result = write_mp_table(low.memory(), 1);
  ASSERT_FALSE(result.has_value());
  EXPECT_NE(result.error().message().find("MP table"), std::string::npos);
}

}  // namespace
}  // namespace skiff::x86
