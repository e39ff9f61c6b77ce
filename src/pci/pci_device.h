// SPDX-License-Identifier: Apache-2.0
// The seam every PCI function implements (virtio-pci or any other device) and the BusDevice
// adapter through which the VMM exposes one of its BARs on the MMIO or port I/O bus.
//
// Who calls what:
//  - PciRoot (the configuration mechanisms, ports 0xcf8-0xcff and the ECAM window) calls
//    config_read/config_write, serialised by its own lock, with accesses already checked:
//    size 1, 2 or 4, inside one dword, below config_space_size().
//  - After each configuration write PciRoot compares bar_address() of every BAR with its
//    value before the write and, for each BAR that moved, calls bar_moved() on the device and
//    then the VMM's listener (PciRoot::set_bar_move_listener), which remaps the BAR's range
//    on the bus and moves ioeventfds.
//  - vCPU threads call bar_read/bar_write concurrently (through PciBarRegion), so devices
//    lock their own state.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bus/bus_device.h"

namespace skiff::pci {

// Configuration space sizes: the 256 bytes of PCI 3.0 section 6.1, or the 4 KiB of a PCI
// Express function (PCIe base spec 7.2.2, reachable through ECAM only).
inline constexpr uint16_t kConfigSpaceSize = 256;
inline constexpr uint16_t kExtendedConfigSpaceSize = 4096;

// A type 0 header has six BAR registers at 0x10-0x27 (PCI 3.0 section 6.2.5.1).
inline constexpr uint8_t kBarCount = 6;

enum class BarKind : uint8_t {
  kMemory32,  // one register, address below 4 GiB
  kMemory64,  // a register pair: `index` holds the low half, `index + 1` the high half
  kIo,        // port I/O space
};

// One Base Address Register as the device declares it.
struct BarInfo {
  uint8_t index = 0;  // 0-5 (0-4 for kMemory64)
  uint64_t size = 0;  // a power of two; memory >= 4 KiB, I/O 4-256 bytes
  BarKind kind = BarKind::kMemory32;
  bool prefetchable = false;  // memory BARs only

  bool is_memory() const { return kind != BarKind::kIo; }
};

class PciDevice {
 public:
  virtual ~PciDevice() = default;

  // A short name for logs and bus labels (e.g. "virtio-blk").
  virtual std::string name() const = 0;

  // kConfigSpaceSize or kExtendedConfigSpaceSize. Accesses at or beyond it read all ones
  // and are dropped by PciRoot.
  virtual uint16_t config_space_size() const { return kConfigSpaceSize; }
  // `size` is 1, 2 or 4 and [offset, offset + size) lies inside one dword; values are the
  // little-endian bytes of the register, in the low `size` bytes.
  virtual uint32_t config_read(uint16_t offset, uint8_t size) = 0;
  virtual void config_write(uint16_t offset, uint8_t size, uint32_t value) = 0;

  // The BARs the device implements (constant for the device's life).
  virtual std::vector<BarInfo> bars() const = 0;
  // Where BAR `index` currently decodes, or nullopt when it does not (decode disabled in the
  // Command register, address unassigned or being sized). See ConfigSpace::bar_address().
  virtual std::optional<uint64_t> bar_address(uint8_t index) const = 0;
  // Told after a configuration write changed what bar_address(index) returns. Devices that
  // keep guest addresses of their own (none so far) update them here.
  virtual void bar_moved(uint8_t index, std::optional<uint64_t> old_address,
                         std::optional<uint64_t> new_address) {
    (void)index;
    (void)old_address;
    (void)new_address;
  }

  // An access at `offset` inside BAR `index` (offset + data.size() <= the BAR's size; the
  // bus guarantees it). data.size() is 1, 2, 4 or 8.
  virtual void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) = 0;
};

// Exposes BAR `index` of a device on a Bus: the VMM inserts it at the BAR's address with the
// BAR's size (and removes/reinserts it when the BAR moves).
class PciBarRegion : public BusDevice {
 public:
  PciBarRegion(std::shared_ptr<PciDevice> device, uint8_t index)
      : device_(std::move(device)), index_(index) {}

  void read(uint64_t offset, std::span<uint8_t> data) override {
    device_->bar_read(index_, offset, data);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    device_->bar_write(index_, offset, data);
  }

 private:
  // Both immutable after construction.
  std::shared_ptr<PciDevice> device_;
  uint8_t index_;
};

}  // namespace skiff::pci
