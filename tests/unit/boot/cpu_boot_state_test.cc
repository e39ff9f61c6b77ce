// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/boot/cpu_boot_state.h"

#include <gtest/gtest.h>

#include <array>
#include <optional>

#include "unit/boot/boot_test_images.h"

namespace skiff::x86 {
namespace {

using boot_test::TestGuest;

// Walks the boot page tables in guest memory like the MMU does for a 2 MiB mapping.
std::optional<uint64_t> translate(const TestGuest& guest, uint64_t va) {
  const auto pml4e = guest.obj<uint64_t>(kPml4Addr + ((va >> 39) & 0x1ff) * 8);
  if ((pml4e & kPtePresent) == 0) return std::nullopt;
  const auto pdpte = guest.obj<uint64_t>((pml4e & ~0xfffull) + ((va >> 30) & 0x1ff) * 8);
  if ((pdpte & kPtePresent) == 0) return std::nullopt;
  const auto pde = guest.obj<uint64_t>((pdpte & ~0xfffull) + ((va >> 21) & 0x1ff) * 8);
  if ((pde & kPtePresent) == 0 || (pde & kPteLargePage) == 0) return std::nullopt;
  return (pde & ~0x1fffffull) + (va & 0x1fffff);
}

TEST(BootCpuState, PageTablesIdentityMapLow4GiB) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  guest.fill_low(0xff);  // unused entries must be written as zero, not left over
  ASSERT_TRUE(write_boot_page_tables(guest.mem()));
  for (uint64_t va : {0ull, 0x7000ull, 0x100000ull, 0x1234567ull, 0x3fffffffull, 0x40000000ull,
                      0xbfffffffull, 0xfee00000ull, 0xffffffffull}) {
    auto pa = translate(guest, va);
    ASSERT_TRUE(pa.has_value()) << std::hex << va;
    EXPECT_EQ(*pa, va);
  }
  EXPECT_FALSE(translate(guest, 0x100000000ull).has_value());
  EXPECT_FALSE(translate(guest, 0x8000000000ull).has_value());
  const auto pde = guest.obj<uint64_t>(kPdAddr);
  EXPECT_EQ(pde, kPtePresent | kPteWritable | kPteLargePage);
}

TEST(BootCpuState, PageTablesNeedGuestMemory) {
  TestGuest guest(kPdAddr + kPageSize);  // room for only one page directory
  ASSERT_TRUE(guest.ok());
  auto written = write_boot_page_tables(guest.mem());
  ASSERT_FALSE(written);
  EXPECT_NE(written.error().message().find("page directory 1"), std::string::npos);
}

TEST(BootCpuState, GdtHoldsFlatSegments) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  guest.fill_low(0xff);
  ASSERT_TRUE(write_boot_gdt(guest.mem()));
  const auto gdt = guest.obj<std::array<uint64_t, 4>>(kBootGdtAddr);
  EXPECT_EQ(gdt[0], 0u);
  EXPECT_EQ(gdt[1], 0x00cf9b000000ffffull);  // 32-bit code, base 0, 4 GiB, DPL 0
  EXPECT_EQ(gdt[2], 0x00af9b000000ffffull);  // 64-bit code (L=1, D=0)
  EXPECT_EQ(gdt[3], 0x00cf93000000ffffull);  // data, read/write
  EXPECT_EQ(guest.obj<uint64_t>(kBootIdtAddr), 0u);
}

BootPlan long_mode_plan() {
  return BootPlan{.format = KernelFormat::kBzImage,
                  .pvh_entry = false,
                  .entry = 0x100200,
                  .boot_params_addr = kZeroPageAddr};
}

