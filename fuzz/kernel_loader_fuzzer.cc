// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the kernel loaders (src/arch/x86_64/boot/kernel_image.cc,
// boot_loader.cc): parse_kernel_image() and load_kernel() on an arbitrary file, bzImage or
// ELF64 (PVH note or 64-bit entry), with an initrd and a command line, into a small guest
// memory whose shape the input chooses.
//
// Input layout (fuzz/corpus/make_kernel_loader_corpus.py writes seeds in this format):
//   u8 flags: bits 0-1 low RAM size (1 MiB + 64 KiB, 2 MiB, 4 MiB, 16 MiB), bit 2 a second
//             region at 4 GiB, bit 3 low RAM starts at 4 KiB instead of 0 (must be refused)
//   u32 ACPI RSDP address   u16 initrd size in 256-byte units
//   u8 command line length, the command line (may hold a NUL, which must be refused)
//   the rest: the kernel image
// Invariants on success: the entry point, the boot structures and the initrd lie in guest
// RAM below the end of low RAM, the initrd is page aligned above the kernel, and what was
// written (code, initrd, command line) is what the files hold. parse_kernel_image()'s own
// results stay inside the file.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "arch/x86_64/boot/boot_loader.h"
#include "arch/x86_64/boot/kernel_image.h"
#include "arch/x86_64/layout.h"
#include "fuzz_support.h"

namespace {

using namespace skiff::x86;
using skiff::fuzz::check;
using skiff::fuzz::FuzzReader;

constexpr uint64_t kMaxLowRam = 16 * skiff::x86::kMiB;
constexpr uint64_t kHighRegion = uint64_t{4} << 30;
constexpr uint64_t kHighRegionSize = 0x10000;

std::vector<uint8_t>& low_ram() {
  static std::vector<uint8_t> bytes(kMaxLowRam);
  return bytes;
}
std::vector<uint8_t>& high_ram() {
  static std::vector<uint8_t> bytes(kHighRegionSize);
  return bytes;
}
std::vector<uint8_t>& initrd_bytes() {
  static std::vector<uint8_t> bytes = [] {
    std::vector<uint8_t> b(uint64_t{0xffff} * 256);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + 3);
    return b;
  }();
  return bytes;
}

void check_image(std::span<const uint8_t> kernel) {
  auto image = parse_kernel_image(kernel);
  if (!image) {
    check(image.error().message().starts_with("kernel image: "));
    return;
  }
  if (image->format == KernelFormat::kBzImage) {
    const BzImageInfo& info = image->bzimage;
    check(info.setup_sects != 0 && info.setup_size == (uint64_t{info.setup_sects} + 1) * kSectorSize);
    check(info.payload_offset == info.setup_size && info.payload_offset <= kernel.size());
    check(info.payload_offset + info.payload_size == kernel.size());
    check(uint64_t{info.syssize} * 16 <= info.payload_size && info.syssize != 0);
  } else {
    for (const ElfSegment& segment : image->elf.segments) {
      check(segment.file_offset <= kernel.size() && segment.file_size <= kernel.size() - segment.file_offset);
      check(segment.mem_size >= segment.file_size && segment.mem_size != 0);
      check(segment.paddr + segment.mem_size >= segment.paddr);
    }
  }
}

bool memory_holds(const skiff::GuestMemory& memory, uint64_t gpa, std::span<const uint8_t> expected) {
  std::vector<uint8_t> actual(expected.size());
  return memory.read(gpa, actual).has_value() && std::equal(actual.begin(), actual.end(), expected.begin());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  skiff::fuzz::quiet_logs_unless_verbose();
  (void)low_ram();
  (void)high_ram();
  (void)initrd_bytes();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzReader in(data, size);
  const uint8_t flags = in.u8();
  static constexpr uint64_t kLowSizes[] = {kMiB + 0x10000, 2 * kMiB, 4 * kMiB, 16 * kMiB};
  const uint64_t low_size = kLowSizes[flags & 3];
  const uint64_t low_start = (flags & 8) ? 0x1000 : 0;
  const uint64_t rsdp = in.u32();
  const std::span<const uint8_t> initrd(initrd_bytes().data(), uint64_t{in.u16()} * 256);
  const auto cmdline_raw = in.bytes(in.u8());
  const std::string cmdline(cmdline_raw.begin(), cmdline_raw.end());
  const std::span<const uint8_t> kernel = in.rest();

  check_image(kernel);

  // The loader must not depend on what RAM held before: no clearing between runs.
  std::vector<skiff::GuestRegion> regions = {{low_start, low_size - low_start, low_ram().data()}};
  if (flags & 4) regions.push_back({kHighRegion, kHighRegionSize, high_ram().data()});
  const skiff::GuestMemory memory = skiff::GuestMemory::from_host_buffers(regions);

  auto plan = load_kernel(memory, kernel, initrd, cmdline, rsdp);
  if (!plan) {
    spdlog::debug("load_kernel: {}", plan.error().message());
    check(!plan.error().message().empty());
    // RAM that does not start at 0 is refused whenever the image itself is fine.
    check(low_start == 0 || !parse_kernel_image(kernel) ||
          plan.error().message().find("RAM region starting at 0") != std::string::npos);
    return 0;
  }
  check(low_start == 0);
  check(cmdline.find('\0') == std::string::npos);
  const uint64_t low_end = std::min(low_size, kIdentityMappedBytes);
  check(memory.contains(plan->entry, 1));
  check(memory.contains(plan->boot_params_addr, plan->pvh_entry ? sizeof(HvmStartInfo) : kPageSize));
  check(plan->kernel_end <= low_end || plan->format == KernelFormat::kElf);
  if (plan->format == KernelFormat::kElf) check(plan->kernel_end <= kHighRegion + kHighRegionSize);

  std::vector<uint8_t> expected_cmdline(cmdline.begin(), cmdline.end());
  expected_cmdline.push_back(0);
  check(memory_holds(memory, kCmdlineAddr, expected_cmdline));

  if (initrd.empty()) {
    check(plan->initrd_addr == 0 && plan->initrd_size == 0);
  } else {
    check(plan->initrd_size == initrd.size() && plan->initrd_addr % kPageSize == 0);
    check(plan->initrd_addr >= plan->kernel_end && plan->initrd_addr + plan->initrd_size <= low_end);
    check(memory_holds(memory, plan->initrd_addr, initrd));
  }
  if (plan->format == KernelFormat::kBzImage) {
    check(plan->entry == kKernelLoadAddr + kBzImage64BitEntryOffset);
    auto info = parse_bzimage(kernel);
    check(info.has_value());
    // The initrd is placed after the code, so the code is intact.
    check(memory_holds(memory, kKernelLoadAddr, kernel.subspan(info->payload_offset)));
  }
  return 0;
}
