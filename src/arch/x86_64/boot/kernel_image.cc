// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/boot/kernel_image.h"

#include <asm/bootparam.h>
#include <elf.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>

#include <fmt/format.h>

namespace skiff::x86 {
namespace {

std::unexpected<Error> image_error(const std::string& message) {
  return config_error("kernel image: " + message);
}

// Copies a trivially copyable T out of the file at `offset`; the caller has checked bounds.
template <typename T>
T load(std::span<const uint8_t> image, uint64_t offset) {
  T value;
  std::memcpy(&value, image.data() + offset, sizeof(T));
  return value;
}

// True when [offset, offset + len) lies inside a file of `size` bytes, without overflow.
bool in_file(uint64_t size, uint64_t offset, uint64_t len) {
  return offset <= size && len <= size - offset;
}

uint64_t align_up4(uint64_t value) { return (value + 3) & ~uint64_t{3}; }

std::string magic_bytes(std::span<const uint8_t> image) {
  std::string out;
  for (size_t i = 0; i < 4 && i < image.size(); ++i) {
    if (!out.empty()) out += ' ';
    out += fmt::format("{:02x}", image[i]);
  }
  return out.empty() ? "empty file" : out;
}

bool has_elf_magic(std::span<const uint8_t> image) {
  return image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0;
}

bool has_bzimage_magic(std::span<const uint8_t> image) {
  return in_file(image.size(), kHeaderMagicOffset, sizeof(uint32_t)) &&
         load<uint32_t>(image, kHeaderMagicOffset) == kHeaderMagic;
}

// Walks the notes of one PT_NOTE segment looking for the Xen PVH entry note. Each note is
// a 12-byte header (namesz, descsz, type), then the name and the descriptor, each padded to
// a multiple of 4 bytes (ELF gABI, "Note Section").
Result<std::optional<uint32_t>> find_pvh_note(std::span<const uint8_t> notes, size_t phdr_index) {
  std::optional<uint32_t> entry;
  uint64_t offset = 0;
  constexpr uint64_t kNoteHeaderSize = 3 * sizeof(uint32_t);
  while (notes.size() - offset >= kNoteHeaderSize) {
    const uint64_t namesz = load<uint32_t>(notes, offset);
    const uint64_t descsz = load<uint32_t>(notes, offset + 4);
    const uint32_t type = load<uint32_t>(notes, offset + 8);
    const uint64_t name_offset = offset + kNoteHeaderSize;
    // namesz/descsz are 32-bit values held in 64 bits, so the padding cannot overflow.
    const uint64_t name_padded = align_up4(namesz);
    const uint64_t desc_padded = align_up4(descsz);
    if (!in_file(notes.size(), name_offset, name_padded) ||
        !in_file(notes.size(), name_offset + name_padded, descsz)) {
      return image_error(fmt::format(
          "ELF program header {}: note at offset {:#x} (namesz {}, descsz {}) runs past the end "
          "of its PT_NOTE segment ({} bytes)",
          phdr_index, offset, namesz, descsz, notes.size()));
    }
    const uint64_t desc_offset = name_offset + name_padded;
    // The name is "Xen" with its NUL (namesz 4); tolerate a writer that left the NUL out.
    const bool is_xen = (namesz == 4 || namesz == 3) &&
                        std::memcmp(notes.data() + name_offset, "Xen", 3) == 0 &&
                        (namesz == 3 || notes[name_offset + 3] == 0);
    if (is_xen && type == kXenElfNotePhys32Entry) {
      // Linux emits the entry with _ASM_PTR: 8 bytes on x86_64, 4 on i386.
      uint64_t value = 0;
      if (descsz == 4) {
        value = load<uint32_t>(notes, desc_offset);
      } else if (descsz == 8) {
        value = load<uint64_t>(notes, desc_offset);
      } else {
        return image_error(fmt::format(
            "ELF Xen PHYS32_ENTRY note has a {}-byte descriptor, expected 4 or 8", descsz));
      }
      if (value > UINT32_MAX) {
        return image_error(fmt::format(
            "ELF Xen PHYS32_ENTRY note entry {:#x} is not a 32-bit address", value));
      }
      entry = static_cast<uint32_t>(value);
    }
    // The last note's descriptor padding may be missing at the end of the segment.
    offset = desc_offset + std::min<uint64_t>(desc_padded, notes.size() - desc_offset);
  }
  return entry;
}

}  // namespace

const char* kernel_format_name(KernelFormat format) {
  switch (format) {
    case KernelFormat::kBzImage:
      return "bzImage";
    case KernelFormat::kElf:
      return "ELF";
  }
  return "unknown";
}

Result<BzImageInfo> parse_bzimage(std::span<const uint8_t> image) {
  const uint64_t size = image.size();
  constexpr uint64_t kHeaderEnd = kSetupHeaderOffset + sizeof(setup_header);
  if (size < kHeaderEnd) {
    return image_error(fmt::format(
        "bzImage truncated: {} bytes, the setup header alone needs {}", size, kHeaderEnd));
  }
  const setup_header header = load<setup_header>(image, kSetupHeaderOffset);

  // boot.rst: "boot_flag: Contains 0xAA55. This is the closest thing old Linux kernels have
  // to a magic number."
  // setup_header is packed: its fields go to fmt::format (which binds references) as copies,
  // since a reference to a misaligned member is undefined behaviour (found by the fuzzer).
  if (header.boot_flag != kBootFlagMagic) {
    return image_error(fmt::format("bzImage boot_flag at {:#x} is {:#06x}, expected {:#06x}",
                                   kBootFlagOffset, uint16_t{header.boot_flag}, kBootFlagMagic));
  }
  // "header: Contains the magic number "HdrS" (0x53726448)." Absent before protocol 2.00.
  if (header.header != kHeaderMagic) {
    return image_error(fmt::format(
        "boot sector without the \"HdrS\" magic at {:#x}: the kernel's boot protocol is older "
        "than 2.00; skiff needs {}.{:02} or newer",
        kHeaderMagicOffset, kMinBootProtocol >> 8, kMinBootProtocol & 0xff));
  }
  if (header.version < kMinBootProtocol) {
    return image_error(fmt::format(
        "bzImage boot protocol {}.{:02} is too old; skiff needs {}.{:02} or newer "
        "(cmdline_size, relocatable kernels)",
        header.version >> 8, header.version & 0xff, kMinBootProtocol >> 8,
        kMinBootProtocol & 0xff));
  }
  // "If this field is 0, the real value is 4." (setup_sects)
  BzImageInfo info;
  info.protocol_version = header.version;
  info.setup_sects = header.setup_sects == 0 ? kDefaultSetupSects : header.setup_sects;
  info.setup_size = (uint64_t{info.setup_sects} + 1) * kSectorSize;
  info.syssize = header.syssize;
  info.loadflags = header.loadflags;
  info.xloadflags = header.xloadflags;
  info.initrd_addr_max = header.initrd_addr_max;
  info.cmdline_size = header.cmdline_size;
  info.kernel_alignment = header.kernel_alignment;
  info.relocatable = header.relocatable_kernel != 0;
  info.pref_address = header.pref_address;
  info.init_size = header.init_size;
  // boot.rst: "the end of setup header can be calculated as follows: 0x0202 + byte value at
  // offset 0x0201".
  info.setup_header_end = kHeaderMagicOffset + image[0x201];

  // "LOADED_HIGH: If 0, the protected-mode code is loaded at 0x10000. If 1, the
  // protected-mode code is loaded at 0x100000." A zImage cannot be loaded at 1 MiB.
  if ((header.loadflags & LOADED_HIGH) == 0) {
    return image_error("zImage (loadflags LOADED_HIGH clear) is not supported; use a bzImage");
  }
  // "XLF_KERNEL_64: This kernel has the legacy 64-bit entry point at 0x200." (2.12+)
  if ((header.xloadflags & XLF_KERNEL_64) == 0) {
    return image_error(fmt::format(
        "bzImage (boot protocol {}.{:02}) has no 64-bit entry point (xloadflags XLF_KERNEL_64 "
        "clear): it is a 32-bit kernel or older than protocol 2.12",
        header.version >> 8, header.version & 0xff));
  }

  if (size < info.setup_size) {
    return image_error(fmt::format(
        "bzImage truncated: setup needs {} bytes ({} sectors + boot sector), file has {}",
        info.setup_size, info.setup_sects, size));
  }
  // syssize: "The size of the protected-mode code in units of 16-byte paragraphs."
  const uint64_t protected_mode_size = uint64_t{header.syssize} * 16;
  if (protected_mode_size == 0) {
    return image_error("bzImage syssize is 0: no protected-mode code");
  }
  if (size - info.setup_size < protected_mode_size) {
    return image_error(fmt::format(
        "bzImage truncated: setup ({} bytes) + protected-mode code ({} bytes, syssize {}) "
        "needs {} bytes, file has {}",
        info.setup_size, protected_mode_size, uint32_t{header.syssize},
        info.setup_size + protected_mode_size, size));
  }
  info.payload_offset = info.setup_size;
  info.payload_size = size - info.setup_size;
  // init_size: "the amount of contiguous linear memory starting at the kernel runtime start
  // address that the kernel needs before it is capable of examining its memory map."
  if (info.init_size == 0) {
    return image_error("bzImage init_size is 0");
  }
  if (info.relocatable && (info.kernel_alignment == 0 ||
                           (info.kernel_alignment & (info.kernel_alignment - 1)) != 0)) {
    return image_error(fmt::format("bzImage kernel_alignment {:#x} is not a power of two",
                                   info.kernel_alignment));
  }
  return info;
}

Result<ElfInfo> parse_elf(std::span<const uint8_t> image) {
  const uint64_t size = image.size();
  if (size < sizeof(Elf64_Ehdr)) {
    return image_error(fmt::format("ELF truncated: {} bytes, the ELF64 header needs {}", size,
                                   sizeof(Elf64_Ehdr)));
  }
  const Elf64_Ehdr ehdr = load<Elf64_Ehdr>(image, 0);
  if (ehdr.e_ident[EI_CLASS] != ELFCLASS64) {
    return image_error(fmt::format("ELF class {} is not ELF64", ehdr.e_ident[EI_CLASS]));
  }
  if (ehdr.e_ident[EI_DATA] != ELFDATA2LSB) {
    return image_error("ELF is not little-endian");
  }
  if (ehdr.e_machine != EM_X86_64) {
    return image_error(fmt::format("ELF machine {} is not x86_64 ({})", ehdr.e_machine,
                                   EM_X86_64));
  }
  if (ehdr.e_type != ET_EXEC) {
    return image_error(fmt::format("ELF type {} is not an executable (ET_EXEC)", ehdr.e_type));
  }
  if (ehdr.e_phentsize < sizeof(Elf64_Phdr)) {
    return image_error(fmt::format("ELF e_phentsize {} is smaller than an Elf64_Phdr ({})",
                                   ehdr.e_phentsize, sizeof(Elf64_Phdr)));
  }
  // PN_XNUM means the real count lives in section header 0; kernels never need it.
  if (ehdr.e_phnum == 0 || ehdr.e_phnum == PN_XNUM) {
    return image_error(fmt::format("ELF e_phnum {} is not a usable program header count",
                                   ehdr.e_phnum));
  }
  // Both factors are 16-bit, so the product cannot overflow; in_file checks the addition.
  const uint64_t table_size = uint64_t{ehdr.e_phentsize} * ehdr.e_phnum;
  if (!in_file(size, ehdr.e_phoff, table_size)) {
    return image_error(fmt::format(
        "ELF program header table (offset {:#x}, {} entries of {} bytes) runs past the end of "
        "the file ({} bytes)",
        ehdr.e_phoff, ehdr.e_phnum, ehdr.e_phentsize, size));
  }

  ElfInfo info;
  info.entry = ehdr.e_entry;
  for (size_t i = 0; i < ehdr.e_phnum; ++i) {
    const Elf64_Phdr phdr = load<Elf64_Phdr>(image, ehdr.e_phoff + i * ehdr.e_phentsize);
    if (phdr.p_type != PT_LOAD && phdr.p_type != PT_NOTE) continue;
    if (!in_file(size, phdr.p_offset, phdr.p_filesz)) {
      return image_error(fmt::format(
          "ELF program header {}: file range [{:#x}, +{:#x}) runs past the end of the file "
          "({} bytes)",
          i, phdr.p_offset, phdr.p_filesz, size));
    }
    if (phdr.p_type == PT_NOTE) {
      auto entry = find_pvh_note(image.subspan(phdr.p_offset, phdr.p_filesz), i);
      if (!entry) return std::unexpected(entry.error());
      if (*entry) info.pvh_entry = *entry;
      continue;
    }
    if (phdr.p_memsz < phdr.p_filesz) {
      return image_error(fmt::format("ELF program header {}: p_memsz {:#x} < p_filesz {:#x}", i,
                                     phdr.p_memsz, phdr.p_filesz));
    }
    if (phdr.p_paddr + phdr.p_memsz < phdr.p_paddr) {
      return image_error(fmt::format(
          "ELF program header {}: [{:#x}, +{:#x}) wraps around the address space", i,
          phdr.p_paddr, phdr.p_memsz));
    }
    if (phdr.p_memsz == 0) continue;
    info.segments.push_back(ElfSegment{.file_offset = phdr.p_offset,
                                       .file_size = phdr.p_filesz,
                                       .paddr = phdr.p_paddr,
                                       .mem_size = phdr.p_memsz});
  }
  if (info.segments.empty()) {
    return image_error("ELF has no loadable (PT_LOAD) segment");
  }
  return info;
}

Result<KernelImage> parse_kernel_image(std::span<const uint8_t> image) {
  KernelImage kernel;
  if (has_elf_magic(image)) {
    auto elf = parse_elf(image);
    if (!elf) return std::unexpected(elf.error());
    kernel.format = KernelFormat::kElf;
    kernel.elf = std::move(*elf);
    return kernel;
  }
  const bool boot_sector = in_file(image.size(), kBootFlagOffset, sizeof(uint16_t)) &&
                           load<uint16_t>(image, kBootFlagOffset) == kBootFlagMagic;
  if (has_bzimage_magic(image) || boot_sector) {
    auto bzimage = parse_bzimage(image);
    if (!bzimage) return std::unexpected(bzimage.error());
    kernel.format = KernelFormat::kBzImage;
    kernel.bzimage = *bzimage;
    return kernel;
  }
  return image_error(fmt::format("not a bzImage or ELF64 x86_64 file (magic {})",
                                 magic_bytes(image)));
}

}  // namespace skiff::x86
