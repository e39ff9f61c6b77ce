// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/boot/boot_loader.h"

#include <asm/bootparam.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff::x86 {
namespace {

static_assert(sizeof(boot_params) == kPageSize, "the zero page is one page");
static_assert(kZeroPageAddr + sizeof(boot_params) <= kPml4Addr);

// boot.rst: "type_of_loader ... 0xFF if no assigned ID".
constexpr uint8_t kUndefinedLoader = 0xff;
// boot.rst, heap_end_ptr: "Set this field to the offset (from the beginning of the real-mode
// code) of the end of the setup stack/heap, minus 0x0200." The conventional real-mode
// segment is 0xe000 bytes long ("the setup heap and stack ... end at 0xe000" in the
// protocol's memory layout for modern kernels).
constexpr uint16_t kHeapEndPtr = 0xe000 - 0x200;
// Boot protocol version advertised in a zero page built from scratch (ELF vmlinux path).
constexpr uint16_t kSyntheticBootProtocol = 0x020f;
// Alignment advertised for a vmlinux: the kernel does not relocate itself on this path.
constexpr uint32_t kSyntheticKernelAlignment = 0x200000;

uint64_t align_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) & ~(alignment - 1);
}
uint64_t align_down(uint64_t value, uint64_t alignment) { return value & ~(alignment - 1); }

uint64_t mib_rounded_up(uint64_t bytes) { return bytes / kMiB + (bytes % kMiB != 0 ? 1 : 0); }

// Turns a GuestMemory failure while loading into a config error saying what was written.
Result<void> write_guest(const GuestMemory& mem, uint64_t gpa, std::span<const uint8_t> data,
                         std::string_view what) {
  auto written = mem.write(gpa, data);
  if (!written) {
    return config_error(fmt::format("{} ({} bytes at {:#x}): {}", what, data.size(), gpa,
                                    written.error().message()));
  }
  return {};
}

template <typename T>
Result<void> write_guest_obj(const GuestMemory& mem, uint64_t gpa, const T& value,
                             std::string_view what) {
  static_assert(std::is_trivially_copyable_v<T>);
  // SAFETY: T is trivially copyable, so its object representation is a valid byte view.
  return write_guest(mem, gpa,
                     std::span(reinterpret_cast<const uint8_t*>(&value), sizeof(T)), what);
}

// End of the RAM region that holds the kernel load address, clipped at 4 GiB: everything the
// boot path places (kernel, initrd, boot structures) must be below it.
Result<uint64_t> low_ram_end(const GuestMemory& mem) {
  const GuestRegion* region = mem.find_region(0);
  if (region == nullptr || region->end() <= kHighMemStart) {
    return config_error(fmt::format(
        "guest memory must have a RAM region starting at 0 that extends past {} MiB",
        kHighMemStart / kMiB));
  }
  return std::min(region->end(), kIdentityMappedBytes);
}

Result<void> check_cmdline(std::string_view cmdline, uint64_t kernel_limit) {
  if (cmdline.find('\0') != std::string_view::npos) {
    return config_error("kernel command line contains a NUL byte");
  }
  if (cmdline.size() > kernel_limit) {
    return config_error(fmt::format(
        "kernel command line is {} bytes; the kernel accepts at most {} (cmdline_size)",
        cmdline.size(), kernel_limit));
  }
  if (cmdline.size() + 1 > kCmdlineMaxSize) {
    return config_error(fmt::format(
        "kernel command line is {} bytes; skiff's buffer holds at most {} plus the NUL",
        cmdline.size(), kCmdlineMaxSize - 1));
  }
  return {};
}

Result<void> write_cmdline(const GuestMemory& mem, std::string_view cmdline) {
  std::vector<uint8_t> bytes(cmdline.begin(), cmdline.end());
  bytes.push_back(0);
  return write_guest(mem, kCmdlineAddr, bytes, "kernel command line");
}

