// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/boot/kernel_image.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "unit/boot/boot_test_images.h"

namespace skiff::x86 {
namespace {

using ::testing::HasSubstr;
using boot_test::BzImageOptions;
using boot_test::ElfNoteSpec;
using boot_test::ElfOptions;
using boot_test::make_bzimage;
using boot_test::make_elf;
using boot_test::phdr_offset;
using boot_test::read_at;
using boot_test::write_at;
using boot_test::xen_pvh_note;

std::string parse_error(const std::vector<uint8_t>& image) {
  auto parsed = parse_kernel_image(image);
  EXPECT_FALSE(parsed.has_value());
  if (parsed) return "";
  EXPECT_EQ(parsed.error().kind(), ErrorKind::kConfig);
  return parsed.error().message();
}

// ---- bzImage -------------------------------------------------------------------------------

TEST(BootKernelImage, ParsesValidBzImage) {
  const auto image = make_bzimage();
  auto parsed = parse_kernel_image(image);
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_EQ(parsed->format, KernelFormat::kBzImage);
  const BzImageInfo& info = parsed->bzimage;
  EXPECT_EQ(info.protocol_version, 0x020f);
  EXPECT_EQ(info.setup_sects, 4);
  EXPECT_EQ(info.setup_size, 5u * 512);
  EXPECT_EQ(info.payload_offset, 5u * 512);
  EXPECT_EQ(info.payload_size, 0x3000u);
  EXPECT_EQ(info.syssize, 0x300u);
  EXPECT_EQ(info.initrd_addr_max, 0x7fffffffu);
  EXPECT_EQ(info.cmdline_size, 2047u);
  EXPECT_EQ(info.kernel_alignment, 0x200000u);
  EXPECT_TRUE(info.relocatable);
  EXPECT_EQ(info.pref_address, 0x1000000u);
  EXPECT_EQ(info.init_size, 0x400000u);
  EXPECT_EQ(info.setup_header_end, 0x268u);
  EXPECT_TRUE(info.xloadflags & XLF_KERNEL_64);
}

TEST(BootKernelImage, SetupSectsZeroMeansFour) {
  auto parsed = parse_kernel_image(make_bzimage({.setup_sects = 0}));
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->bzimage.setup_sects, 4);
  EXPECT_EQ(parsed->bzimage.payload_offset, 5u * 512);
}

TEST(BootKernelImage, OddSetupSectsMovesPayload) {
  auto parsed = parse_kernel_image(make_bzimage({.setup_sects = 27}));
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->bzimage.payload_offset, 28u * 512);
}

TEST(BootKernelImage, RejectsTruncatedBzImage) {
  // 5 * 512 setup + 0x3000 code = 14848 bytes; cut 100 bytes off.
  const std::string message = parse_error(make_bzimage({.truncate_to = 14748}));
  EXPECT_THAT(message, HasSubstr("truncated"));
  EXPECT_THAT(message, HasSubstr("14848"));
  EXPECT_THAT(message, HasSubstr("14748"));
}

TEST(BootKernelImage, RejectsFileShorterThanSetup) {
  const std::string message = parse_error(make_bzimage({.setup_sects = 30, .truncate_to = 2048}));
  EXPECT_THAT(message, HasSubstr("truncated"));
  EXPECT_THAT(message, HasSubstr("15872"));  // 31 * 512
}

TEST(BootKernelImage, RejectsHeaderCutShort) {
  const std::string message = parse_error(make_bzimage({.truncate_to = 0x210}));
  EXPECT_THAT(message, HasSubstr("truncated"));
}

TEST(BootKernelImage, RejectsBadBootFlag) {
  const std::string message = parse_error(make_bzimage({.boot_flag = 0x1234}));
  EXPECT_THAT(message, HasSubstr("boot_flag"));
  EXPECT_THAT(message, HasSubstr("0x1234"));
}

TEST(BootKernelImage, RejectsUnknownMagic) {
  std::vector<uint8_t> image(4096, 0);
  image[0] = 0xde;
  image[1] = 0xad;
  image[2] = 0xbe;
  image[3] = 0xef;
  const std::string message = parse_error(image);
  EXPECT_THAT(message, HasSubstr("not a bzImage or ELF64 x86_64 file"));
  EXPECT_THAT(message, HasSubstr("de ad be ef"));
}

TEST(BootKernelImage, RejectsEmptyFile) {
  EXPECT_THAT(parse_error({}), HasSubstr("not a bzImage or ELF64"));
}

