// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the libFuzzer targets:
//   - FuzzReader: consumes the input as little-endian integers and byte strings; reads past
//     the end give zeros, so every input is a valid (if short) program;
//   - FuzzRam: one heap-backed guest RAM region with a bump allocator for buffers;
//   - DriverRing: the driver side of a split virtqueue in that RAM, building chains from
//     descriptor lists (direct or through one indirect table) and publishing them;
//   - read_chain(): a chain described by the input (buffer kinds, lengths, contents, and
//     "wild" descriptors with arbitrary addresses), so the devices' parsers see both
//     well-formed and hostile chains;
//   - check(): __builtin_trap() on a broken invariant, which libFuzzer reports as a crash.
// The layout of every ring follows virtio 1.2 §2.7 (descriptor 16 bytes, available ring
// flags/idx/ring[]/used_event, used ring flags/idx/ring[]/avail_event).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "memory/guest_memory.h"
#include "virtio/core/queue.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::fuzz {

inline void check(bool condition) {
  if (!condition) __builtin_trap();
}

// Guest-caused log lines are rate-limited but still cost time; SKIFF_FUZZ_VERBOSE=1 keeps
// them (debug lines included), to see what a reproducer does.
inline void quiet_logs_unless_verbose() {
  spdlog::set_level(std::getenv("SKIFF_FUZZ_VERBOSE") == nullptr ? spdlog::level::off : spdlog::level::debug);
}