// Places the initrd page-aligned as high as possible below min(addr_max + 1, low_end) and
// above kernel_end, and copies it there. Returns its address.
Result<uint64_t> load_initrd(const GuestMemory& mem, std::span<const uint8_t> initrd,
                             uint64_t kernel_end, uint64_t addr_max, uint64_t low_end) {
  // addr_max is inclusive: boot.rst, initrd_addr_max: "The maximum address that may be
  // occupied by the initial ramdisk/ramfs contents."
  const uint64_t limit = std::min(addr_max + 1, low_end);
  const uint64_t floor = align_up(kernel_end, kPageSize);
  const uint64_t size = initrd.size();
  const uint64_t room = limit > floor ? limit - floor : 0;
  if (size > limit || align_down(limit - size, kPageSize) < floor) {
    return config_error(fmt::format(
        "initrd ({} bytes, {} MiB) does not fit between the kernel's end {:#x} and {:#x} "
        "({} bytes free); give the VM more memory or use a smaller initrd",
        size, mib_rounded_up(size), floor, limit, room));
  }
  const uint64_t addr = align_down(limit - size, kPageSize);
  auto written = write_guest(mem, addr, initrd, "initrd");
  if (!written) return std::unexpected(written.error());
  return addr;
}

Result<void> fill_e820(const GuestMemory& mem, boot_params& params) {
  const std::vector<E820Entry> map = build_e820(mem);
  if (map.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    return internal_error(fmt::format("e820 map has {} entries; the zero page holds {}",
                                      map.size(), E820_MAX_ENTRIES_ZEROPAGE));
  }
  for (size_t i = 0; i < map.size(); ++i) {
    params.e820_table[i].addr = map[i].addr;
    params.e820_table[i].size = map[i].size;
    params.e820_table[i].type = map[i].type;
  }
  params.e820_entries = static_cast<uint8_t>(map.size());
  return {};
}

// Fields of the zero page that skiff fills the same way for a bzImage and a vmlinux.
Result<void> finish_zero_page(const GuestMemory& mem, boot_params& params, uint64_t initrd_addr,
                              uint64_t initrd_size, uint64_t acpi_rsdp_addr) {
  params.hdr.type_of_loader = kUndefinedLoader;
  params.hdr.loadflags |= CAN_USE_HEAP;
  params.hdr.heap_end_ptr = kHeapEndPtr;
  params.hdr.cmd_line_ptr = static_cast<uint32_t>(kCmdlineAddr);
  params.ext_cmd_line_ptr = 0;
  // The initrd is below 4 GiB, so the ext_ramdisk_* high halves stay zero.
  params.hdr.ramdisk_image = static_cast<uint32_t>(initrd_addr);
  params.hdr.ramdisk_size = static_cast<uint32_t>(initrd_size);
  // boot_params.acpi_rsdp_addr (protocol 2.14): used instead of scanning for the RSDP.
  params.acpi_rsdp_addr = acpi_rsdp_addr;
  auto e820 = fill_e820(mem, params);
  if (!e820) return e820;
  return write_guest_obj(mem, kZeroPageAddr, params, "zero page");
}

