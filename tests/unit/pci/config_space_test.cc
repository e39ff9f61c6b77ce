// SPDX-License-Identifier: Apache-2.0
#include "pci/config_space.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace skiff::pci {
namespace {

ConfigHeader header() {
  return ConfigHeader{.vendor_id = 0x1af4,
                      .device_id = 0x1041,
                      .subsystem_vendor_id = 0x1af4,
                      .subsystem_id = 0x0001,
                      .revision = 0x01,
                      .class_code = 0x020000,
                      .interrupt_pin = 1};
}

TEST(PciConfigSpace, IdentificationFieldsAreReadOnly) {
  ConfigSpace cs(header());
  for (uint16_t offset : {kRegVendorId, kRegRevisionId, kRegCacheLineSize, kRegSubsystemVendorId,
                          kRegExpansionRom, kRegInterruptLine}) {
    cs.write(offset, 4, 0xffffffff);
  }
  EXPECT_EQ(cs.read(kRegVendorId, 4), 0x1041'1af4u);
  EXPECT_EQ(cs.read(kRegRevisionId, 4), 0x0200'0001u);  // class 02/00/00, revision 1
  EXPECT_EQ(cs.read(kRegSubsystemVendorId, 4), 0x0001'1af4u);
  // Cache Line Size is writable; Latency Timer, Header Type and BIST are not.
  EXPECT_EQ(cs.read(kRegCacheLineSize, 4), 0x0000'00ffu);
  // No expansion ROM: the register reads 0 even after writing all ones (sizing finds none).
  EXPECT_EQ(cs.read(kRegExpansionRom, 4), 0u);
  // Interrupt Line is writable, Interrupt Pin, Min_Gnt and Max_Lat are not.
  EXPECT_EQ(cs.read(kRegInterruptLine, 4), 0x0000'01ffu);
  cs.write(kRegInterruptLine, 1, 0x0b);
  EXPECT_EQ(cs.read(kRegInterruptLine, 1), 0x0bu);
  EXPECT_EQ(cs.read(kRegInterruptPin, 1), 1u);
  // The header type says: type 0, single function.
  EXPECT_EQ(cs.read(kRegHeaderType, 1), 0u);
}

TEST(PciConfigSpace, CommandRegisterWritableBitsDependOnBars) {
  ConfigSpace none(header());
  none.write(kRegCommand, 2, 0xffff);
  EXPECT_EQ(none.read(kRegCommand, 2), 0x0544u);  // bus master, PERR, SERR, INTx disable

  ConfigSpace memory(header());
  ASSERT_TRUE(memory.add_bar({.index = 0, .size = 0x1000, .kind = BarKind::kMemory32}));
  memory.write(kRegCommand, 2, 0xffff);
  EXPECT_EQ(memory.read(kRegCommand, 2), 0x0546u);

  ConfigSpace both(header());
  ASSERT_TRUE(both.add_bar({.index = 0, .size = 0x1000, .kind = BarKind::kMemory32}));
  ASSERT_TRUE(both.add_bar({.index = 1, .size = 0x20, .kind = BarKind::kIo}));
  both.write(kRegCommand, 1, 0xff);
  EXPECT_EQ(both.read(kRegCommand, 2), 0x0047u);
  EXPECT_TRUE(both.bus_master_enabled());
}

TEST(PciConfigSpace, StatusErrorBitsAreWriteOneToClear) {
  ConfigSpace cs(header());
  const std::array<uint8_t, 2> errors = {0x00, 0xf9};
  cs.write_raw(kRegStatus, errors);
  cs.set_interrupt_status(true);
  EXPECT_EQ(cs.read(kRegStatus, 2), 0xf908u);
  cs.write(kRegStatus, 2, 0);  // writing 0 changes nothing
  EXPECT_EQ(cs.read(kRegStatus, 2), 0xf908u);
  cs.write(kRegStatus, 2, 0x0800 | 0x0008);  // clears Signaled Target Abort only
  EXPECT_EQ(cs.read(kRegStatus, 2), 0xf108u);
  cs.write(kRegCommand, 4, 0xffff'0000);  // a dword write to command+status
  EXPECT_EQ(cs.read(kRegStatus, 2), 0x0008u);
  EXPECT_EQ(cs.read(kRegCommand, 2), 0u);
  cs.set_interrupt_status(false);
  EXPECT_EQ(cs.read(kRegStatus, 2), 0u);
}

TEST(PciConfigSpace, Memory32BarSizing) {
  ConfigSpace cs(header());
  ASSERT_TRUE(
      cs.add_bar({.index = 0, .size = 0x4000, .kind = BarKind::kMemory32, .prefetchable = true}));
  ASSERT_TRUE(cs.set_bar_address(0, 0xc000'4000));
  EXPECT_EQ(cs.read(kRegBar0, 4), 0xc000'4008u);
  cs.write(kRegBar0, 4, 0xffffffff);
  EXPECT_EQ(cs.read(kRegBar0, 4), 0xffff'c008u);  // size mask + prefetchable, 32-bit type
  cs.write(kRegBar0, 4, 0xc000'8000);
  EXPECT_EQ(cs.read(kRegBar0, 4), 0xc000'8008u);
  EXPECT_EQ(cs.bar_programmed_address(0), 0xc000'8000u);
  // Unaligned address bits are not writable.
  cs.write(kRegBar0, 4, 0xc000'8ff0);
  EXPECT_EQ(cs.bar_programmed_address(0), 0xc000'8000u);
  // Unimplemented BARs read 0 and sizing them finds nothing.
  cs.write(kRegBar0 + 4, 4, 0xffffffff);
  EXPECT_EQ(cs.read(kRegBar0 + 4, 4), 0u);
}

TEST(PciConfigSpace, Memory64BarSizingUsesTheRegisterPair) {
  ConfigSpace cs(header());
  ASSERT_TRUE(cs.add_bar({.index = 2, .size = 0x4000, .kind = BarKind::kMemory64}));
  ASSERT_TRUE(cs.add_bar(
      {.index = 4, .size = uint64_t{8} << 30, .kind = BarKind::kMemory64, .prefetchable = true}));
  const uint16_t bar2 = kRegBar0 + 8;
  const uint16_t bar4 = kRegBar0 + 16;
  cs.write(bar2, 4, 0xffffffff);
  cs.write(bar2 + 4, 4, 0xffffffff);
  EXPECT_EQ(cs.read(bar2, 4), 0xffff'c004u);  // type 10b: 64-bit
  EXPECT_EQ(cs.read(bar2 + 4, 4), 0xffff'ffffu);
  cs.write(bar4, 4, 0xffffffff);
  cs.write(bar4 + 4, 4, 0xffffffff);
  EXPECT_EQ(cs.read(bar4, 4), 0x0000'000cu);  // 8 GiB: no writable bits in the low half
  EXPECT_EQ(cs.read(bar4 + 4, 4), 0xffff'fffeu);
  cs.write(bar2, 4, 0x0000'8000);
  cs.write(bar2 + 4, 4, 0x0000'0012);
  EXPECT_EQ(cs.bar_programmed_address(2), 0x12'0000'8000u);
  ASSERT_TRUE(cs.set_bar_address(4, uint64_t{0x40} << 30));
  EXPECT_EQ(cs.read(bar4 + 4, 4), 0x10u);
  EXPECT_EQ(cs.bar_programmed_address(4), uint64_t{0x40} << 30);
}

TEST(PciConfigSpace, IoBarSizing) {
  ConfigSpace cs(header());
  ASSERT_TRUE(cs.add_bar({.index = 1, .size = 0x40, .kind = BarKind::kIo}));
  const uint16_t bar1 = kRegBar0 + 4;
  cs.write(bar1, 4, 0xffffffff);
  // Bit 0 says I/O; the upper 16 bits are hardwired to 0 (64 KiB port space).
  EXPECT_EQ(cs.read(bar1, 4), 0x0000'ffc1u);
  cs.write(bar1, 2, 0xc040);
  EXPECT_EQ(cs.read(bar1, 4), 0x0000'c041u);
  EXPECT_EQ(cs.bar_programmed_address(1), 0xc040u);
}

TEST(PciConfigSpace, AddBarRejectsInvalidDescriptions) {
  ConfigSpace cs(header());
  EXPECT_FALSE(cs.add_bar({.index = 6, .size = 0x1000, .kind = BarKind::kMemory32}));
  EXPECT_FALSE(cs.add_bar({.index = 5, .size = 0x1000, .kind = BarKind::kMemory64}));
  EXPECT_FALSE(cs.add_bar({.index = 0, .size = 0x3000, .kind = BarKind::kMemory32}));
  EXPECT_FALSE(cs.add_bar({.index = 0, .size = 0x800, .kind = BarKind::kMemory32}));
  EXPECT_FALSE(cs.add_bar({.index = 0, .size = uint64_t{4} << 30, .kind = BarKind::kMemory32}));
  EXPECT_FALSE(cs.add_bar({.index = 0, .size = 0x200, .kind = BarKind::kIo}));
  EXPECT_FALSE(cs.add_bar({.index = 0, .size = 2, .kind = BarKind::kIo}));
  EXPECT_FALSE(cs.add_bar({.index = 0, .size = 0x10, .kind = BarKind::kIo, .prefetchable = true}));
  ASSERT_TRUE(cs.add_bar({.index = 0, .size = 0x1000, .kind = BarKind::kMemory64}));
  auto taken = cs.add_bar({.index = 1, .size = 0x1000, .kind = BarKind::kMemory32});
  ASSERT_FALSE(taken);
  EXPECT_NE(taken.error().message().find("BAR 1"), std::string::npos);
  EXPECT_FALSE(cs.add_bar({.index = 0, .size = 0x1000, .kind = BarKind::kMemory32}));
}

TEST(PciConfigSpace, SetBarAddressChecksAlignmentAndRange) {
  ConfigSpace cs(header());
  ASSERT_TRUE(cs.add_bar({.index = 0, .size = 0x10000, .kind = BarKind::kMemory32}));
  ASSERT_TRUE(cs.add_bar({.index = 1, .size = 0x10, .kind = BarKind::kIo}));
  EXPECT_FALSE(cs.set_bar_address(0, 0xc000'1000));  // not aligned to 64 KiB
  EXPECT_FALSE(cs.set_bar_address(0, uint64_t{4} << 30));
  EXPECT_FALSE(cs.set_bar_address(1, 0x10000));
  EXPECT_FALSE(cs.set_bar_address(2, 0));  // no such BAR
  EXPECT_TRUE(cs.set_bar_address(1, 0xfff0));
  EXPECT_EQ(cs.read(kRegBar0 + 4, 4), 0xfff1u);
}

TEST(PciConfigSpace, BarDecodesOnlyWhenEnabledAssignedAndNotBeingSized) {
  ConfigSpace cs(header());
  ASSERT_TRUE(cs.add_bar({.index = 0, .size = 0x1000, .kind = BarKind::kMemory32}));
  ASSERT_TRUE(cs.add_bar({.index = 1, .size = 0x20, .kind = BarKind::kIo}));
  ASSERT_TRUE(cs.add_bar({.index = 2, .size = 0x1000, .kind = BarKind::kMemory64}));
  EXPECT_FALSE(cs.bar_address(0));  // unassigned
  ASSERT_TRUE(cs.set_bar_address(0, 0xc000'0000));
  ASSERT_TRUE(cs.set_bar_address(1, 0xc000));
  ASSERT_TRUE(cs.set_bar_address(2, 0x2'0000'0000));
  EXPECT_FALSE(cs.bar_address(0));  // decoding disabled
  cs.write(kRegCommand, 2, kCommandMemorySpace);
  EXPECT_EQ(cs.bar_address(0), 0xc000'0000u);
  EXPECT_EQ(cs.bar_address(2), 0x2'0000'0000u);
  EXPECT_FALSE(cs.bar_address(1));  // I/O decode still off
  cs.write(kRegCommand, 2, kCommandMemorySpace | kCommandIoSpace);
  EXPECT_EQ(cs.bar_address(1), 0xc000u);
  cs.write(kRegBar0, 4, 0xffffffff);
  EXPECT_FALSE(cs.bar_address(0));  // holds the sizing pattern
  cs.write(kRegBar0 + 12, 4, 0xffffffff);
  EXPECT_FALSE(cs.bar_address(2));
  EXPECT_FALSE(cs.bar_address(3));  // the upper half is not a BAR of its own
}

TEST(PciConfigSpace, CapabilityListIsWalkableFromTheStatusBit) {
  ConfigSpace cs(header());
  EXPECT_EQ(cs.read(kRegStatus, 2) & kStatusCapabilitiesList, 0u);
  const std::array<uint8_t, 6> body = {0x10, 0x01, 0xaa, 0xbb, 0xcc, 0xdd};
  const std::array<uint8_t, 6> writable = {0x00, 0x00, 0xff, 0x0f, 0x00, 0x00};
  auto first = cs.add_capability(kCapabilityIdVendorSpecific, body, writable);
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, kFirstCapabilityOffset);
  const std::array<uint8_t, 3> body2 = {1, 2, 3};
  auto second = cs.add_capability(kCapabilityIdVendorSpecific, body2);
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, 0x48);  // 0x40 + 8, DWORD aligned
  auto third = cs.add_capability(0x05, {});
  ASSERT_TRUE(third);
  EXPECT_EQ(*third, 0x50);  // 0x48 + 5 bytes, rounded up to a DWORD

  // Walk like a guest (PCI 3.0 section 6.7): status bit 4, pointer at 0x34 with bits 1:0
  // masked off, then each capability's Next Pointer until 0.
  ASSERT_NE(cs.read(kRegStatus, 2) & kStatusCapabilitiesList, 0u);
  std::vector<std::pair<uint8_t, uint8_t>> found;
  uint8_t at = static_cast<uint8_t>(cs.read(kRegCapabilitiesPointer, 1) & 0xfc);
  for (int guard = 0; at != 0 && guard < 48; ++guard) {
    found.emplace_back(at, static_cast<uint8_t>(cs.read(at, 1)));
    at = static_cast<uint8_t>(cs.read(at + 1, 1) & 0xfc);
  }
  const std::vector<std::pair<uint8_t, uint8_t>> expected = {
      {0x40, kCapabilityIdVendorSpecific}, {0x48, kCapabilityIdVendorSpecific}, {0x50, 0x05}};
  EXPECT_EQ(found, expected);

  // The capability's bytes follow its own writable mask; the header bytes are read-only.
  cs.write(0x40, 4, 0xffffffff);
  EXPECT_EQ(cs.read(0x40, 4), 0x0110'4809u);
  cs.write(0x44, 4, 0x12345678);
  EXPECT_EQ(cs.read(0x44, 4), 0xddcc'b678u);
}

TEST(PciConfigSpace, CapabilitiesThatDoNotFitAreRejected) {
  ConfigSpace cs(header());
  const std::vector<uint8_t> big(0xb0, 0);
  ASSERT_TRUE(cs.add_capability(kCapabilityIdVendorSpecific, big));  // 0x40-0xf1
  const std::vector<uint8_t> rest(0x0c, 0);
  auto overflow = cs.add_capability(kCapabilityIdVendorSpecific, rest);
  ASSERT_FALSE(overflow);
  EXPECT_NE(overflow.error().message().find("0x100"), std::string::npos);
  const std::array<uint8_t, 2> body = {0, 0};
  const std::array<uint8_t, 1> short_mask = {0};
  EXPECT_FALSE(cs.add_capability(kCapabilityIdVendorSpecific, body, short_mask));
}

TEST(PciConfigSpace, MalformedAccessesReadOnesAndAreDropped) {
  ConfigSpace cs(header());
  EXPECT_EQ(cs.read(0x03, 2), 0xffffffffu);  // crosses a dword
  EXPECT_EQ(cs.read(0x00, 3), 0xffffffffu);
  EXPECT_EQ(cs.read(0xfe, 4), 0xffffffffu);
  EXPECT_EQ(cs.read(0x100, 1), 0xffffffffu);   // beyond a 256-byte space
  cs.write(kRegInterruptLine - 1, 2, 0xffff);  // crosses into 0x3c: dropped
  EXPECT_EQ(cs.read(kRegInterruptLine, 1), 0u);

  ConfigSpace extended(header(), kExtendedConfigSpaceSize);
  EXPECT_EQ(extended.size(), kExtendedConfigSpaceSize);
  EXPECT_EQ(extended.read(0x100, 4), 0u);  // no extended capabilities
  EXPECT_EQ(extended.read(0xffc, 4), 0u);
  EXPECT_EQ(extended.read(0x1000, 1), 0xffffffffu);
}

MsixLayout msix_layout() {
  return MsixLayout{
      .vectors = 3, .table_bar = 0, .table_offset = 0x2000, .pba_bar = 0, .pba_offset = 0x3000};
}

TEST(PciConfigSpace, MsixCapabilityForwardsMessageControl) {
  ConfigSpace cs(header());
  ASSERT_TRUE(cs.add_bar({.index = 0, .size = 0x4000, .kind = BarKind::kMemory32}));
  auto table = MsixTable::create(msix_layout(), {});
  ASSERT_TRUE(table);
  auto offset = cs.add_msix_capability(*table);
  ASSERT_TRUE(offset) << offset.error().message();
  EXPECT_EQ(cs.msix_capability_offset(), *offset);
  EXPECT_EQ(cs.read(*offset, 1), kCapabilityIdMsix);
  EXPECT_EQ(cs.read(*offset + 2, 2), 2u);       // Table Size = N - 1
  EXPECT_EQ(cs.read(*offset + 4, 4), 0x2000u);  // offset | BIR 0
  EXPECT_EQ(cs.read(*offset + 8, 4), 0x3000u);
  EXPECT_TRUE(cs.intx_allowed());

  cs.write(*offset + 2, 2, 0xffff);  // only Enable and Function Mask are writable
  EXPECT_EQ(cs.read(*offset + 2, 2), 0xc002u);
  EXPECT_TRUE((*table)->enabled());
  EXPECT_TRUE((*table)->function_masked());
  EXPECT_FALSE(cs.intx_allowed());             // MSI-X enabled: no INTx
  cs.write(*offset, 4, 0x8000'0000 | 0xffff);  // dword write: clears Function Mask
  EXPECT_TRUE((*table)->enabled());
  EXPECT_FALSE((*table)->function_masked());
  cs.write(*offset + 3, 1, 0x00);
  EXPECT_FALSE((*table)->enabled());
  cs.write(*offset + 4, 4, 0xffffffff);  // Table Offset/BIR is read-only
  EXPECT_EQ(cs.read(*offset + 4, 4), 0x2000u);
  EXPECT_TRUE(cs.intx_allowed());
  cs.write(kRegCommand, 2, kCommandInterruptDisable);
  EXPECT_FALSE(cs.intx_allowed());
}

TEST(PciConfigSpace, MsixCapabilityNeedsItsBars) {
  auto table = MsixTable::create(msix_layout(), {});
  ASSERT_TRUE(table);
  ConfigSpace no_bar(header());
  EXPECT_FALSE(no_bar.add_msix_capability(*table));
  ConfigSpace io_bar(header());
  ASSERT_TRUE(io_bar.add_bar({.index = 0, .size = 0x100, .kind = BarKind::kIo}));
  EXPECT_FALSE(io_bar.add_msix_capability(*table));
  ConfigSpace small_bar(header());
  ASSERT_TRUE(small_bar.add_bar({.index = 0, .size = 0x2000, .kind = BarKind::kMemory32}));
  auto r = small_bar.add_msix_capability(*table);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("exceeds BAR 0"), std::string::npos);
  ConfigSpace twice(header());
  ASSERT_TRUE(twice.add_bar({.index = 0, .size = 0x4000, .kind = BarKind::kMemory32}));
  ASSERT_TRUE(twice.add_msix_capability(*table));
  EXPECT_FALSE(twice.add_msix_capability(*table));
  EXPECT_FALSE(twice.add_msix_capability(nullptr));
}

}  // namespace
}  // namespace skiff::pci
