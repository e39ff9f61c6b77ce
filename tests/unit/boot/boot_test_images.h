// SPDX-License-Identifier: Apache-2.0
// Builders for synthetic kernel images (bzImage, ELF64 with optional notes) and guest
// memory over host buffers, shared by the boot tests.
#pragma once

#include <asm/bootparam.h>
#include <elf.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "arch/x86_64/layout.h"
#include "memory/guest_memory.h"

namespace skiff::x86::boot_test {

// ---- bzImage -----------------------------------------------------------------------------

struct BzImageOptions {
  uint8_t setup_sects = 4;
  uint16_t version = 0x020f;
  uint16_t boot_flag = 0xaa55;
  uint32_t header_magic = 0x53726448;  // "HdrS"
  uint8_t loadflags = LOADED_HIGH;
  uint16_t xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
  uint32_t initrd_addr_max = 0x7fffffff;
  uint32_t cmdline_size = 2047;
  uint32_t kernel_alignment = 0x200000;
  uint8_t relocatable = 1;
  uint64_t pref_address = 0x1000000;  // LOAD_PHYSICAL_ADDR, 16 MiB
  uint32_t init_size = 0x400000;      // 4 MiB
  uint64_t payload_size = 0x3000;     // protected-mode code bytes
  std::optional<uint32_t> syssize = std::nullopt;    // default: payload_size / 16, rounded up
  std::optional<uint64_t> truncate_to = std::nullopt;
};

// Fills byte i of the protected-mode code with a recognisable pattern.
inline uint8_t payload_byte(uint64_t i) { return static_cast<uint8_t>(0x40 + i * 7); }

inline std::vector<uint8_t> make_bzimage(const BzImageOptions& o = {}) {
  const uint64_t sects = o.setup_sects == 0 ? 4 : o.setup_sects;
  const uint64_t setup_size = (sects + 1) * 512;
  std::vector<uint8_t> image(setup_size + o.payload_size, 0);
  setup_header h{};
  h.setup_sects = o.setup_sects;
  h.syssize = o.syssize.value_or(static_cast<uint32_t>((o.payload_size + 15) / 16));
  h.vid_mode = 0xffff;
  h.boot_flag = o.boot_flag;
  h.jump = 0x66eb;  // "jmp short": byte 0x201 = 0x66, header ends at 0x268
  h.header = o.header_magic;
  h.version = o.version;
  h.loadflags = o.loadflags;
  h.code32_start = 0x100000;
  h.initrd_addr_max = o.initrd_addr_max;
  h.kernel_alignment = o.kernel_alignment;
  h.relocatable_kernel = o.relocatable;
  h.min_alignment = 21;
  h.xloadflags = o.xloadflags;
  h.cmdline_size = o.cmdline_size;
  h.pref_address = o.pref_address;
  h.init_size = o.init_size;
  std::memcpy(image.data() + 0x1f1, &h, sizeof(h));
  for (uint64_t i = 0; i < o.payload_size; ++i) image[setup_size + i] = payload_byte(i);
  if (o.truncate_to) image.resize(*o.truncate_to);
  return image;
}

// ---- ELF64 -------------------------------------------------------------------------------

struct ElfSegmentSpec {
  uint64_t paddr = 0;
  std::vector<uint8_t> data = {};
  uint64_t mem_size = 0;  // 0: data.size()
};

struct ElfNoteSpec {
  std::string name = {};  // written with its NUL; namesz = name.size() + 1 unless overridden
  uint32_t type = 0;
  std::vector<uint8_t> desc = {};
  std::optional<uint32_t> namesz_override = std::nullopt;
  std::optional<uint32_t> descsz_override = std::nullopt;
};

struct ElfOptions {
  uint8_t elf_class = ELFCLASS64;
  uint16_t machine = EM_X86_64;
  uint16_t type = ET_EXEC;
  uint64_t entry = 0x1000000;
  std::vector<ElfSegmentSpec> segments = {
      {.paddr = 0x1000000, .data = std::vector<uint8_t>(0x2000, 0x90), .mem_size = 0x3000}};
  std::vector<ElfNoteSpec> notes = {};
  std::optional<uint16_t> phnum_override = std::nullopt;
};

inline std::vector<uint8_t> pvh_note_desc(uint64_t entry, size_t bytes) {
  std::vector<uint8_t> desc(bytes);
  std::memcpy(desc.data(), &entry, bytes);
  return desc;
}

inline ElfNoteSpec xen_pvh_note(uint64_t entry, size_t desc_bytes = 8) {
  return ElfNoteSpec{.name = "Xen", .type = 18, .desc = pvh_note_desc(entry, desc_bytes)};
}

inline void append_padded(std::vector<uint8_t>& out, const void* data, size_t len) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  out.insert(out.end(), bytes, bytes + len);
  while (out.size() % 4 != 0) out.push_back(0);
}

inline std::vector<uint8_t> encode_notes(const std::vector<ElfNoteSpec>& notes) {
  std::vector<uint8_t> out;
  for (const ElfNoteSpec& n : notes) {
    const uint32_t header[3] = {
        n.namesz_override.value_or(static_cast<uint32_t>(n.name.size() + 1)),
        n.descsz_override.value_or(static_cast<uint32_t>(n.desc.size())), n.type};
    append_padded(out, header, sizeof(header));
    append_padded(out, n.name.c_str(), n.name.size() + 1);
    append_padded(out, n.desc.data(), n.desc.size());
  }
  return out;
}

