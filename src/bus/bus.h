// SPDX-License-Identifier: Apache-2.0
// A bus maps address ranges (port I/O or MMIO) to BusDevices. Ranges may not overlap.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>

#include "bus/bus_device.h"
#include "skiff/error.h"

namespace skiff {

class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Maps [base, base + size) to `device`. Fails on size 0, wrap-around, or overlap with
  // a range already mapped (the error names both ranges).
  Result<void> insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t size,
                      std::string label);
  // Removes the range starting at `base`. Returns false when none starts there.
  bool remove(uint64_t base);

  // Dispatches an access. Returns false when no device covers [addr, addr + size):
  // reads are then filled with 0xff and writes are dropped by the caller.
  bool read(uint64_t addr, std::span<uint8_t> data) const;
  bool write(uint64_t addr, std::span<const uint8_t> data) const;

  const std::string& name() const { return name_; }
  size_t size() const;

 private:
  struct Entry {
    uint64_t size;
    std::string label;
    std::shared_ptr<BusDevice> device;
  };
  // Finds the device whose range covers [addr, addr + len).
  const Entry* find(uint64_t addr, uint64_t len, uint64_t* base) const;
  // The device covering [addr, addr + len) and the offset of addr within it, or nullptr.
  std::shared_ptr<BusDevice> device_at(uint64_t addr, uint64_t len, uint64_t* offset) const;

  std::string name_;
  mutable std::shared_mutex mutex_;
  std::map<uint64_t, Entry> ranges_;  // keyed by base
};

}  // namespace skiff
