// SPDX-License-Identifier: Apache-2.0
#include "pci/pci_root.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

namespace skiff::pci {
namespace {

// CONFIG_ADDRESS fields (PCI 3.0 section 3.2.2.3.2, figure 3-2).
constexpr uint32_t kConfigAddressEnable = 1u << 31;
// Bits 30:24 are reserved and bits 1:0 read as 0; only these bits are latched.
constexpr uint32_t kConfigAddressLatched = 0x80fffffc;
constexpr uint64_t kConfigDataOffset = 4;  // 0xcfc - 0xcf8

bool valid_size(size_t size) { return size == 1 || size == 2 || size == 4; }

uint32_t load_le(std::span<const uint8_t> data) {
  uint32_t value = 0;
  for (size_t i = 0; i < data.size() && i < 4; ++i)
    value |= static_cast<uint32_t>(data[i]) << (8 * i);
  return value;
}

void store_le(std::span<uint8_t> data, uint32_t value) {
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = i < 4 ? static_cast<uint8_t>(value >> (8 * i)) : 0xff;
  }
}

void fill_ones(std::span<uint8_t> data) { std::fill(data.begin(), data.end(), uint8_t{0xff}); }

}  // namespace

HostBridge::HostBridge()
    : config_(ConfigHeader{.vendor_id = kHostBridgeVendorId,
                           .device_id = kHostBridgeDeviceId,
                           .class_code = kHostBridgeClassCode}) {}

uint32_t HostBridge::config_read(uint16_t offset, uint8_t size) {
  std::lock_guard lock(mutex_);
  return config_.read(offset, size);
}

void HostBridge::config_write(uint16_t offset, uint8_t size, uint32_t value) {
  std::lock_guard lock(mutex_);
  config_.write(offset, size, value);
}

void HostBridge::bar_read(uint8_t, uint64_t, std::span<uint8_t> data) { fill_ones(data); }

PciRoot::PciRoot() { slots_[0] = std::make_shared<HostBridge>(); }

Result<uint8_t> PciRoot::add_device(std::shared_ptr<PciDevice> device) {
  if (!device) return internal_error("PCI bus 0: no device given");
  std::lock_guard lock(mutex_);
  for (uint8_t slot = 1; slot < kSlotsPerBus; ++slot) {
    if (!slots_[slot]) {
      spdlog::debug("PCI 00:{:02x}.0: {}", slot, device->name());
      slots_[slot] = std::move(device);
      return slot;
    }
  }
  return config_error(fmt::format("PCI bus 0: no free slot for {} (slots 1-{} are taken)",
                                  device->name(), kSlotsPerBus - 1));
}

std::optional<uint8_t> PciRoot::next_free_slot() const {
  std::lock_guard lock(mutex_);
  for (uint8_t slot = 1; slot < kSlotsPerBus; ++slot) {
    if (!slots_[slot]) return slot;
  }
  return std::nullopt;
}

std::shared_ptr<PciDevice> PciRoot::device(uint8_t slot) const {
  std::lock_guard lock(mutex_);
  return slot < kSlotsPerBus ? slots_[slot] : nullptr;
}

void PciRoot::set_bar_move_listener(BarMoveListener listener) {
  std::lock_guard lock(mutex_);
  listener_ = std::move(listener);
}

PciDevice* PciRoot::target(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset,
                           uint8_t size) const {
  // Only bus 0, function 0 is populated; everything else is a master abort.
  if (bus != 0 || function != 0 || slot >= kSlotsPerBus || !slots_[slot]) return nullptr;
  PciDevice* device = slots_[slot].get();
  // Configuration accesses never span two dwords (PCI 3.0 section 3.2.2.3.2: the byte
  // enables select bytes of one dword; PCIe base spec 7.2.2: ECAM accesses crossing a DW
  // boundary are not supported).
  if (!valid_size(size) || offset % 4 + size > 4 || offset + size > device->config_space_size()) {
    return nullptr;
  }
  return device;
}

uint32_t PciRoot::config_read(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset,
                              uint8_t size) {
  std::lock_guard lock(mutex_);
  PciDevice* device = target(bus, slot, function, offset, size);
  if (!device) return 0xffffffff;
  return device->config_read(offset, size);
}