// Layout: Elf64_Ehdr, program headers (PT_NOTE first when there are notes, then one PT_LOAD
// per segment), the note bytes, then each segment's data.
inline std::vector<uint8_t> make_elf(const ElfOptions& o = {}) {
  const std::vector<uint8_t> notes = encode_notes(o.notes);
  const size_t phnum = o.segments.size() + (o.notes.empty() ? 0 : 1);
  const uint64_t phoff = sizeof(Elf64_Ehdr);
  uint64_t offset = phoff + phnum * sizeof(Elf64_Phdr);
  std::vector<Elf64_Phdr> phdrs;
  if (!o.notes.empty()) {
    Elf64_Phdr p{};
    p.p_type = PT_NOTE;
    p.p_offset = offset;
    p.p_filesz = notes.size();
    p.p_align = 4;
    phdrs.push_back(p);
    offset += notes.size();
  }
  for (const ElfSegmentSpec& s : o.segments) {
    Elf64_Phdr p{};
    p.p_type = PT_LOAD;
    p.p_flags = PF_R | PF_W | PF_X;
    p.p_offset = offset;
    p.p_vaddr = 0xffffffff80000000ull + s.paddr;
    p.p_paddr = s.paddr;
    p.p_filesz = s.data.size();
    p.p_memsz = s.mem_size == 0 ? s.data.size() : s.mem_size;
    p.p_align = 0x200000;
    phdrs.push_back(p);
    offset += s.data.size();
  }

  Elf64_Ehdr e{};
  std::memcpy(e.e_ident, ELFMAG, SELFMAG);
  e.e_ident[EI_CLASS] = o.elf_class;
  e.e_ident[EI_DATA] = ELFDATA2LSB;
  e.e_ident[EI_VERSION] = EV_CURRENT;
  e.e_type = o.type;
  e.e_machine = o.machine;
  e.e_version = EV_CURRENT;
  e.e_entry = o.entry;
  e.e_phoff = phoff;
  e.e_ehsize = sizeof(Elf64_Ehdr);
  e.e_phentsize = sizeof(Elf64_Phdr);
  e.e_phnum = o.phnum_override.value_or(static_cast<uint16_t>(phnum));

  std::vector<uint8_t> image(sizeof(e));
  std::memcpy(image.data(), &e, sizeof(e));
  for (const Elf64_Phdr& p : phdrs) {
    const size_t at = image.size();
    image.resize(at + sizeof(p));
    std::memcpy(image.data() + at, &p, sizeof(p));
  }
  image.insert(image.end(), notes.begin(), notes.end());
  for (const ElfSegmentSpec& s : o.segments) {
    image.insert(image.end(), s.data.begin(), s.data.end());
  }
  return image;
}

// Offset of program header `index` in an image built by make_elf.
inline uint64_t phdr_offset(size_t index) {
  return sizeof(Elf64_Ehdr) + index * sizeof(Elf64_Phdr);
}

template <typename T>
T read_at(const std::vector<uint8_t>& image, uint64_t offset) {
  T value;
  std::memcpy(&value, image.data() + offset, sizeof(T));
  return value;
}

template <typename T>
void write_at(std::vector<uint8_t>& image, uint64_t offset, const T& value) {
  std::memcpy(image.data() + offset, &value, sizeof(T));
}

// ---- guest memory --------------------------------------------------------------------------

// An anonymous, unreserved mapping: large guest regions (3 GiB below the hole) cost only the
// pages a test touches.
class MappedBuffer {
 public:
  explicit MappedBuffer(uint64_t size) : size_(size) {
    // SAFETY: a fresh private anonymous mapping owned by this object, unmapped in the dtor.
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~MappedBuffer() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  MappedBuffer(const MappedBuffer&) = delete;
  MappedBuffer& operator=(const MappedBuffer&) = delete;
  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Guest RAM: [0, low_size) and, when high_size != 0, [4 GiB, 4 GiB + high_size).
class TestGuest {
 public:
  explicit TestGuest(uint64_t low_size = 64 * kMiB, uint64_t high_size = 0)
      : low_(low_size), high_(high_size == 0 ? kPageSize : high_size) {
    std::vector<GuestRegion> regions;
    regions.push_back(GuestRegion{.gpa = 0, .size = low_size, .host = low_.data()});
    if (high_size != 0) {
      regions.push_back(
          GuestRegion{.gpa = kRamAboveHoleStart, .size = high_size, .host = high_.data()});
    }
    mem_ = GuestMemory::from_host_buffers(regions);
  }
  const GuestMemory& mem() const { return mem_; }
  bool ok() const { return low_.data() != nullptr && high_.data() != nullptr; }

  // Host bytes of [gpa, gpa + len) in the low region.
  std::vector<uint8_t> bytes(uint64_t gpa, uint64_t len) const {
    return std::vector<uint8_t>(low_.data() + gpa, low_.data() + gpa + len);
  }
  template <typename T>
  T obj(uint64_t gpa) const {
    T value;
    std::memcpy(&value, low_.data() + gpa, sizeof(T));
    return value;
  }
  void fill_low(uint8_t value) { std::memset(low_.data(), value, low_.size()); }

 private:
  MappedBuffer low_;
  MappedBuffer high_;
  GuestMemory mem_;
};

}  // namespace skiff::x86::boot_test
