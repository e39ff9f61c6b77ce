// SPDX-License-Identifier: Apache-2.0
// Recognises and validates an x86_64 kernel image held in host memory: a bzImage (Linux x86
// boot protocol, Documentation/arch/x86/boot.rst) or an ELF64 executable such as vmlinux,
// with or without a Xen PVH entry note. Pure parsing: nothing here touches guest memory,
// and every offset and size read from the file is checked against the file before use.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "skiff/error.h"

namespace skiff::x86 {

enum class KernelFormat {
  kBzImage,
  kElf,
};

const char* kernel_format_name(KernelFormat format);

// Boot protocol constants (boot.rst, "THE REAL-MODE KERNEL HEADER").
inline constexpr uint64_t kSetupHeaderOffset = 0x1f1;
inline constexpr uint64_t kBootFlagOffset = 0x1fe;
inline constexpr uint64_t kHeaderMagicOffset = 0x202;
inline constexpr uint16_t kBootFlagMagic = 0xaa55;
inline constexpr uint32_t kHeaderMagic = 0x53726448;  // "HdrS"
inline constexpr uint16_t kMinBootProtocol = 0x0206;
inline constexpr uint64_t kSectorSize = 512;
// "If this field is 0, the real value is 4."
inline constexpr uint8_t kDefaultSetupSects = 4;
// The 64-bit entry point is 0x200 bytes into the protected-mode code (boot.rst, "64-bit
// BOOT PROTOCOL").
inline constexpr uint64_t kBzImage64BitEntryOffset = 0x200;
// Xen ELF note carrying the 32-bit PVH entry point (xen/include/public/elfnote.h).
inline constexpr uint32_t kXenElfNotePhys32Entry = 18;

// What the setup header of a bzImage says, after validation.
struct BzImageInfo {
  uint16_t protocol_version = 0;
  uint8_t setup_sects = 0;       // after the "0 means 4" rule
  uint64_t setup_size = 0;       // real-mode part: (setup_sects + 1) * 512 bytes
  uint64_t payload_offset = 0;   // file offset of the protected-mode code (== setup_size)
  uint64_t payload_size = 0;     // bytes of protected-mode code in the file
  uint32_t syssize = 0;          // protected-mode code size in 16-byte paragraphs
  uint8_t loadflags = 0;
  uint16_t xloadflags = 0;
  uint32_t initrd_addr_max = 0;  // highest address the initrd may occupy (inclusive)
  uint32_t cmdline_size = 0;     // longest command line, without the terminating NUL
  uint32_t kernel_alignment = 0;
  bool relocatable = false;
  uint64_t pref_address = 0;
  uint32_t init_size = 0;        // linear memory the kernel needs from its load address
  uint64_t setup_header_end = 0; // file offset just past the setup header
};

// One PT_LOAD segment; [file_offset, file_offset + file_size) is inside the file and
// mem_size >= file_size.
struct ElfSegment {
  uint64_t file_offset = 0;
  uint64_t file_size = 0;
  uint64_t paddr = 0;
  uint64_t mem_size = 0;
};

struct ElfInfo {
  uint64_t entry = 0;                  // e_entry
  std::vector<ElfSegment> segments;    // PT_LOAD segments, in file order
  std::optional<uint32_t> pvh_entry;   // XEN_ELFNOTE_PHYS32_ENTRY, when present
};

struct KernelImage {
  KernelFormat format = KernelFormat::kBzImage;
  BzImageInfo bzimage;  // valid when format == kBzImage
  ElfInfo elf;          // valid when format == kElf
};

// Detects the format from the file's contents and validates it. Errors are config errors
// prefixed with "kernel image: ".
Result<KernelImage> parse_kernel_image(std::span<const uint8_t> image);

// Parses the setup header of a bzImage (the caller already saw "HdrS" or wants the checks).
Result<BzImageInfo> parse_bzimage(std::span<const uint8_t> image);

// Parses an ELF64 x86_64 executable: program headers, PT_LOAD segments and PT_NOTE notes.
Result<ElfInfo> parse_elf(std::span<const uint8_t> image);

}  // namespace skiff::x86