class FuzzReader {
 public:
  FuzzReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t remaining() const { return size_ - pos_; }
  bool empty() const { return pos_ == size_; }

  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(load(2)); }
  uint32_t u32() { return static_cast<uint32_t>(load(4)); }
  uint64_t u64() { return load(8); }
  bool flag() { return (u8() & 1) != 0; }

  // Up to `n` bytes (fewer at the end of the input).
  std::span<const uint8_t> bytes(size_t n) {
    n = std::min(n, remaining());
    std::span<const uint8_t> out(data_ + pos_, n);
    pos_ += n;
    return out;
  }
  // A string of up to `max_len` bytes, its length taken from the input first.
  std::string string(size_t max_len) {
    auto raw = bytes(std::min<size_t>(u8(), max_len));
    return std::string(raw.begin(), raw.end());
  }
  std::span<const uint8_t> rest() { return bytes(remaining()); }

 private:
  uint64_t load(size_t n) {
    uint64_t value = 0;
    for (size_t i = 0; i < n; ++i) value |= uint64_t{u8()} << (8 * i);
    return value;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// One guest RAM region [base, base + size) over a heap buffer.
class FuzzRam {
 public:
  FuzzRam(uint64_t base, uint64_t size) : base_(base), bytes_(size, 0) {
    GuestRegion region{base, size, bytes_.data()};
    memory_ = GuestMemory::from_host_buffers(std::span(&region, 1));
  }
  FuzzRam(const FuzzRam&) = delete;
  FuzzRam& operator=(const FuzzRam&) = delete;

  const GuestMemory& memory() const { return memory_; }
  uint64_t base() const { return base_; }
  uint64_t end() const { return base_ + bytes_.size(); }
  uint8_t* host(uint64_t gpa) { return bytes_.data() + (gpa - base_); }
  bool host_range_inside(const void* pointer, size_t len) const {
    const auto* p = static_cast<const uint8_t*>(pointer);
    return p >= bytes_.data() && len <= bytes_.size() && p - bytes_.data() <= static_cast<ptrdiff_t>(bytes_.size() - len);
  }

  // `len` bytes, `align`-aligned, or nullopt when the RAM is used up.
  std::optional<uint64_t> alloc(uint64_t len, uint64_t align = 16) {
    const uint64_t at = (next_ + align - 1) / align * align;
    if (at > bytes_.size() || len > bytes_.size() - at) return std::nullopt;
    next_ = at + len;
    return base_ + at;
  }
  uint64_t free_bytes() const { return next_ >= bytes_.size() ? 0 : bytes_.size() - next_; }

 private:
  uint64_t base_;
  std::vector<uint8_t> bytes_;
  GuestMemory memory_;
  uint64_t next_ = 0;
};

struct DriverDescriptor {
  uint64_t addr = 0;
  uint32_t len = 0;
  uint16_t flags = 0;  // virtio::kDescFlagWrite / kDescFlagIndirect; NEXT is set by the ring
};

// The driver side of one split virtqueue whose rings live in a FuzzRam.
class DriverRing {
 public:
  DriverRing(FuzzRam& ram, uint16_t size, std::string label = "fuzz queue")
      : ram_(ram), size_(size), queue_(size, std::move(label)) {
    desc_ = ram.alloc(virtio::desc_table_size(size), 16).value_or(0);
    avail_ = ram.alloc(virtio::avail_ring_size(size), 2).value_or(0);
    used_ = ram.alloc(virtio::used_ring_size(size), 4).value_or(0);
    queue_.set_size(size);
    queue_.set_desc_table_address(desc_);
    queue_.set_avail_ring_address(avail_);
    queue_.set_used_ring_address(used_);
    queue_.set_ready(true);
  }

  virtio::Queue& queue() { return queue_; }
  uint16_t size() const { return size_; }
  uint16_t published() const { return avail_idx_; }

  uint16_t used_idx() const {
    uint16_t value = 0;
    std::memcpy(&value, ram_.host(used_ + 2), sizeof(value));
    return value;
  }
  // The used element at ring slot `slot % size`: {id, len}.
  std::pair<uint32_t, uint32_t> used_elem(uint16_t slot) const {
    uint32_t elem[2];
    std::memcpy(elem, ram_.host(used_ + 4 + virtio::kUsedElementSize * (slot % size_)), sizeof(elem));
    return {elem[0], elem[1]};
  }

  // Writes the chain (linked with NEXT, wrapping at the ring size) or, with `indirect`, one
  // indirect table holding it, and publishes its head. Returns false when the descriptor
  // table or RAM is used up.
  bool add_chain(std::span<const DriverDescriptor> chain, bool indirect) {
    if (chain.empty() || next_desc_ + (indirect ? 1 : chain.size()) > size_) return false;
    const uint16_t head = next_desc_;
    if (indirect) {
      auto table = ram_.alloc(chain.size() * virtio::kDescriptorSize, 16);
      if (!table) return false;
      for (size_t i = 0; i < chain.size(); ++i) {
        write_descriptor(*table + i * virtio::kDescriptorSize, chain[i], i + 1 < chain.size(),
                         static_cast<uint16_t>(i + 1));
      }
      write_descriptor(desc_ + head * virtio::kDescriptorSize,
                       {*table, static_cast<uint32_t>(chain.size() * virtio::kDescriptorSize),
                        virtio::kDescFlagIndirect},
                       false, 0);
      next_desc_ = static_cast<uint16_t>(next_desc_ + 1);
    } else {
      for (size_t i = 0; i < chain.size(); ++i) {
        write_descriptor(desc_ + (head + i) * virtio::kDescriptorSize, chain[i], i + 1 < chain.size(),
                         static_cast<uint16_t>(head + i + 1));
      }
      next_desc_ = static_cast<uint16_t>(next_desc_ + chain.size());
    }
    std::memcpy(ram_.host(avail_ + 4 + 2 * (avail_idx_ % size_)), &head, sizeof(head));
    ++avail_idx_;
    std::memcpy(ram_.host(avail_ + 2), &avail_idx_, sizeof(avail_idx_));
    return true;
  }

 private:
  void write_descriptor(uint64_t gpa, const DriverDescriptor& d, bool has_next, uint16_t next) {
    uint8_t raw[virtio::kDescriptorSize];
    const uint16_t flags = static_cast<uint16_t>(d.flags | (has_next ? virtio::kDescFlagNext : 0));
    std::memcpy(raw, &d.addr, 8);
    std::memcpy(raw + 8, &d.len, 4);
    std::memcpy(raw + 12, &flags, 2);
    std::memcpy(raw + 14, &next, 2);
    std::memcpy(ram_.host(gpa), raw, sizeof(raw));
  }

  FuzzRam& ram_;
  uint16_t size_;
  virtio::Queue queue_;
  uint64_t desc_ = 0;
  uint64_t avail_ = 0;
  uint64_t used_ = 0;
  uint16_t next_desc_ = 0;
  uint16_t avail_idx_ = 0;
};

// Reads one chain description from the input and adds it to `ring`:
//   u8 shape: bits 0-2 descriptor count - 1 (1..8), bit 7 indirect
//   per descriptor, u8 kind:
//     bit 0 device-writable, bit 1 "wild" (u64 address + u32 length from the input, usually
//     outside RAM or wrapping), bit 2 zero length; otherwise u16 length (at most
//     `max_buffer` and what RAM has left), and a readable buffer's contents follow in the
//     input (short inputs leave the rest zero).
// Returns false when nothing could be added.
inline bool read_chain(FuzzReader& in, FuzzRam& ram, DriverRing& ring, uint32_t max_buffer = 0x4000) {
  const uint8_t shape = in.u8();
  const size_t count = 1 + (shape & 7);
  std::vector<DriverDescriptor> chain;
  for (size_t i = 0; i < count; ++i) {
    const uint8_t kind = in.u8();
    DriverDescriptor d;
    d.flags = (kind & 1) ? virtio::kDescFlagWrite : 0;
    if (kind & 2) {
      d.addr = in.u64();
      d.len = in.u32();
    } else if (kind & 4) {
      d.addr = ram.base();
      d.len = 0;
    } else {
      const uint32_t len = static_cast<uint32_t>(
          std::min<uint64_t>({in.u16(), max_buffer, ram.free_bytes() > 64 ? ram.free_bytes() - 64 : 0}));
      auto gpa = ram.alloc(len, 1);
      if (!gpa) break;
      d.addr = *gpa;
      d.len = len;
      if (!(kind & 1)) {
        auto content = in.bytes(len);
        if (!content.empty()) std::memcpy(ram.host(*gpa), content.data(), content.size());
      } else if (len != 0) {
        std::memset(ram.host(*gpa), 0xa5, len);  // stale guest data the device must overwrite
      }
    }
    chain.push_back(d);
  }
  return ring.add_chain(chain, (shape & 0x80) != 0);
}

}  // namespace skiff::fuzz
