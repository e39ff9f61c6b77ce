// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/boot/boot_loader.h"

#include <asm/bootparam.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <string>

#include "unit/boot/boot_test_images.h"

namespace skiff::x86 {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using boot_test::BzImageOptions;
using boot_test::ElfOptions;
using boot_test::make_bzimage;
using boot_test::make_elf;
using boot_test::payload_byte;
using boot_test::TestGuest;
using boot_test::xen_pvh_note;

constexpr uint64_t kRsdp = 0xe0000;

std::vector<uint8_t> make_initrd(size_t size) {
  std::vector<uint8_t> initrd(size);
  for (size_t i = 0; i < size; ++i) initrd[i] = static_cast<uint8_t>(i * 13 + 1);
  return initrd;
}

std::vector<E820Entry> low_map(uint64_t low_end) {
  return {
      {.addr = 0, .size = kEbdaStart, .type = kE820Ram},
      {.addr = kEbdaStart, .size = kLowRamEnd - kEbdaStart, .type = kE820Reserved},
      {.addr = kBiosAreaStart, .size = kHighMemStart - kBiosAreaStart, .type = kE820Reserved},
      {.addr = kHighMemStart, .size = low_end - kHighMemStart, .type = kE820Ram},
  };
}

std::string load_error(const GuestMemory& mem, const std::vector<uint8_t>& kernel,
                       const std::vector<uint8_t>& initrd, std::string_view cmdline) {
  auto plan = load_kernel(mem, kernel, initrd, cmdline, kRsdp);
  EXPECT_FALSE(plan.has_value());
  if (plan) return "";
  EXPECT_EQ(plan.error().kind(), ErrorKind::kConfig);
  return plan.error().message();
}

// ---- e820 ----------------------------------------------------------------------------------

TEST(BootE820, MemoryBelowTheHole) {
  TestGuest guest(64 * kMiB);
  ASSERT_TRUE(guest.ok());
  EXPECT_EQ(build_e820(guest.mem()), low_map(64 * kMiB));
}

TEST(BootE820, MemoryAboveTheHole) {
  // 3 GiB below the hole plus 1 GiB above it; the mappings are never touched.
  TestGuest guest(kMmioHoleStart, 1 * kGiB);
  ASSERT_TRUE(guest.ok());
  std::vector<E820Entry> expected = low_map(kMmioHoleStart);
  expected.push_back({.addr = kRamAboveHoleStart, .size = 1 * kGiB, .type = kE820Ram});
  EXPECT_EQ(build_e820(guest.mem()), expected);
}

TEST(BootE820, NothingReportedInsideTheHole) {
  TestGuest guest(kMmioHoleStart, 2 * kMiB);
  ASSERT_TRUE(guest.ok());
  for (const E820Entry& e : build_e820(guest.mem())) {
    EXPECT_TRUE(e.addr + e.size <= kMmioHoleStart || e.addr >= kMmioHoleEnd)
        << std::hex << e.addr << "+" << e.size;
  }
}

// ---- bzImage -------------------------------------------------------------------------------

TEST(BootLoader, LoadsBzImage) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  const auto kernel = make_bzimage();
  const auto initrd = make_initrd(0x5123);
  const std::string cmdline = "console=ttyS0 root=/dev/vda";
  auto plan = load_kernel(guest.mem(), kernel, initrd, cmdline, kRsdp);
  ASSERT_TRUE(plan) << plan.error().message();

  EXPECT_EQ(plan->format, KernelFormat::kBzImage);
  EXPECT_FALSE(plan->pvh_entry);
  EXPECT_EQ(plan->entry, kKernelLoadAddr + 0x200);
  EXPECT_EQ(plan->boot_params_addr, kZeroPageAddr);
  // Relocatable, pref_address 16 MiB, init_size 4 MiB: the decompressor runs up to 20 MiB.
  EXPECT_EQ(plan->kernel_end, 0x1000000u + 0x400000u);

  // Protected-mode code at 1 MiB.
  const auto code = guest.bytes(kKernelLoadAddr, 0x3000);
  for (uint64_t i = 0; i < code.size(); i += 0x101) ASSERT_EQ(code[i], payload_byte(i)) << i;

  // Initrd: page-aligned, as high as possible in the 64 MiB of RAM.
  EXPECT_EQ(plan->initrd_size, initrd.size());
  EXPECT_EQ(plan->initrd_addr, (64 * kMiB - initrd.size()) & ~(kPageSize - 1));
  EXPECT_EQ(plan->initrd_addr % kPageSize, 0u);
  EXPECT_EQ(guest.bytes(plan->initrd_addr, initrd.size()), initrd);

