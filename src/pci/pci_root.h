// SPDX-License-Identifier: Apache-2.0
// PCI bus 0 of segment 0: a host bridge at 00:00.0 and up to 31 devices in slots 1-31
// (function 0 only), reached through two configuration mechanisms that see the same spaces:
//  - PciConfigIo: configuration mechanism #1 (PCI 3.0 section 3.2.2.3.2), CONFIG_ADDRESS at
//    port 0xcf8 and CONFIG_DATA at 0xcfc-0xcff. Insert it on the port I/O bus at
//    kPciConfigAddressPort with size kPciConfigIoSize (8).
//  - PciConfigEcam: the PCI Express Enhanced Configuration Access Mechanism (PCIe base spec
//    section 7.2.2), 4 KiB per function at bus << 20 | device << 15 | function << 12.
//    Insert it on the MMIO bus at kPciEcamAddr with size kPciEcamSize and describe it with
//    the MCFG table from pci_acpi.h.
// Absent functions, other buses and malformed accesses read all ones and drop writes, as a
// master abort does on hardware (section 6.1).
//
// Locking: one mutex serialises configuration accesses (and add_device); the BAR-move
// listener runs with it held, after the device's own lock is released. Lock order:
// PciRoot -> device; PciRoot -> Bus (the listener remaps BARs). The listener must not make
// configuration accesses.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

#include "bus/bus_device.h"
#include "pci/config_space.h"
#include "pci/pci_device.h"
#include "skiff/error.h"

namespace skiff::pci {

inline constexpr uint8_t kSlotsPerBus = 32;
inline constexpr uint8_t kFunctionsPerSlot = 8;
inline constexpr uint16_t kPciConfigIoSize = 8;  // 0xcf8-0xcff
inline constexpr uint64_t kEcamBytesPerFunction = 4096;
inline constexpr uint64_t kEcamBytesPerBus =
    kEcamBytesPerFunction * kFunctionsPerSlot * kSlotsPerBus;

// The host bridge's identity: Intel's id for a virtual PCIe host bridge (0x8086:0x0d57, as
// Cloud Hypervisor uses), chosen because no chipset driver or quirk in Linux binds to it,
// unlike real chipset ids (e.g. 0x29c0, 0x1237). Class 0x060000: bridge, host bridge.
inline constexpr uint16_t kHostBridgeVendorId = 0x8086;
inline constexpr uint16_t kHostBridgeDeviceId = 0x0d57;
inline constexpr uint32_t kHostBridgeClassCode = 0x060000;

// The host bridge function at 00:00.0: a header without BARs or capabilities.
class HostBridge : public PciDevice {
 public:
  HostBridge();
  std::string name() const override { return "pci-host-bridge"; }
  uint32_t config_read(uint16_t offset, uint8_t size) override;
  void config_write(uint16_t offset, uint8_t size, uint32_t value) override;
  std::vector<BarInfo> bars() const override { return {}; }
  std::optional<uint64_t> bar_address(uint8_t) const override { return std::nullopt; }
  void bar_read(uint8_t, uint64_t, std::span<uint8_t> data) override;
  void bar_write(uint8_t, uint64_t, std::span<const uint8_t>) override {}

 private:
  std::mutex mutex_;
  ConfigSpace config_;  // guarded by mutex_
};

// A BAR whose decoded address changed (see ConfigSpace::bar_address for when).
struct BarMove {
  uint8_t slot = 0;
  BarInfo bar{};
  std::optional<uint64_t> old_address;  // nullopt: was not decoded
  std::optional<uint64_t> new_address;  // nullopt: no longer decoded
};
using BarMoveListener = std::function<void(const BarMove&)>;

class PciRoot {
 public:
  PciRoot();

  // Puts `device` in the lowest free slot (1-31) and returns the slot. Fails when the device
  // is null or all slots are taken.
  Result<uint8_t> add_device(std::shared_ptr<PciDevice> device);
  // The slot add_device() would use next, or nullopt when all are taken (to wire a device's
  // INTx before it exists).
  std::optional<uint8_t> next_free_slot() const;
  // The device in `slot` (0 is the host bridge), or nullptr.
  std::shared_ptr<PciDevice> device(uint8_t slot) const;

  // Called for every BAR move the guest causes through configuration writes.
  void set_bar_move_listener(BarMoveListener listener);

  // One configuration access, already decoded by a mechanism. Invalid accesses (other bus,
  // function != 0, empty slot, size not 1/2/4, crossing a dword, beyond the device's config
  // space) read all ones and drop writes.
  uint32_t config_read(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset, uint8_t size);
  void config_write(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset, uint8_t size,
                    uint32_t value);

 private:
  // The device addressed, or nullptr for an invalid access. Called with mutex_ held.
  PciDevice* target(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset,
                    uint8_t size) const;

  mutable std::mutex mutex_;
  std::array<std::shared_ptr<PciDevice>, kSlotsPerBus> slots_;  // guarded by mutex_
  BarMoveListener listener_;                                    // guarded by mutex_
};

// Configuration mechanism #1 on ports 0xcf8-0xcff.
class PciConfigIo : public BusDevice {
 public:
  explicit PciConfigIo(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {}
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  uint32_t address() const;

 private:
  const std::shared_ptr<PciRoot> root_;
  mutable std::mutex mutex_;
  uint32_t address_ = 0;  // CONFIG_ADDRESS, guarded by mutex_
};

// The ECAM window: offsets are bus << 20 | device << 15 | function << 12 | register.
class PciConfigEcam : public BusDevice {
 public:
  explicit PciConfigEcam(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {}
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  const std::shared_ptr<PciRoot> root_;
};

}  // namespace skiff::pci
