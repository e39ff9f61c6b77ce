// SPDX-License-Identifier: Apache-2.0
#include "bus/bus.h"

#include <mutex>

#include <fmt/format.h>

#include "memory/guest_memory.h"

namespace skiff {

Result<void> Bus::insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t size,
                         std::string label) {
  if (!device) return internal_error(fmt::format("{} bus: no device given for {}", name_, label));
  auto end = checked_end(base, size);
  if (size == 0 || !end) {
    return internal_error(fmt::format("{} bus: {} range [{:#x}, +{:#x}) is empty or wraps", name_,
                                      label, base, size));
  }
  std::unique_lock lock(mutex_);
  // The first range starting at or after base, and the one before it, are the only
  // candidates for overlap.
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < *end) {
    return internal_error(fmt::format("{} bus: {} [{:#x}, {:#x}) overlaps {} [{:#x}, {:#x})", name_,
                                      label, base, *end, next->second.label, next->first,
                                      next->first + next->second.size));
  }
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.size > base) {
      return internal_error(fmt::format("{} bus: {} [{:#x}, {:#x}) overlaps {} [{:#x}, {:#x})", name_,
                                        label, base, *end, prev->second.label, prev->first,
                                        prev->first + prev->second.size));
    }
  }
  ranges_.emplace(base, Entry{size, std::move(label), std::move(device)});
  return {};
}

bool Bus::remove(uint64_t base) {
  std::unique_lock lock(mutex_);
  return ranges_.erase(base) > 0;
}

size_t Bus::size() const {
  std::shared_lock lock(mutex_);
  return ranges_.size();
}

const Bus::Entry* Bus::find(uint64_t addr, uint64_t len, uint64_t* base) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  uint64_t offset = addr - it->first;
  if (offset >= it->second.size || len > it->second.size - offset) return nullptr;
  *base = it->first;
  return &it->second;
}

std::shared_ptr<BusDevice> Bus::device_at(uint64_t addr, uint64_t len, uint64_t* offset) const {
  std::shared_lock lock(mutex_);
  uint64_t base = 0;
  const Entry* entry = find(addr, len, &base);
  if (!entry) return nullptr;
  *offset = addr - base;
  // A copy of the pointer: the access runs without the bus lock, and a device removed
  // meanwhile stays alive until it returns.
  return entry->device;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
  uint64_t offset = 0;
  auto device = device_at(addr, data.size(), &offset);
  if (!device) return false;
  device->read(offset, data);
  return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
  uint64_t offset = 0;
  auto device = device_at(addr, data.size(), &offset);
  if (!device) return false;
  device->write(offset, data);
  return true;
}

}  // namespace skiff