  // Command line, NUL-terminated.
  const auto cmd = guest.bytes(kCmdlineAddr, cmdline.size() + 1);
  EXPECT_EQ(std::string(cmd.begin(), cmd.end() - 1), cmdline);
  EXPECT_EQ(cmd.back(), 0);

  const auto params = guest.obj<boot_params>(kZeroPageAddr);
  // Copied from the image's setup header.
  EXPECT_EQ(params.hdr.boot_flag, 0xaa55);
  EXPECT_EQ(params.hdr.header, 0x53726448u);
  EXPECT_EQ(params.hdr.version, 0x020f);
  EXPECT_EQ(params.hdr.init_size, 0x400000u);
  EXPECT_EQ(params.hdr.kernel_alignment, 0x200000u);
  EXPECT_EQ(params.hdr.vid_mode, 0xffff);
  // Filled in by the loader.
  EXPECT_EQ(params.hdr.type_of_loader, 0xff);
  EXPECT_TRUE(params.hdr.loadflags & LOADED_HIGH);
  EXPECT_TRUE(params.hdr.loadflags & CAN_USE_HEAP);
  EXPECT_EQ(params.hdr.heap_end_ptr, 0xe000 - 0x200);
  EXPECT_EQ(params.hdr.cmd_line_ptr, kCmdlineAddr);
  EXPECT_EQ(params.hdr.ramdisk_image, plan->initrd_addr);
  EXPECT_EQ(params.hdr.ramdisk_size, initrd.size());
  EXPECT_EQ(params.acpi_rsdp_addr, kRsdp);
  EXPECT_EQ(params.sentinel, 0);

  const auto expected = low_map(64 * kMiB);
  ASSERT_EQ(params.e820_entries, expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(params.e820_table[i].addr, expected[i].addr) << i;
    EXPECT_EQ(params.e820_table[i].size, expected[i].size) << i;
    EXPECT_EQ(params.e820_table[i].type, expected[i].type) << i;
  }
}

TEST(BootLoader, BzImageWithoutInitrd) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  auto plan = load_kernel(guest.mem(), make_bzimage(), {}, "", 0);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->initrd_addr, 0u);
  EXPECT_EQ(plan->initrd_size, 0u);
  const auto params = guest.obj<boot_params>(kZeroPageAddr);
  EXPECT_EQ(params.hdr.ramdisk_image, 0u);
  EXPECT_EQ(params.hdr.ramdisk_size, 0u);
  EXPECT_EQ(params.acpi_rsdp_addr, 0u);
  EXPECT_EQ(guest.obj<uint8_t>(kCmdlineAddr), 0);
}

TEST(BootLoader, ZeroPageClearsLoaderOwnedFieldsFromImage) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  auto kernel = make_bzimage();
  const uint64_t setup_data_offset = 0x1f1 + offsetof(setup_header, setup_data);
  boot_test::write_at<uint64_t>(kernel, setup_data_offset, 0x12345000);
  kernel[0x1f1 + offsetof(setup_header, type_of_loader)] = 0x71;
  auto plan = load_kernel(guest.mem(), kernel, {}, "", 0);
  ASSERT_TRUE(plan) << plan.error().message();
  const auto params = guest.obj<boot_params>(kZeroPageAddr);
  EXPECT_EQ(params.hdr.setup_data, 0u);
  EXPECT_EQ(params.hdr.type_of_loader, 0xff);
}

TEST(BootLoader, InitrdStaysBelowInitrdAddrMax) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  const auto initrd = make_initrd(0x2000);
  auto plan = load_kernel(guest.mem(), make_bzimage({.initrd_addr_max = 32 * kMiB - 1}),
                          initrd, "", 0);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->initrd_addr, 32 * kMiB - 0x2000);
}

TEST(BootLoader, InitrdBelowTheHoleWhenRamIsLarge) {
  // 3 GiB below the hole: the initrd goes below the kernel's 2 GiB initrd_addr_max.
  TestGuest guest(kMmioHoleStart, 2 * kMiB);
  ASSERT_TRUE(guest.ok());
  const auto initrd = make_initrd(0x1800);
  auto plan = load_kernel(guest.mem(), make_bzimage(), initrd, "", 0);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->initrd_addr, 0x80000000u - 0x2000);
  const auto params = guest.obj<boot_params>(kZeroPageAddr);
  EXPECT_EQ(params.e820_entries, 5);
  EXPECT_EQ(params.e820_table[4].addr, kRamAboveHoleStart);
}