TEST(BootKernelImage, RejectsTooOldProtocol) {
  const std::string message = parse_error(make_bzimage({.version = 0x0205}));
  EXPECT_THAT(message, HasSubstr("2.05"));
  EXPECT_THAT(message, HasSubstr("too old"));
}

TEST(BootKernelImage, RejectsBootSectorWithoutHdrS) {
  const std::string message = parse_error(make_bzimage({.header_magic = 0}));
  EXPECT_THAT(message, HasSubstr("HdrS"));
  EXPECT_THAT(message, HasSubstr("older than 2.00"));
}

TEST(BootKernelImage, RejectsKernelWithout64BitEntry) {
  const std::string message = parse_error(make_bzimage({.xloadflags = 0}));
  EXPECT_THAT(message, HasSubstr("XLF_KERNEL_64"));
}

TEST(BootKernelImage, RejectsZImage) {
  EXPECT_THAT(parse_error(make_bzimage({.loadflags = 0})), HasSubstr("LOADED_HIGH"));
}

TEST(BootKernelImage, RejectsZeroSyssize) {
  EXPECT_THAT(parse_error(make_bzimage({.syssize = 0})), HasSubstr("syssize"));
}

TEST(BootKernelImage, RejectsSyssizeLargerThanFile) {
  const std::string message = parse_error(make_bzimage({.syssize = 0x10000000}));
  EXPECT_THAT(message, HasSubstr("truncated"));
}

TEST(BootKernelImage, RejectsBadKernelAlignment) {
  EXPECT_THAT(parse_error(make_bzimage({.kernel_alignment = 0x300000})),
              HasSubstr("kernel_alignment"));
}

// ---- ELF -----------------------------------------------------------------------------------

TEST(BootKernelImage, ParsesElfWithoutPvhNote) {
  const auto image = make_elf();
  auto parsed = parse_kernel_image(image);
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_EQ(parsed->format, KernelFormat::kElf);
  EXPECT_EQ(parsed->elf.entry, 0x1000000u);
  EXPECT_FALSE(parsed->elf.pvh_entry.has_value());
  ASSERT_EQ(parsed->elf.segments.size(), 1u);
  EXPECT_EQ(parsed->elf.segments[0].paddr, 0x1000000u);
  EXPECT_EQ(parsed->elf.segments[0].file_size, 0x2000u);
  EXPECT_EQ(parsed->elf.segments[0].mem_size, 0x3000u);
  EXPECT_EQ(parsed->elf.segments[0].file_offset, sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr));
}

TEST(BootKernelImage, FindsPvhNoteWith8ByteDescriptor) {
  auto parsed = parse_kernel_image(make_elf({.notes = {xen_pvh_note(0x1000040, 8)}}));
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_TRUE(parsed->elf.pvh_entry.has_value());
  EXPECT_EQ(*parsed->elf.pvh_entry, 0x1000040u);
}

TEST(BootKernelImage, FindsPvhNoteWith4ByteDescriptor) {
  auto parsed = parse_kernel_image(make_elf({.notes = {xen_pvh_note(0x1000080, 4)}}));
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_TRUE(parsed->elf.pvh_entry.has_value());
  EXPECT_EQ(*parsed->elf.pvh_entry, 0x1000080u);
}

TEST(BootKernelImage, SkipsOtherNotesBeforeThePvhNote) {
  // A GNU build-id note (name padded from 4 to 4, desc 20 bytes), a Linux note with a
  // 6-byte name (padded to 8) and another Xen note type precede the entry note.
  ElfOptions options;
  options.notes = {
      ElfNoteSpec{.name = "GNU", .type = 3, .desc = std::vector<uint8_t>(20, 0xab)},
      ElfNoteSpec{.name = "Linux", .type = 1, .desc = std::vector<uint8_t>(3, 0x01)},
      ElfNoteSpec{.name = "Xen", .type = 6, .desc = std::vector<uint8_t>(8, 0x02)},
      ElfNoteSpec{.name = "Xenon", .type = 18, .desc = std::vector<uint8_t>(4, 0x03)},
      xen_pvh_note(0x1000100, 8),
  };
  auto parsed = parse_kernel_image(make_elf(options));
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_TRUE(parsed->elf.pvh_entry.has_value());
  EXPECT_EQ(*parsed->elf.pvh_entry, 0x1000100u);
}

TEST(BootKernelImage, RejectsPvhNoteWithOddDescriptorSize) {
  ElfNoteSpec note = xen_pvh_note(0x1000000, 8);
  note.desc.resize(6);
  EXPECT_THAT(parse_error(make_elf({.notes = {note}})), HasSubstr("6-byte descriptor"));
}

