// SPDX-License-Identifier: Apache-2.0
// Loads a kernel (bzImage, ELF vmlinux, or ELF with a Xen PVH entry note), an optional
// initrd and the command line into guest memory, and writes the boot structures the entry
// path expects: the Linux zero page (struct boot_params) for the 64-bit boot protocol, or
// hvm_start_info for PVH. The returned BootPlan says how to start the boot vCPU
// (see cpu_boot_state.h). Every write goes through GuestMemory's range checks.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "arch/x86_64/boot/kernel_image.h"
#include "arch/x86_64/layout.h"
#include "memory/guest_memory.h"
#include "skiff/error.h"

namespace skiff::x86 {

// E820 address range types (ACPI spec, "INT 15H, E820H - Query System Address Map"). The PVH
// memory map uses the same numbering (XEN_HVM_MEMMAP_TYPE_*).
inline constexpr uint32_t kE820Ram = 1;
inline constexpr uint32_t kE820Reserved = 2;

struct E820Entry {
  uint64_t addr = 0;
  uint64_t size = 0;
  uint32_t type = 0;
  bool operator==(const E820Entry&) const = default;
};

// The guest's memory map, sorted by address: RAM [0, kEbdaStart), reserved
// [kEbdaStart, kLowRamEnd) for the MP table, reserved [kBiosAreaStart, kHighMemStart) for the
// ACPI tables, RAM from kHighMemStart to the end of the low region, and each region above
// 4 GiB as RAM. Only ranges backed by a GuestMemory region are reported.
std::vector<E820Entry> build_e820(const GuestMemory& mem);

// Xen PVH start-of-day structures (xen/include/public/arch-x86/hvm/start_info.h): all
// little-endian, addresses 64-bit. Version 1 adds the memory map.
inline constexpr uint32_t kHvmStartMagic = 0x336ec578;  // "xEn3" with the 0x80 bit of 'E'
inline constexpr uint32_t kHvmStartInfoVersion = 1;

struct HvmStartInfo {
  uint32_t magic = 0;
  uint32_t version = 0;
  uint32_t flags = 0;
  uint32_t nr_modules = 0;
  uint64_t modlist_paddr = 0;
  uint64_t cmdline_paddr = 0;
  uint64_t rsdp_paddr = 0;
  uint64_t memmap_paddr = 0;   // version 1+
  uint32_t memmap_entries = 0; // version 1+
  uint32_t reserved = 0;
};
static_assert(sizeof(HvmStartInfo) == 56);

struct HvmModlistEntry {
  uint64_t paddr = 0;
  uint64_t size = 0;
  uint64_t cmdline_paddr = 0;
  uint64_t reserved = 0;
};
static_assert(sizeof(HvmModlistEntry) == 32);

struct HvmMemmapTableEntry {
  uint64_t addr = 0;
  uint64_t size = 0;
  uint32_t type = 0;
  uint32_t reserved = 0;
};
static_assert(sizeof(HvmMemmapTableEntry) == 24);

// The PVH module list (one entry, the initrd) sits right after the largest memory map, in
// the same page as hvm_start_info. (Candidate for layout.h.)
inline constexpr uint64_t kPvhModlistAddr =
    kPvhMemmapAddr + kPvhMemmapMaxEntries * sizeof(HvmMemmapTableEntry);
static_assert(kPvhStartInfoAddr + sizeof(HvmStartInfo) <= kPvhMemmapAddr);
static_assert(kPvhModlistAddr + sizeof(HvmModlistEntry) <= kZeroPageAddr);

// Highest initrd address for kernels that do not state one (the ELF paths): the boot
// protocol's default for kernels before 2.03 was 0x37ffffff; 2 GiB - 1 is what modern
// kernels declare and is safe for both.
inline constexpr uint64_t kDefaultInitrdAddrMax = 0x7fffffff;

// What a vCPU needs to start the loaded kernel.
struct BootPlan {
  KernelFormat format = KernelFormat::kBzImage;
  bool pvh_entry = false;         // true: 32-bit PVH entry; false: 64-bit boot protocol
  uint64_t entry = 0;             // guest-physical entry point
  uint64_t boot_params_addr = 0;  // zero page (64-bit entry) or hvm_start_info (PVH)
  uint64_t kernel_end = 0;        // end of the memory the kernel occupies while booting
  uint64_t initrd_addr = 0;       // 0 when there is no initrd
  uint64_t initrd_size = 0;
};

// Detects the kernel's format, loads it with the initrd (empty span = none) and command
// line, and writes the zero page or hvm_start_info. acpi_rsdp_addr 0 means "not given".
// Failures are config errors naming what did not fit and by how much.
Result<BootPlan> load_kernel(const GuestMemory& mem, std::span<const uint8_t> kernel,
                             std::span<const uint8_t> initrd, std::string_view cmdline,
                             uint64_t acpi_rsdp_addr);

}  // namespace skiff::x86