TEST(BootLoader, RejectsCmdlineLongerThanKernelAccepts) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  const std::string cmdline(300, 'x');
  const std::string message =
      load_error(guest.mem(), make_bzimage({.cmdline_size = 255}), {}, cmdline);
  EXPECT_THAT(message, HasSubstr("300 bytes"));
  EXPECT_THAT(message, HasSubstr("at most 255"));
}

TEST(BootLoader, RejectsCmdlineLongerThanBuffer) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  const std::string cmdline(kCmdlineMaxSize, 'x');
  const std::string message =
      load_error(guest.mem(), make_bzimage({.cmdline_size = 0x100000}), {}, cmdline);
  EXPECT_THAT(message, HasSubstr("command line"));
}

TEST(BootLoader, RejectsInitrdTooBig) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  // Kernel runs up to 20 MiB in 64 MiB of RAM: 44 MiB left, ask for 48.
  const std::string message =
      load_error(guest.mem(), make_bzimage(), make_initrd(48 * kMiB), "");
  EXPECT_THAT(message, HasSubstr("initrd"));
  EXPECT_THAT(message, HasSubstr("does not fit"));
  EXPECT_THAT(message, HasSubstr(std::to_string(48 * kMiB)));
}

TEST(BootLoader, RejectsKernelLargerThanMemory) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  const std::string message =
      load_error(guest.mem(), make_bzimage({.init_size = 60 * kMiB}), {}, "");
  EXPECT_THAT(message, HasSubstr("needs 76 MiB of guest memory"));
}

TEST(BootLoader, RejectsHugePrefAddressWithoutOverflow) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  const std::string message =
      load_error(guest.mem(), make_bzimage({.pref_address = 0xfffffffffff00000ull}), {}, "");
  EXPECT_THAT(message, HasSubstr("of guest memory"));
}

TEST(BootLoader, RejectsMemoryWithoutLowRegion) {
  TestGuest guest(512 * kKiB);  // ends below 1 MiB
  ASSERT_TRUE(guest.ok());
  EXPECT_THAT(load_error(guest.mem(), make_bzimage(), {}, ""), HasSubstr("starting at 0"));
}

// ---- ELF -----------------------------------------------------------------------------------

TEST(BootLoader, LoadsElfWithoutPvhNote) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  guest.fill_low(0xcc);  // the bss tail must come out zeroed
  const auto initrd = make_initrd(0x3000);
  auto plan = load_kernel(guest.mem(), make_elf(), initrd, "quiet", kRsdp);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->format, KernelFormat::kElf);
  EXPECT_FALSE(plan->pvh_entry);
  EXPECT_EQ(plan->entry, 0x1000000u);
  EXPECT_EQ(plan->boot_params_addr, kZeroPageAddr);
  EXPECT_EQ(plan->kernel_end, 0x1003000u);
  EXPECT_EQ(plan->initrd_addr, 64 * kMiB - 0x3000);

  EXPECT_EQ(guest.bytes(0x1000000, 0x2000), std::vector<uint8_t>(0x2000, 0x90));
  EXPECT_EQ(guest.bytes(0x1002000, 0x1000), std::vector<uint8_t>(0x1000, 0));
  EXPECT_EQ(guest.obj<uint8_t>(0x1003000), 0xcc);  // past memsz: untouched

  const auto params = guest.obj<boot_params>(kZeroPageAddr);
  EXPECT_EQ(params.hdr.boot_flag, 0xaa55);
  EXPECT_EQ(params.hdr.header, 0x53726448u);
  EXPECT_EQ(params.hdr.version, 0x020f);
  EXPECT_EQ(params.hdr.type_of_loader, 0xff);
  EXPECT_EQ(params.hdr.cmd_line_ptr, kCmdlineAddr);
  EXPECT_EQ(params.hdr.ramdisk_image, plan->initrd_addr);
  EXPECT_EQ(params.hdr.ramdisk_size, 0x3000u);
  EXPECT_EQ(params.acpi_rsdp_addr, kRsdp);
  EXPECT_EQ(params.e820_entries, 4);
  EXPECT_EQ(params.e820_table[3].addr + params.e820_table[3].size, 64 * kMiB);
  const auto cmdline = guest.bytes(kCmdlineAddr, 6);
  EXPECT_EQ(std::string(cmdline.begin(), cmdline.end()), std::string("quiet\0", 6));
}