Result<BootPlan> load_bzimage(const GuestMemory& mem, std::span<const uint8_t> kernel,
                              const BzImageInfo& info, std::span<const uint8_t> initrd,
                              std::string_view cmdline, uint64_t acpi_rsdp_addr,
                              uint64_t low_end) {
  auto cmdline_ok = check_cmdline(cmdline, info.cmdline_size);
  if (!cmdline_ok) return std::unexpected(cmdline_ok.error());

  // Where the decompressor will run (arch/x86/boot/compressed/head_64.S): a relocatable
  // kernel rounds its load address up to kernel_alignment but never goes below its
  // LOAD_PHYSICAL_ADDR (= pref_address); a fixed one runs at LOAD_PHYSICAL_ADDR. It then
  // needs init_size bytes from there (boot.rst, init_size).
  const uint64_t load_addr = kKernelLoadAddr;
  uint64_t runtime_start = load_addr;
  if (info.relocatable) {
    runtime_start = std::max(align_up(load_addr, info.kernel_alignment), info.pref_address);
  } else if (info.pref_address != 0) {
    runtime_start = info.pref_address;
  }
  const uint64_t image_end = load_addr + info.payload_size;
  // pref_address comes from the file: saturate rather than wrap.
  const uint64_t runtime_end = runtime_start > UINT64_MAX - info.init_size
                                   ? UINT64_MAX
                                   : runtime_start + info.init_size;
  const uint64_t kernel_end = std::max(image_end, runtime_end);
  if (kernel_end > low_end) {
    return config_error(fmt::format(
        "kernel needs {} MiB of guest memory below 4 GiB ({} bytes of code at {:#x}, init_size "
        "{:#x} from {:#x}), but RAM there ends at {:#x} ({} MiB)",
        mib_rounded_up(kernel_end), info.payload_size, load_addr, info.init_size,
        runtime_start, low_end, low_end / kMiB));
  }
  auto code = write_guest(mem, load_addr, kernel.subspan(info.payload_offset),
                          "bzImage protected-mode code");
  if (!code) return std::unexpected(code.error());

  BootPlan plan;
  plan.format = KernelFormat::kBzImage;
  plan.entry = load_addr + kBzImage64BitEntryOffset;
  plan.boot_params_addr = kZeroPageAddr;
  plan.kernel_end = kernel_end;
  if (!initrd.empty()) {
    auto addr = load_initrd(mem, initrd, kernel_end, info.initrd_addr_max, low_end);
    if (!addr) return std::unexpected(addr.error());
    plan.initrd_addr = *addr;
    plan.initrd_size = initrd.size();
  }
  auto cmd = write_cmdline(mem, cmdline);
  if (!cmd) return std::unexpected(cmd.error());

  // boot.rst, "64-bit BOOT PROTOCOL": the loader fills a struct boot_params whose setup
  // header is copied from the kernel image, then sets the fields a loader owns.
  boot_params params{};
  const uint64_t header_end =
      std::min<uint64_t>(info.setup_header_end, kSetupHeaderOffset + sizeof(setup_header));
  std::memcpy(&params.hdr, kernel.data() + kSetupHeaderOffset, header_end - kSetupHeaderOffset);
  // Loader-owned fields that a crafted image could pre-fill: no setup_data chain, PC subarch.
  params.hdr.setup_data = 0;
  params.hdr.hardware_subarch = 0;
  params.hdr.hardware_subarch_data = 0;
  auto zero_page =
      finish_zero_page(mem, params, plan.initrd_addr, plan.initrd_size, acpi_rsdp_addr);
  if (!zero_page) return std::unexpected(zero_page.error());
  return plan;
}

bool inside_a_segment(const ElfInfo& info, uint64_t addr) {
  return std::any_of(info.segments.begin(), info.segments.end(), [addr](const ElfSegment& s) {
    return addr >= s.paddr && addr - s.paddr < s.mem_size;
  });
}

