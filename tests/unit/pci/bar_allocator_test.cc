// SPDX-License-Identifier: Apache-2.0
#include "pci/bar_allocator.h"

#include <gtest/gtest.h>

#include "arch/x86_64/layout.h"

namespace skiff::pci {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

TEST(PciBarAllocator, DefaultWindows) {
  const PciWindows low = default_pci_windows(2 * kGiB);  // all RAM below the hole
  EXPECT_EQ(low.mmio32.start, x86::kMmio32WindowStart);
  EXPECT_EQ(low.mmio32.size, x86::kMmio32WindowSize);
  EXPECT_EQ(low.mmio64.start, 4 * kGiB);
  EXPECT_EQ(low.mmio64.size, kDefaultMmio64WindowSize);
  EXPECT_EQ(low.io.start, 0xc000u);
  EXPECT_EQ(low.io.end(), 0x10000u);
  // RAM ending above 4 GiB: the window starts at the next GiB.
  EXPECT_EQ(default_pci_windows(5 * kGiB + 1).mmio64.start, 6 * kGiB);
  EXPECT_EQ(default_pci_windows(6 * kGiB, kGiB).mmio64.end(), 7 * kGiB);
  // The windows stay clear of the ECAM window and the chipset devices above it.
  EXPECT_LE(low.mmio32.end(), x86::kPciEcamAddr);
}

TEST(PciBarAllocator, BarsAreNaturallyAligned) {
  BarAllocator allocator(default_pci_windows(8 * kGiB));
  auto a = allocator.allocate(BarKind::kMemory32, 0x1000);
  auto b = allocator.allocate(BarKind::kMemory32, 0x10000);
  auto c = allocator.allocate(BarKind::kMemory32, 0x100);  // memory BARs take >= 4 KiB
  auto d = allocator.allocate(BarKind::kMemory32, 0x1000);
  ASSERT_TRUE(a && b && c && d);
  EXPECT_EQ(*a, x86::kMmio32WindowStart);
  EXPECT_EQ(*b, x86::kMmio32WindowStart + 0x10000);
  EXPECT_EQ(*c, x86::kMmio32WindowStart + 0x20000);
  EXPECT_EQ(*d, x86::kMmio32WindowStart + 0x21000);
  auto e = allocator.allocate({.index = 2, .size = 4 * kGiB, .kind = BarKind::kMemory64});
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, 8 * kGiB);
  auto f = allocator.allocate(BarKind::kMemory64, 0x4000);
  ASSERT_TRUE(f);
  EXPECT_EQ(*f, 12 * kGiB);
  auto g = allocator.allocate(BarKind::kIo, 0x20);
  auto h = allocator.allocate(BarKind::kIo, 0x100);
  auto i = allocator.allocate(BarKind::kIo, 2);  // I/O BARs take >= 4 ports
  auto j = allocator.allocate(BarKind::kIo, 4);
  ASSERT_TRUE(g && h && i && j);
  EXPECT_EQ(*g, 0xc000u);
  EXPECT_EQ(*h, 0xc100u);
  EXPECT_EQ(*i, 0xc200u);
  EXPECT_EQ(*j, 0xc204u);
  for (uint64_t address : {*a, *b, *c, *d, *e, *f, *g, *h, *i, *j}) EXPECT_NE(address, 0u);
}

TEST(PciBarAllocator, ExhaustionNamesTheWindow) {
  BarAllocator allocator(PciWindows{.mmio32 = {.start = 0xc000'0000, .size = 0x3000},
                                    .mmio64 = {},
                                    .io = {.start = 0xc000, .size = 0x100}});
  ASSERT_TRUE(allocator.allocate(BarKind::kMemory32, 0x1000));
  auto too_big = allocator.allocate(BarKind::kMemory32, 0x4000);
  ASSERT_FALSE(too_big);
  EXPECT_NE(too_big.error().message().find("32-bit MMIO window [0xc0000000, 0xc0003000)"),
            std::string::npos)
      << too_big.error().message();
  // Room for two more 4 KiB BARs, then none.
  EXPECT_TRUE(allocator.allocate(BarKind::kMemory32, 0x1000));
  EXPECT_TRUE(allocator.allocate(BarKind::kMemory32, 0x1000));
  EXPECT_FALSE(allocator.allocate(BarKind::kMemory32, 0x1000));

  auto no64 = allocator.allocate(BarKind::kMemory64, 0x1000);
  ASSERT_FALSE(no64);
  EXPECT_NE(no64.error().message().find("64-bit MMIO"), std::string::npos);

  ASSERT_TRUE(allocator.allocate(BarKind::kIo, 0x80));
  auto io = allocator.allocate(BarKind::kIo, 0x100);  // aligned to 0x100: past the end
  ASSERT_FALSE(io);
  EXPECT_NE(io.error().message().find("I/O port window"), std::string::npos);
  EXPECT_TRUE(allocator.allocate(BarKind::kIo, 0x80));
}

TEST(PciBarAllocator, RejectsSizesThatAreNotPowersOfTwo) {
  BarAllocator allocator(default_pci_windows(0));
  EXPECT_FALSE(allocator.allocate(BarKind::kMemory32, 0));
  EXPECT_FALSE(allocator.allocate(BarKind::kMemory32, 0x3000));
  EXPECT_FALSE(allocator.allocate(BarKind::kIo, 0x30));
}

TEST(PciBarAllocator, HugeRequestsDoNotWrap) {
  BarAllocator allocator(PciWindows{
      .mmio32 = {}, .mmio64 = {.start = 0xffff'ffff'0000'0000, .size = 0xffff'0000}, .io = {}});
  EXPECT_FALSE(allocator.allocate(BarKind::kMemory64, uint64_t{1} << 63));
  EXPECT_FALSE(allocator.allocate(BarKind::kMemory64, uint64_t{1} << 32));
  EXPECT_TRUE(allocator.allocate(BarKind::kMemory64, 0x1000));
  EXPECT_FALSE(allocator.allocate(BarKind::kIo, 4));
}

}  // namespace
}  // namespace skiff::pci