TEST(BootLoader, LoadsElfWithPvhNote) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  const auto initrd = make_initrd(0x1234);
  ElfOptions options;
  options.notes = {xen_pvh_note(0x1000020, 8)};
  auto plan = load_kernel(guest.mem(), make_elf(options), initrd, "console=hvc0", kRsdp);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_TRUE(plan->pvh_entry);
  EXPECT_EQ(plan->entry, 0x1000020u);
  EXPECT_EQ(plan->boot_params_addr, kPvhStartInfoAddr);
  EXPECT_EQ(guest.bytes(0x1000000, 0x2000), std::vector<uint8_t>(0x2000, 0x90));

  const auto info = guest.obj<HvmStartInfo>(kPvhStartInfoAddr);
  EXPECT_EQ(info.magic, 0x336ec578u);
  EXPECT_EQ(info.version, 1u);
  EXPECT_EQ(info.cmdline_paddr, kCmdlineAddr);
  EXPECT_EQ(info.rsdp_paddr, kRsdp);
  EXPECT_EQ(info.nr_modules, 1u);
  EXPECT_EQ(info.modlist_paddr, kPvhModlistAddr);
  EXPECT_EQ(info.memmap_paddr, kPvhMemmapAddr);
  ASSERT_EQ(info.memmap_entries, 4u);

  const auto module = guest.obj<HvmModlistEntry>(kPvhModlistAddr);
  EXPECT_EQ(module.paddr, plan->initrd_addr);
  EXPECT_EQ(module.size, initrd.size());
  EXPECT_EQ(module.cmdline_paddr, 0u);
  EXPECT_EQ(guest.bytes(plan->initrd_addr, initrd.size()), initrd);

  const auto expected = low_map(64 * kMiB);
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto entry =
        guest.obj<HvmMemmapTableEntry>(kPvhMemmapAddr + i * sizeof(HvmMemmapTableEntry));
    EXPECT_EQ(entry.addr, expected[i].addr) << i;
    EXPECT_EQ(entry.size, expected[i].size) << i;
    EXPECT_EQ(entry.type, expected[i].type) << i;
    EXPECT_EQ(entry.reserved, 0u) << i;
  }
}

TEST(BootLoader, PvhWithoutInitrdHasNoModules) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  ElfOptions options;
  options.notes = {xen_pvh_note(0x1000000, 4)};
  auto plan = load_kernel(guest.mem(), make_elf(options), {}, "", 0);
  ASSERT_TRUE(plan) << plan.error().message();
  const auto info = guest.obj<HvmStartInfo>(kPvhStartInfoAddr);
  EXPECT_EQ(info.nr_modules, 0u);
  EXPECT_EQ(info.modlist_paddr, 0u);
  EXPECT_EQ(info.rsdp_paddr, 0u);
}

TEST(BootLoader, RejectsElfSegmentOutsideGuestRam) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  ElfOptions options;
  options.entry = 0x8000000;
  options.segments = {{.paddr = 0x8000000, .data = std::vector<uint8_t>(0x100, 1)}};
  const std::string message = load_error(guest.mem(), make_elf(options), {}, "");
  EXPECT_THAT(message, HasSubstr("segment 0"));
  EXPECT_THAT(message, HasSubstr("outside guest RAM"));
}

TEST(BootLoader, RejectsElfSegmentStraddlingEndOfRam) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  ElfOptions options;
  options.entry = 64 * kMiB - 0x1000;
  options.segments = {{.paddr = 64 * kMiB - 0x1000, .data = std::vector<uint8_t>(0x100, 1),
                       .mem_size = 0x2000}};
  EXPECT_THAT(load_error(guest.mem(), make_elf(options), {}, ""),
              HasSubstr("outside guest RAM"));
}

TEST(BootLoader, RejectsElfSegmentInBootArea) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  ElfOptions options;
  options.entry = 0x7000;
  options.segments = {{.paddr = 0x7000, .data = std::vector<uint8_t>(0x100, 1)}};
  EXPECT_THAT(load_error(guest.mem(), make_elf(options), {}, ""), HasSubstr("boot area"));
}

TEST(BootLoader, RejectsVirtualEntryPoint) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  EXPECT_THAT(load_error(guest.mem(), make_elf({.entry = 0xffffffff81000000ull}), {}, ""),
              HasSubstr("entry point"));
}

TEST(BootLoader, RejectsElfInitrdTooBig) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  EXPECT_THAT(load_error(guest.mem(), make_elf(), make_initrd(60 * kMiB), ""),
              HasSubstr("does not fit"));
}

TEST(BootLoader, RejectsGarbageKernel) {
  TestGuest guest;
  ASSERT_TRUE(guest.ok());
  EXPECT_THAT(load_error(guest.mem(), std::vector<uint8_t>(8192, 0x11), {}, ""),
              HasSubstr("not a bzImage or ELF64"));
}

}  // namespace
}  // namespace skiff::x86