TEST(BootCpuState, LongModeRegisters) {
  kvm_regs regs{};
  regs.rax = 0x1234;
  kvm_sregs sregs{};
  sregs.apic_base = 0xfee00900;
  sregs.efer = 0x1;  // SCE, set by someone else: kept
  setup_boot_registers(long_mode_plan(), &regs, &sregs);

  EXPECT_EQ(regs.rip, 0x100200u);
  EXPECT_EQ(regs.rsi, kZeroPageAddr);
  EXPECT_EQ(regs.rsp, kBootStackTop);
  EXPECT_EQ(regs.rflags, 0x2u);
  EXPECT_EQ(regs.rax, 0u);

  EXPECT_EQ(sregs.cr0, kCr0Pe | kCr0Et | kCr0Pg);
  EXPECT_EQ(sregs.cr0, 0x80000011u);
  EXPECT_EQ(sregs.cr3, kPml4Addr);
  EXPECT_EQ(sregs.cr4, 0x20u);
  EXPECT_EQ(sregs.efer, 0x1u | 0x100u | 0x400u);
  EXPECT_EQ(sregs.apic_base, 0xfee00900u);

  EXPECT_EQ(sregs.cs.selector, 0x10);
  EXPECT_EQ(sregs.cs.l, 1);
  EXPECT_EQ(sregs.cs.db, 0);
  EXPECT_EQ(sregs.cs.s, 1);
  EXPECT_EQ(sregs.cs.type, 0xb);
  EXPECT_EQ(sregs.cs.present, 1);
  EXPECT_EQ(sregs.cs.base, 0u);
  EXPECT_EQ(sregs.cs.limit, 0xffffffffu);
  for (const kvm_segment* s : {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss}) {
    EXPECT_EQ(s->selector, 0x18);
    EXPECT_EQ(s->type, 0x3);
    EXPECT_EQ(s->base, 0u);
    EXPECT_EQ(s->limit, 0xffffffffu);
    EXPECT_EQ(s->present, 1);
    EXPECT_EQ(s->s, 1);
  }
  EXPECT_EQ(sregs.tr.type, 0xb);
  EXPECT_EQ(sregs.tr.s, 0);
  EXPECT_EQ(sregs.tr.present, 1);
  EXPECT_EQ(sregs.gdt.base, kBootGdtAddr);
  EXPECT_EQ(sregs.gdt.limit, 31);
  EXPECT_EQ(sregs.idt.base, kBootIdtAddr);
  EXPECT_EQ(sregs.idt.limit, 7);
}

TEST(BootCpuState, PvhRegisters) {
  BootPlan plan{.format = KernelFormat::kElf,
                .pvh_entry = true,
                .entry = 0x1000020,
                .boot_params_addr = kPvhStartInfoAddr};
  kvm_regs regs{};
  kvm_sregs sregs{};
  sregs.cr0 = 0x60000010;  // KVM's reset value: CD|NW|ET
  sregs.cr4 = 0x20;
  sregs.efer = 0x500;       // leftover LME|LMA must go
  sregs.apic_base = 0xfee00900;
  setup_boot_registers(plan, &regs, &sregs);

  EXPECT_EQ(regs.rip, 0x1000020u);
  EXPECT_EQ(regs.rbx, kPvhStartInfoAddr);
  EXPECT_EQ(regs.rsi, 0u);
  EXPECT_EQ(regs.rflags, 0x2u);

  EXPECT_EQ(sregs.cr0, 0x11u);  // PE|ET, paging off
  EXPECT_EQ(sregs.cr0 & kCr0Pg, 0u);
  EXPECT_EQ(sregs.cr3, 0u);
  EXPECT_EQ(sregs.cr4, 0u);
  EXPECT_EQ(sregs.efer & (kEferLme | kEferLma), 0u);
  EXPECT_EQ(sregs.apic_base, 0xfee00900u);

  EXPECT_EQ(sregs.cs.selector, 0x08);
  EXPECT_EQ(sregs.cs.l, 0);
  EXPECT_EQ(sregs.cs.db, 1);
  EXPECT_EQ(sregs.cs.type, 0xb);
  EXPECT_EQ(sregs.cs.base, 0u);
  EXPECT_EQ(sregs.cs.limit, 0xffffffffu);
  EXPECT_EQ(sregs.ds.selector, 0x18);
  EXPECT_EQ(sregs.ds.db, 1);
  EXPECT_EQ(sregs.ss.limit, 0xffffffffu);
  // pvh.pandoc: "tr: must be a 32-bit TSS (active) with a base of '0' and a limit of '0x67'".
  EXPECT_EQ(sregs.tr.base, 0u);
  EXPECT_EQ(sregs.tr.limit, 0x67u);
  EXPECT_EQ(sregs.tr.type, 0xb);
}

}  // namespace
}  // namespace skiff::x86
