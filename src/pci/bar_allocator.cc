// SPDX-License-Identifier: Apache-2.0
#include "pci/bar_allocator.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>

#include "arch/x86_64/layout.h"
#include "pci/config_space.h"

namespace skiff::pci {

PciWindows default_pci_windows(uint64_t ram_end, uint64_t mmio64_size) {
  const uint64_t floor = std::max(ram_end, x86::kRamAboveHoleStart);
  const uint64_t start = (floor + kMmio64WindowAlignment - 1) & ~(kMmio64WindowAlignment - 1);
  return PciWindows{
      .mmio32 = {.start = x86::kMmio32WindowStart, .size = x86::kMmio32WindowSize},
      .mmio64 = {.start = start, .size = mmio64_size},
      .io = {.start = kPciIoWindowStart, .size = kPciIoWindowSize},
  };
}

BarAllocator::BarAllocator(const PciWindows& windows)
    : windows_(windows),
      mmio32_{"32-bit MMIO", windows.mmio32, windows.mmio32.start},
      mmio64_{"64-bit MMIO", windows.mmio64, windows.mmio64.start},
      io_{"I/O port", windows.io, windows.io.start} {}

Result<uint64_t> BarAllocator::allocate_in(Cursor& cursor, uint64_t size) {
  const PciWindow& w = cursor.window;
  // Natural alignment (PCI 3.0 section 6.2.5.1); computed without overflow.
  const uint64_t aligned = (cursor.next + size - 1) & ~(size - 1);
  if (aligned < cursor.next || aligned >= w.end() || size > w.end() - aligned) {
    return config_error(fmt::format(
        "PCI {} window [{:#x}, {:#x}) exhausted: no naturally aligned room for a {:#x}-byte BAR "
        "({:#x} bytes left)",
        cursor.name, w.start, w.end(), size, w.end() - std::min(cursor.next, w.end())));
  }
  cursor.next = aligned + size;
  return aligned;
}

Result<uint64_t> BarAllocator::allocate(BarKind kind, uint64_t size) {
  if (!std::has_single_bit(size)) {
    return internal_error(fmt::format("PCI BAR size {:#x} is not a power of two", size));
  }
  switch (kind) {
    case BarKind::kMemory32:
      return allocate_in(mmio32_, std::max(size, kMinMemoryBarSize));
    case BarKind::kMemory64:
      return allocate_in(mmio64_, std::max(size, kMinMemoryBarSize));
    case BarKind::kIo:
      return allocate_in(io_, std::max(size, kMinIoBarSize));
  }
  return internal_error("PCI BAR of unknown kind");
}

}  // namespace skiff::pci