Result<BootPlan> load_elf(const GuestMemory& mem, std::span<const uint8_t> kernel,
                          const ElfInfo& info, std::span<const uint8_t> initrd,
                          std::string_view cmdline, uint64_t acpi_rsdp_addr, uint64_t low_end) {
  auto cmdline_ok = check_cmdline(cmdline, kCmdlineMaxSize - 1);
  if (!cmdline_ok) return std::unexpected(cmdline_ok.error());

  const uint64_t entry = info.pvh_entry ? *info.pvh_entry : info.entry;
  if (!inside_a_segment(info, entry)) {
    return config_error(fmt::format(
        "kernel image: ELF {} entry point {:#x} is not inside any loadable segment (a virtual "
        "e_entry?)",
        info.pvh_entry ? "PVH" : "e_entry", entry));
  }

  uint64_t kernel_end = 0;
  for (size_t i = 0; i < info.segments.size(); ++i) {
    const ElfSegment& segment = info.segments[i];
    const uint64_t end = segment.paddr + segment.mem_size;  // parse_elf checked the wrap
    // The boot structures (zero page, page tables, command line, MP/ACPI tables) live below
    // 1 MiB and are written after the segments: a segment there would be overwritten.
    if (segment.paddr < kHighMemStart) {
      return config_error(fmt::format(
          "kernel image: ELF segment {} [{:#x}, {:#x}) overlaps skiff's boot area below {} MiB",
          i, segment.paddr, end, kHighMemStart / kMiB));
    }
    if (!mem.contains(segment.paddr, segment.mem_size)) {
      return config_error(fmt::format(
          "kernel image: ELF segment {} [{:#x}, {:#x}) is outside guest RAM (the kernel needs "
          "{} MiB of guest memory)",
          i, segment.paddr, end, mib_rounded_up(end)));
    }
    auto bytes = write_guest(mem, segment.paddr,
                             kernel.subspan(segment.file_offset, segment.file_size),
                             fmt::format("ELF segment {}", i));
    if (!bytes) return std::unexpected(bytes.error());
    auto tail = mem.fill(segment.paddr + segment.file_size, 0,
                         segment.mem_size - segment.file_size);
    if (!tail) {
      return config_error(fmt::format("ELF segment {} zero fill: {}", i, tail.error().message()));
    }
    kernel_end = std::max(kernel_end, end);
  }

  BootPlan plan;
  plan.format = KernelFormat::kElf;
  plan.pvh_entry = info.pvh_entry.has_value();
  plan.entry = entry;
  plan.kernel_end = kernel_end;
  if (!initrd.empty()) {
    auto addr = load_initrd(mem, initrd, kernel_end, kDefaultInitrdAddrMax, low_end);
    if (!addr) return std::unexpected(addr.error());
    plan.initrd_addr = *addr;
    plan.initrd_size = initrd.size();
  }
  auto cmd = write_cmdline(mem, cmdline);
  if (!cmd) return std::unexpected(cmd.error());

  if (!plan.pvh_entry) {
    // A vmlinux entered at startup_64 still reads boot_params; there is no setup header in
    // the file, so build the fields a bzImage would have carried.
    plan.boot_params_addr = kZeroPageAddr;
    boot_params params{};
    params.hdr.boot_flag = kBootFlagMagic;
    params.hdr.header = kHeaderMagic;
    params.hdr.version = kSyntheticBootProtocol;
    params.hdr.loadflags = LOADED_HIGH;
    params.hdr.kernel_alignment = kSyntheticKernelAlignment;
    params.hdr.cmdline_size = static_cast<uint32_t>(kCmdlineMaxSize - 1);
    params.hdr.initrd_addr_max = static_cast<uint32_t>(kDefaultInitrdAddrMax);
    auto zero_page =
        finish_zero_page(mem, params, plan.initrd_addr, plan.initrd_size, acpi_rsdp_addr);
    if (!zero_page) return std::unexpected(zero_page.error());
    return plan;
  }

  // PVH boot (xen/include/public/arch-x86/hvm/start_info.h, docs/misc/pvh.pandoc): ebx
  // points at hvm_start_info; the command line, module list and memory map it names are
  // physical addresses, 0 meaning "not present".
  plan.boot_params_addr = kPvhStartInfoAddr;
  const std::vector<E820Entry> map = build_e820(mem);
  if (map.size() > kPvhMemmapMaxEntries) {
    return internal_error(fmt::format("PVH memory map has {} entries; room for {}", map.size(),
                                      kPvhMemmapMaxEntries));
  }
  std::vector<HvmMemmapTableEntry> memmap;
  for (const E820Entry& e : map) {
    memmap.push_back(HvmMemmapTableEntry{.addr = e.addr, .size = e.size, .type = e.type});
  }
  // SAFETY: HvmMemmapTableEntry is trivially copyable with no padding (static_assert size).
  auto memmap_written = write_guest(
      mem, kPvhMemmapAddr,
      std::span(reinterpret_cast<const uint8_t*>(memmap.data()),
                memmap.size() * sizeof(HvmMemmapTableEntry)),
      "PVH memory map");
  if (!memmap_written) return std::unexpected(memmap_written.error());

  HvmStartInfo start_info;
  start_info.magic = kHvmStartMagic;
  start_info.version = kHvmStartInfoVersion;
  start_info.cmdline_paddr = kCmdlineAddr;
  start_info.rsdp_paddr = acpi_rsdp_addr;
  start_info.memmap_paddr = kPvhMemmapAddr;
  start_info.memmap_entries = static_cast<uint32_t>(memmap.size());
  if (plan.initrd_size != 0) {
    HvmModlistEntry module{.paddr = plan.initrd_addr, .size = plan.initrd_size};
    auto module_written = write_guest_obj(mem, kPvhModlistAddr, module, "PVH module list");
    if (!module_written) return std::unexpected(module_written.error());
    start_info.nr_modules = 1;
    start_info.modlist_paddr = kPvhModlistAddr;
  }
  auto info_written = write_guest_obj(mem, kPvhStartInfoAddr, start_info, "hvm_start_info");
  if (!info_written) return std::unexpected(info_written.error());
  return plan;
}