void PciRoot::config_write(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset,
                           uint8_t size, uint32_t value) {
  std::lock_guard lock(mutex_);
  PciDevice* device = target(bus, slot, function, offset, size);
  if (!device) return;
  const std::vector<BarInfo> bars = device->bars();
  std::vector<std::optional<uint64_t>> before;
  before.reserve(bars.size());
  for (const auto& b : bars) before.push_back(device->bar_address(b.index));

  device->config_write(offset, size, value);

  for (size_t i = 0; i < bars.size(); ++i) {
    const auto after = device->bar_address(bars[i].index);
    if (after == before[i]) continue;
    spdlog::debug("PCI 00:{:02x}.0 {} BAR {}: {} -> {}", slot, device->name(), bars[i].index,
                  before[i] ? fmt::format("{:#x}", *before[i]) : "off",
                  after ? fmt::format("{:#x}", *after) : "off");
    device->bar_moved(bars[i].index, before[i], after);
    if (listener_) {
      listener_(
          BarMove{.slot = slot, .bar = bars[i], .old_address = before[i], .new_address = after});
    }
  }
}

uint32_t PciConfigIo::address() const {
  std::lock_guard lock(mutex_);
  return address_;
}

void PciConfigIo::read(uint64_t offset, std::span<uint8_t> data) {
  if (offset < kConfigDataOffset) {
    // Section 3.2.2.3.2: only DWORD accesses reach CONFIG_ADDRESS; others pass through as
    // ordinary I/O, which nothing here claims.
    if (offset == 0 && data.size() == 4) {
      store_le(data, address());
    } else {
      fill_ones(data);
    }
    return;
  }
  const uint64_t byte = offset - kConfigDataOffset;
  const uint32_t address = this->address();
  if ((address & kConfigAddressEnable) == 0 || !valid_size(data.size()) || byte + data.size() > 4) {
    fill_ones(data);
    return;
  }
  const auto value = root_->config_read(
      static_cast<uint8_t>(address >> 16), static_cast<uint8_t>((address >> 11) & 0x1f),
      static_cast<uint8_t>((address >> 8) & 0x7), static_cast<uint16_t>((address & 0xfc) + byte),
      static_cast<uint8_t>(data.size()));
  store_le(data, value);
}

void PciConfigIo::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset < kConfigDataOffset) {
    if (offset == 0 && data.size() == 4) {
      std::lock_guard lock(mutex_);
      address_ = load_le(data) & kConfigAddressLatched;
    }
    return;
  }
  const uint64_t byte = offset - kConfigDataOffset;
  const uint32_t address = this->address();
  if ((address & kConfigAddressEnable) == 0 || !valid_size(data.size()) || byte + data.size() > 4) {
    return;
  }
  root_->config_write(
      static_cast<uint8_t>(address >> 16), static_cast<uint8_t>((address >> 11) & 0x1f),
      static_cast<uint8_t>((address >> 8) & 0x7), static_cast<uint16_t>((address & 0xfc) + byte),
      static_cast<uint8_t>(data.size()), load_le(data));
}

namespace {

struct EcamAddress {
  uint8_t bus;
  uint8_t slot;
  uint8_t function;
  uint16_t offset;
};

// PCIe base spec section 7.2.2, table 7-1: A[27:20] bus, A[19:15] device, A[14:12]
// function, A[11:0] register.
std::optional<EcamAddress> decode_ecam(uint64_t offset) {
  if (offset >> 28 != 0) return std::nullopt;
  return EcamAddress{
      static_cast<uint8_t>(offset >> 20), static_cast<uint8_t>((offset >> 15) & 0x1f),
      static_cast<uint8_t>((offset >> 12) & 0x7), static_cast<uint16_t>(offset & 0xfff)};
}

}  // namespace

void PciConfigEcam::read(uint64_t offset, std::span<uint8_t> data) {
  const auto at = decode_ecam(offset);
  if (!at || !valid_size(data.size())) {
    fill_ones(data);
    return;
  }
  store_le(data, root_->config_read(at->bus, at->slot, at->function, at->offset,
                                    static_cast<uint8_t>(data.size())));
}

void PciConfigEcam::write(uint64_t offset, std::span<const uint8_t> data) {
  const auto at = decode_ecam(offset);
  if (!at || !valid_size(data.size())) return;
  root_->config_write(at->bus, at->slot, at->function, at->offset,
                      static_cast<uint8_t>(data.size()), load_le(data));
}

}  // namespace skiff::pci
