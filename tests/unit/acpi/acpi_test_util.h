// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the ACPI and MP table tests: low guest memory over a heap buffer and
// little-endian field readers.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "memory/guest_memory.h"

namespace skiff::x86::testing {

// Guest RAM covering [0, size) backed by a zeroed heap buffer.
class LowMemory {
 public:
  explicit LowMemory(uint64_t size = 0x100000) : buffer_(size, 0) {
    const GuestRegion region{.gpa = 0, .size = size, .host = buffer_.data()};
    memory_ = GuestMemory::from_host_buffers(std::span(&region, 1));
  }
  const GuestMemory& memory() const { return memory_; }
  std::span<const uint8_t> bytes(uint64_t gpa, uint64_t len) const {
    return std::span<const uint8_t>(buffer_).subspan(gpa, len);
  }
  uint8_t u8(uint64_t gpa) const { return buffer_.at(gpa); }
  uint16_t u16(uint64_t gpa) const { return static_cast<uint16_t>(u8(gpa) | (u8(gpa + 1) << 8)); }
  uint32_t u32(uint64_t gpa) const {
    return u16(gpa) | (static_cast<uint32_t>(u16(gpa + 2)) << 16);
  }
  uint64_t u64(uint64_t gpa) const {
    return u32(gpa) | (static_cast<uint64_t>(u32(gpa + 4)) << 32);
  }
  std::string text(uint64_t gpa, uint64_t len) const {
    return std::string(buffer_.begin() + static_cast<ptrdiff_t>(gpa),
                       buffer_.begin() + static_cast<ptrdiff_t>(gpa + len));
  }
  // Sum of the bytes, modulo 256: 0 for a valid ACPI/MP checksum.
  uint8_t sum(uint64_t gpa, uint64_t len) const {
    uint8_t total = 0;
    for (uint8_t b : bytes(gpa, len)) total = static_cast<uint8_t>(total + b);
    return total;
  }

 private:
  std::vector<uint8_t> buffer_;
  GuestMemory memory_;
};

}  // namespace skiff::x86::testing