// Appends [start, end) ∩ [region_start, region_end) as `type` when not empty.
void add_clipped(std::vector<E820Entry>& map, uint64_t start, uint64_t end,
                 uint64_t region_start, uint64_t region_end, uint32_t type) {
  const uint64_t lo = std::max(start, region_start);
  const uint64_t hi = std::min(end, region_end);
  if (lo < hi) map.push_back(E820Entry{.addr = lo, .size = hi - lo, .type = type});
}

}  // namespace

std::vector<E820Entry> build_e820(const GuestMemory& mem) {
  std::vector<E820Entry> map;
  for (const GuestRegion& region : mem.regions()) {
    const uint64_t start = region.gpa;
    const uint64_t end = region.end();
    // Below 1 MiB: conventional RAM up to the EBDA, the EBDA itself (MP table) reserved, the
    // VGA/option-ROM window [kLowRamEnd, kBiosAreaStart) left out, the BIOS area (ACPI
    // tables) reserved.
    add_clipped(map, 0, kEbdaStart, start, end, kE820Ram);
    add_clipped(map, kEbdaStart, kLowRamEnd, start, end, kE820Reserved);
    add_clipped(map, kBiosAreaStart, kHighMemStart, start, end, kE820Reserved);
    add_clipped(map, kHighMemStart, UINT64_MAX, start, end, kE820Ram);
  }
  std::sort(map.begin(), map.end(),
            [](const E820Entry& a, const E820Entry& b) { return a.addr < b.addr; });
  return map;
}

Result<BootPlan> load_kernel(const GuestMemory& mem, std::span<const uint8_t> kernel,
                             std::span<const uint8_t> initrd, std::string_view cmdline,
                             uint64_t acpi_rsdp_addr) {
  auto image = parse_kernel_image(kernel);
  if (!image) return std::unexpected(image.error());
  auto low_end = low_ram_end(mem);
  if (!low_end) return std::unexpected(low_end.error());
  auto plan = image->format == KernelFormat::kBzImage
                  ? load_bzimage(mem, kernel, image->bzimage, initrd, cmdline, acpi_rsdp_addr,
                                 *low_end)
                  : load_elf(mem, kernel, image->elf, initrd, cmdline, acpi_rsdp_addr, *low_end);
  if (plan) {
    spdlog::debug("kernel: {} ({} entry at {:#x}), kernel end {:#x}, initrd {:#x}+{:#x}",
                  kernel_format_name(plan->format), plan->pvh_entry ? "PVH" : "64-bit",
                  plan->entry, plan->kernel_end, plan->initrd_addr, plan->initrd_size);
  }
  return plan;
}

}  // namespace skiff::x86
