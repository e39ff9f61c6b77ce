// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/boot/cpu_boot_state.h"

#include <array>
#include <type_traits>

#include <fmt/format.h>

#include "arch/x86_64/layout.h"

namespace skiff::x86 {
namespace {

constexpr uint64_t kEntriesPerTable = 512;
constexpr uint64_t kLargePageSize = 2 * kMiB;
constexpr uint64_t kPageDirectories = kIdentityMappedBytes / (kEntriesPerTable * kLargePageSize);
static_assert(kPageDirectories == 4);
static_assert(kPdAddr + kPageDirectories * kPageSize <= kCmdlineAddr);
static_assert(kBootGdtAddr + kBootGdtEntries * 8 <= kBootIdtAddr);

using PageTable = std::array<uint64_t, kEntriesPerTable>;

// A segment descriptor's fields, in the units the GDT stores them (limit in granules).
struct Descriptor {
  uint32_t base = 0;
  uint32_t limit = 0;  // 20 bits
  uint8_t type = 0;    // 4 bits
  bool system = false; // S=0: system segment (TSS); S=1: code/data
  uint8_t dpl = 0;
  bool present = true;
  bool long_mode = false;  // L
  bool big = false;        // D/B
  bool granularity = false; // G: limit counted in 4 KiB units
};

// Segment types (Intel SDM Vol. 3A, 3.4.5.1 "Code- and Data-Segment Descriptor Types" and
// 3.5 "System Descriptor Types").
constexpr uint8_t kTypeCodeExecReadAccessed = 0xb;
constexpr uint8_t kTypeDataReadWriteAccessed = 0x3;
constexpr uint8_t kTypeBusyTss = 0xb;  // 32-bit busy TSS; 64-bit busy TSS in long mode

constexpr Descriptor kCode32{.limit = 0xfffff, .type = kTypeCodeExecReadAccessed,
                             .system = false, .big = true, .granularity = true};
constexpr Descriptor kCode64{.limit = 0xfffff, .type = kTypeCodeExecReadAccessed,
                             .long_mode = true, .granularity = true};
constexpr Descriptor kData{.limit = 0xfffff, .type = kTypeDataReadWriteAccessed, .big = true,
                           .granularity = true};
// Only the hidden part of TR is loaded (there is no TSS descriptor in the boot GDT): the
// PVH ABI asks for "a 32-bit TSS (active) with a base of '0' and a limit of '0x67'", and
// VM entry needs a busy TSS in TR in every mode.
constexpr Descriptor kTss{.limit = 0x67, .type = kTypeBusyTss, .system = true};

// Encodes the 8-byte GDT form (Intel SDM Vol. 3A, 3.4.5 "Segment Descriptors").
constexpr uint64_t encode(const Descriptor& d) {
  // The S bit is 1 for code/data segments.
  const uint64_t access = uint64_t{d.type} | (d.system ? 0 : 1ull << 4) |
                          (uint64_t{d.dpl} & 3) << 5 | (d.present ? 1ull << 7 : 0);
  const uint64_t flags = (d.long_mode ? 1ull << 1 : 0) | (d.big ? 1ull << 2 : 0) |
                         (d.granularity ? 1ull << 3 : 0);
  return (uint64_t{d.limit} & 0xffff) | (uint64_t{d.base} & 0xffffff) << 16 | access << 40 |
         (uint64_t{d.limit} >> 16 & 0xf) << 48 | flags << 52 |
         (uint64_t{d.base} >> 24 & 0xff) << 56;
}

// The hidden segment-register state KVM loads for the same descriptor.
kvm_segment to_kvm_segment(const Descriptor& d, uint16_t selector) {
  kvm_segment segment{};
  segment.base = d.base;
  segment.limit = d.granularity ? (d.limit << 12) | 0xfff : d.limit;
  segment.selector = selector;
  segment.type = d.type;
  segment.present = d.present ? 1 : 0;
  segment.dpl = d.dpl;
  segment.db = d.big ? 1 : 0;
  segment.s = d.system ? 0 : 1;
  segment.l = d.long_mode ? 1 : 0;
  segment.g = d.granularity ? 1 : 0;
  segment.avl = 0;
  segment.unusable = 0;
  return segment;
}

template <typename T>
Result<void> write_boot_obj(const GuestMemory& mem, uint64_t gpa, const T& value,
                            std::string_view what) {
  static_assert(std::is_trivially_copyable_v<T>);
  auto written = mem.write_obj(gpa, value);
  if (!written) {
    return config_error(fmt::format("{} ({} bytes at {:#x}): {}", what, sizeof(T), gpa,
                                    written.error().message()));
  }
  return {};
}

}  // namespace

Result<void> write_boot_page_tables(const GuestMemory& mem) {
  PageTable pml4{};
  pml4[0] = kPdptAddr | kPtePresent | kPteWritable;
  auto written = write_boot_obj(mem, kPml4Addr, pml4, "boot PML4");
  if (!written) return written;

  PageTable pdpt{};
  for (uint64_t i = 0; i < kPageDirectories; ++i) {
    pdpt[i] = (kPdAddr + i * kPageSize) | kPtePresent | kPteWritable;
  }
  written = write_boot_obj(mem, kPdptAddr, pdpt, "boot PDPT");
  if (!written) return written;

  for (uint64_t dir = 0; dir < kPageDirectories; ++dir) {
    PageTable pd{};
    for (uint64_t i = 0; i < kEntriesPerTable; ++i) {
      const uint64_t address = (dir * kEntriesPerTable + i) * kLargePageSize;
      pd[i] = address | kPtePresent | kPteWritable | kPteLargePage;
    }
    written = write_boot_obj(mem, kPdAddr + dir * kPageSize, pd,
                             fmt::format("boot page directory {}", dir));
    if (!written) return written;
  }
  return {};
}

Result<void> write_boot_gdt(const GuestMemory& mem) {
  const std::array<uint64_t, kBootGdtEntries> gdt = {0, encode(kCode32), encode(kCode64),
                                                     encode(kData)};
  static_assert(kBootCode32Selector == 1 * 8 && kBootCode64Selector == 2 * 8 &&
                kBootDataSelector == 3 * 8);
  auto written = write_boot_obj(mem, kBootGdtAddr, gdt, "boot GDT");
  if (!written) return written;
  const std::array<uint8_t, kBootIdtSize> idt{};
  return write_boot_obj(mem, kBootIdtAddr, idt, "boot IDT");
}

void setup_boot_registers(const BootPlan& plan, kvm_regs* regs, kvm_sregs* sregs) {
  *regs = kvm_regs{};
  regs->rflags = kRflagsReserved;  // IF, TF and VM clear, as both entry ABIs require
  regs->rip = plan.entry;

  sregs->gdt.base = kBootGdtAddr;
  sregs->gdt.limit = static_cast<uint16_t>(kBootGdtEntries * 8 - 1);
  sregs->idt.base = kBootIdtAddr;
  sregs->idt.limit = static_cast<uint16_t>(kBootIdtSize - 1);

  const kvm_segment data = to_kvm_segment(kData, kBootDataSelector);
  sregs->ds = data;
  sregs->es = data;
  sregs->fs = data;
  sregs->gs = data;
  sregs->ss = data;
  sregs->tr = to_kvm_segment(kTss, 0);

  if (plan.pvh_entry) {
    // pvh.pandoc: "ebx: contains the physical memory address where the loader has placed
    // the boot start info structure"; "cr0: bit 0 (PE) must be set. All the other writeable
    // bits are cleared"; "cr4: all bits are cleared"; cs a flat 32-bit code segment.
    regs->rbx = plan.boot_params_addr;
    sregs->cs = to_kvm_segment(kCode32, kBootCode32Selector);
    sregs->cr0 = kCr0Pe | kCr0Et;  // ET is hard-wired to 1
    sregs->cr3 = 0;
    sregs->cr4 = 0;
    sregs->efer &= ~(kEferLme | kEferLma);
    return;
  }

  // boot.rst, 64-bit BOOT PROTOCOL: "the CPU must be in 64-bit mode with paging enabled",
  // "CS must be __BOOT_CS and DS, ES, SS must be __BOOT_DS", "%rsi must hold the base
  // address of the struct boot_params".
  regs->rsi = plan.boot_params_addr;
  regs->rsp = kBootStackTop;
  regs->rbp = kBootStackTop;
  sregs->cs = to_kvm_segment(kCode64, kBootCode64Selector);
  sregs->cr0 = kCr0Pe | kCr0Et | kCr0Pg;
  sregs->cr3 = kPml4Addr;
  sregs->cr4 = kCr4Pae;
  sregs->efer |= kEferLme | kEferLma;
}

}  // namespace skiff::x86