TEST(BootKernelImage, RejectsPvhEntryAbove4GiB) {
  EXPECT_THAT(parse_error(make_elf({.notes = {xen_pvh_note(0x100000000ull, 8)}})),
              HasSubstr("not a 32-bit address"));
}

TEST(BootKernelImage, RejectsNoteWithBogusNameSize) {
  ElfNoteSpec note = xen_pvh_note(0x1000000, 8);
  note.namesz_override = 0xfffffffe;  // padding would wrap a 32-bit computation
  EXPECT_THAT(parse_error(make_elf({.notes = {note}})), HasSubstr("runs past the end"));
}

TEST(BootKernelImage, RejectsNoteWithBogusDescSize) {
  ElfNoteSpec note = xen_pvh_note(0x1000000, 8);
  note.descsz_override = 0x1000;
  EXPECT_THAT(parse_error(make_elf({.notes = {note}})), HasSubstr("runs past the end"));
}

TEST(BootKernelImage, RejectsPtLoadOutsideFile) {
  auto image = make_elf();
  auto phdr = read_at<Elf64_Phdr>(image, phdr_offset(0));
  phdr.p_offset = image.size() - 0x100;  // 0x2000 bytes from here run past the end
  write_at(image, phdr_offset(0), phdr);
  const std::string message = parse_error(image);
  EXPECT_THAT(message, HasSubstr("program header 0"));
  EXPECT_THAT(message, HasSubstr("past the end of the file"));
}

TEST(BootKernelImage, RejectsPtLoadWhoseOffsetPlusSizeWraps) {
  auto image = make_elf();
  auto phdr = read_at<Elf64_Phdr>(image, phdr_offset(0));
  phdr.p_offset = 0xffffffffffffff00ull;
  write_at(image, phdr_offset(0), phdr);
  EXPECT_THAT(parse_error(image), HasSubstr("past the end of the file"));
}

TEST(BootKernelImage, RejectsProgramHeaderTablePastEnd) {
  EXPECT_THAT(parse_error(make_elf({.phnum_override = 0xfffe})),
              HasSubstr("program header table"));
}

TEST(BootKernelImage, RejectsProgramHeaderOffsetThatWraps) {
  auto image = make_elf();
  auto ehdr = read_at<Elf64_Ehdr>(image, 0);
  ehdr.e_phoff = 0xfffffffffffffff0ull;
  write_at(image, 0, ehdr);
  EXPECT_THAT(parse_error(image), HasSubstr("program header table"));
}

TEST(BootKernelImage, RejectsPnXnum) {
  EXPECT_THAT(parse_error(make_elf({.phnum_override = PN_XNUM})), HasSubstr("e_phnum"));
}

TEST(BootKernelImage, RejectsMemszSmallerThanFilesz) {
  auto image = make_elf();
  auto phdr = read_at<Elf64_Phdr>(image, phdr_offset(0));
  phdr.p_memsz = 0x1000;
  write_at(image, phdr_offset(0), phdr);
  EXPECT_THAT(parse_error(image), HasSubstr("p_memsz"));
}

TEST(BootKernelImage, RejectsSegmentThatWrapsAddressSpace) {
  auto image = make_elf();
  auto phdr = read_at<Elf64_Phdr>(image, phdr_offset(0));
  phdr.p_paddr = 0xfffffffffffff000ull;
  write_at(image, phdr_offset(0), phdr);
  EXPECT_THAT(parse_error(image), HasSubstr("wraps"));
}

TEST(BootKernelImage, RejectsElf32) {
  EXPECT_THAT(parse_error(make_elf({.elf_class = ELFCLASS32})), HasSubstr("not ELF64"));
}

TEST(BootKernelImage, RejectsOtherMachine) {
  EXPECT_THAT(parse_error(make_elf({.machine = EM_AARCH64})), HasSubstr("not x86_64"));
}

TEST(BootKernelImage, RejectsSharedObject) {
  EXPECT_THAT(parse_error(make_elf({.type = ET_DYN})), HasSubstr("ET_EXEC"));
}

TEST(BootKernelImage, RejectsElfWithoutLoadSegments) {
  EXPECT_THAT(parse_error(make_elf({.segments = {}, .notes = {xen_pvh_note(0x1000000)}})),
              HasSubstr("no loadable"));
}

TEST(BootKernelImage, RejectsTruncatedElfHeader) {
  auto image = make_elf();
  image.resize(40);
  EXPECT_THAT(parse_error(image), HasSubstr("ELF truncated"));
}

}  // namespace
}  // namespace skiff::x86
