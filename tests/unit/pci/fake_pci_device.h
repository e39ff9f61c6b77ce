// SPDX-License-Identifier: Apache-2.0
// A PCI function for tests: a ConfigSpace with the BARs it is given, an optional MSI-X table,
// BAR memory backed by byte arrays, and a record of bar_moved() calls and MSI deliveries.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <tuple>
#include <vector>

#include "pci/config_space.h"
#include "pci/msix_table.h"
#include "pci/pci_device.h"

namespace skiff::pci::testing {

inline constexpr uint16_t kFakeVendorId = 0x1af4;
inline constexpr uint16_t kFakeDeviceId = 0x1042;

inline ConfigHeader fake_header() {
  return ConfigHeader{.vendor_id = kFakeVendorId,
                      .device_id = kFakeDeviceId,
                      .subsystem_vendor_id = 0x1af4,
                      .subsystem_id = 0x0002,
                      .revision = 0x01,
                      .class_code = 0x010000,
                      .interrupt_pin = 1};
}

class FakePciDevice : public PciDevice {
 public:
  struct Move {
    uint8_t index;
    std::optional<uint64_t> old_address;
    std::optional<uint64_t> new_address;
  };

  explicit FakePciDevice(std::vector<BarInfo> bar_list = {},
                         std::optional<MsixLayout> msix_layout = {},
                         uint16_t config_size = kConfigSpaceSize)
      : config(fake_header(), config_size) {
    for (const auto& b : bar_list) {
      EXPECT_TRUE(config.add_bar(b));
      memory[b.index].assign(b.size, 0);
    }
    if (msix_layout) {
      auto table = MsixTable::create(*msix_layout, [this](uint64_t address, uint32_t data) {
        delivered.emplace_back(address, data);
      });
      EXPECT_TRUE(table) << table.error().message();
      msix = *table;
      EXPECT_TRUE(config.add_msix_capability(msix));
    }
  }

  std::string name() const override { return "fake"; }
  uint16_t config_space_size() const override { return config.size(); }
  uint32_t config_read(uint16_t offset, uint8_t size) override {
    std::lock_guard lock(mutex);
    return config.read(offset, size);
  }
  void config_write(uint16_t offset, uint8_t size, uint32_t value) override {
    std::lock_guard lock(mutex);
    config.write(offset, size, value);
  }
  std::vector<BarInfo> bars() const override {
    std::lock_guard lock(mutex);
    return config.bars();
  }
  std::optional<uint64_t> bar_address(uint8_t index) const override {
    std::lock_guard lock(mutex);
    return config.bar_address(index);
  }
  void bar_moved(uint8_t index, std::optional<uint64_t> old_address,
                 std::optional<uint64_t> new_address) override {
    moves.push_back(Move{index, old_address, new_address});
  }
  void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) override {
    if (msix && msix->bar_read(index, offset, data)) return;
    for (size_t i = 0; i < data.size(); ++i) data[i] = memory[index].at(offset + i);
  }
  void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) override {
    if (msix && msix->bar_write(index, offset, data)) return;
    for (size_t i = 0; i < data.size(); ++i) memory[index].at(offset + i) = data[i];
  }

  mutable std::mutex mutex;
  ConfigSpace config;
  std::shared_ptr<MsixTable> msix;
  std::map<uint8_t, std::vector<uint8_t>> memory;
  std::vector<Move> moves;
  std::vector<std::pair<uint64_t, uint32_t>> delivered;
};

}  // namespace skiff::pci::testing
