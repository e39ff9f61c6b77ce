// SPDX-License-Identifier: Apache-2.0
// Hands out guest addresses for BARs, as firmware would before the OS starts, from three
// windows that the ACPI host bridge (_CRS) also describes:
//  - 32-bit memory BARs: the 32-bit MMIO window below 4 GiB (layout.h kMmio32WindowStart,
//    kMmio32WindowSize by default);
//  - 64-bit memory BARs: a window above RAM; the VMM passes the end of RAM (above 4 GiB),
//    which is rounded up to 1 GiB;
//  - I/O BARs: ports 0xc000-0xffff, above every legacy port skiff emulates (the highest is
//    the ACPI block at 0x600) and where PC firmware traditionally places PCI I/O BARs.
// Each BAR is naturally aligned to its size (PCI 3.0 section 6.2.5.1); memory BARs take at
// least 4 KiB so no two devices share a page (a BAR can then be a KVM memory slot or a trap
// region on its own). Addresses are handed out upwards and never reused.
#pragma once

#include <cstdint>
#include <string>

#include "pci/pci_device.h"
#include "skiff/error.h"

namespace skiff::pci {

inline constexpr uint64_t kPciIoWindowStart = 0xc000;
inline constexpr uint64_t kPciIoWindowSize = 0x4000;  // up to 0xffff
// Default size of the 64-bit window. The VMM must keep start + size below the guest's
// physical address width (CPUID 0x80000008); 64 GiB above RAM fits any host with >= 40 bits
// and RAM below 960 GiB.
inline constexpr uint64_t kDefaultMmio64WindowSize = uint64_t{64} << 30;
inline constexpr uint64_t kMmio64WindowAlignment = uint64_t{1} << 30;

struct PciWindow {
  uint64_t start = 0;
  uint64_t size = 0;                             // 0: the window does not exist
  uint64_t end() const { return start + size; }  // exclusive
};

struct PciWindows {
  PciWindow mmio32;
  PciWindow mmio64;
  PciWindow io;
};

// skiff's windows: layout.h's 32-bit window, `mmio64_size` bytes from `ram_end` rounded up
// to 1 GiB (at least 4 GiB), and the I/O window above.
PciWindows default_pci_windows(uint64_t ram_end, uint64_t mmio64_size = kDefaultMmio64WindowSize);

class BarAllocator {
 public:
  explicit BarAllocator(const PciWindows& windows);

  // An address for a BAR of `kind` and `size` (a power of two). Fails when the size is not a
  // power of two or the BAR's window has no naturally aligned room left (the error names
  // the window and its range).
  Result<uint64_t> allocate(BarKind kind, uint64_t size);
  Result<uint64_t> allocate(const BarInfo& bar) { return allocate(bar.kind, bar.size); }

  const PciWindows& windows() const { return windows_; }

 private:
  struct Cursor {
    const char* name;
    PciWindow window;
    uint64_t next;
  };
  Result<uint64_t> allocate_in(Cursor& cursor, uint64_t size);

  PciWindows windows_;
  Cursor mmio32_;
  Cursor mmio64_;
  Cursor io_;
};

}  // namespace skiff::pci
