// SPDX-License-Identifier: Apache-2.0
// The driver side of a split virtqueue over heap-backed guest memory, for device and queue
// tests. It lays out the three rings in one RAM region, builds chains with a fluent builder,
// publishes them, and reads back what the device put in the used ring:
//
//   VirtqueueFake fake;                              // queue size 16, activated
//   auto sent = fake.chain().readable("hello").writable(64).add();
//   auto chain = fake.queue().pop();                 // the device side
//   ...
//   fake.queue().add_used(std::move(*chain), 5);
//   EXPECT_EQ(fake.used_elem(0).id, sent.head);
//
// Raw setters (set_descriptor, set_avail_idx, set_used_event, ...) build the malformed
// rings the negative tests need.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/core/queue.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio::testing {

struct FakeDescriptor {
  uint64_t addr = 0;
  uint32_t len = 0;
  uint16_t flags = 0;
  uint16_t next = 0;
};
static_assert(sizeof(FakeDescriptor) == kDescriptorSize);

struct FakeUsedElement {
  uint32_t id = 0;
  uint32_t len = 0;
  bool operator==(const FakeUsedElement&) const = default;
};

// What ChainBuilder::add() put in the queue.
struct FakeChain {
  uint16_t head = 0;
  std::vector<GuestBuffer> readable;
  std::vector<GuestBuffer> writable;
};

inline constexpr uint64_t kFakeDefaultFeatures = feature_mask(kFeatureVersion1) |
                                                 feature_mask(kFeatureRingIndirectDesc);

class VirtqueueFake;

class ChainBuilder {
 public:
  explicit ChainBuilder(VirtqueueFake& fake) : fake_(fake) {}

  // A device-readable buffer holding `data` (copied into the fake's data area).
  ChainBuilder& readable(std::span<const uint8_t> data);
  ChainBuilder& readable(std::string_view text) {
    return readable(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }
  // A zero-filled device-writable buffer of `len` bytes.
  ChainBuilder& writable(uint32_t len);
  // Raw descriptors at any address (for out-of-range and overflow tests).
  ChainBuilder& readable_at(uint64_t addr, uint32_t len) { return raw(addr, len, 0); }
  ChainBuilder& writable_at(uint64_t addr, uint32_t len) { return raw(addr, len, kDescFlagWrite); }
  ChainBuilder& raw(uint64_t addr, uint32_t len, uint16_t flags) {
    descriptors_.push_back({addr, len, flags, 0});
    return *this;
  }
  // Puts all of this chain's descriptors in one indirect table, referenced by a single
  // VIRTQ_DESC_F_INDIRECT descriptor in the queue's table.
  ChainBuilder& indirect() {
    indirect_ = true;
    return *this;
  }

  // Writes the descriptors and publishes the head in the available ring.
  FakeChain add();
  // Writes the descriptors without publishing (use VirtqueueFake::push_avail()).
  FakeChain build();

 private:
  VirtqueueFake& fake_;
  std::vector<FakeDescriptor> descriptors_;
  bool indirect_ = false;
};

class VirtqueueFake {
 public:
  static constexpr uint64_t kRamBase = 0x100000;
  // Offsets of the rings from kRamBase; the data area follows them.
  static constexpr uint64_t kDescOffset = 0;
  static constexpr uint64_t kAvailOffset = 0x10000;
  static constexpr uint64_t kUsedOffset = 0x20000;
  static constexpr uint64_t kDataOffset = 0x30000;
  static constexpr uint16_t kMaxFakeQueueSize = 4096;

  explicit VirtqueueFake(uint16_t size = 16, uint64_t features = kFakeDefaultFeatures,
                         uint64_t ram_size = 1 << 20, bool activate_now = true)
      : ram_(ram_size, 0), size_(size), features_(features), queue_(size, "fake queue") {
    GuestRegion region{kRamBase, ram_.size(), ram_.data()};
    memory_ = GuestMemory::from_host_buffers(std::span(&region, 1));
    queue_.set_size(size);
    queue_.set_desc_table_address(desc_table());
    queue_.set_avail_ring_address(avail_ring());
    queue_.set_used_ring_address(used_ring());
    queue_.set_ready(true);
    if (activate_now) {
      auto activated = activate();
      EXPECT_TRUE(activated) << (activated ? "" : activated.error().message());
    }
  }

  // A second fake over a copy of `original`'s guest RAM (as a snapshot carries it), with a
  // queue fresh from construction: restore_state() gives it the original's state. The chain
  // builder and take_used() go on where the original's are.
  struct CopyOf {
    const VirtqueueFake& original;
  };
  explicit VirtqueueFake(CopyOf copy)
      : ram_(copy.original.ram_),
        size_(copy.original.size_),
        features_(copy.original.features_),
        queue_(copy.original.queue_.max_size(), "fake queue"),
        next_data_(copy.original.next_data_),
        next_descriptor_(copy.original.next_descriptor_),
        last_seen_used_(copy.original.last_seen_used_) {
    GuestRegion region{kRamBase, ram_.size(), ram_.data()};
    memory_ = GuestMemory::from_host_buffers(std::span(&region, 1));
  }

  Result<void> activate() { return queue_.activate(memory_, features_); }
  // Restores the queue from `blob` over this fake's memory, with the fake's features.
  Result<void> restore(const state::StateBlob& blob) { return queue_.restore_state(blob, memory_, features_); }
  uint64_t features() const { return features_; }
  // The whole guest RAM, to compare two fakes byte for byte.
  const std::vector<uint8_t>& ram() const { return ram_; }

  const GuestMemory& memory() const { return memory_; }
  Queue& queue() { return queue_; }
  uint16_t size() const { return size_; }
  uint64_t ram_end() const { return kRamBase + ram_.size(); }
  uint64_t desc_table() const { return kRamBase + kDescOffset; }
  uint64_t avail_ring() const { return kRamBase + kAvailOffset; }
  uint64_t used_ring() const { return kRamBase + kUsedOffset; }

  ChainBuilder chain() { return ChainBuilder(*this); }

  // ---- Raw guest memory. ---------------------------------------------------------------------
  template <typename T>
  void put_obj(uint64_t gpa, const T& value) {
    ASSERT_TRUE(memory_.write_obj(gpa, value)) << "fake write at " << gpa;
  }
  template <typename T>
  T get_obj(uint64_t gpa) const {
    auto value = memory_.read_obj<T>(gpa);
    EXPECT_TRUE(value) << "fake read at " << gpa;
    return value ? *value : T{};
  }
  std::vector<uint8_t> read(uint64_t gpa, uint64_t len) const {
    std::vector<uint8_t> out(len);
    EXPECT_TRUE(memory_.read(gpa, out));
    return out;
  }
  // Bump allocator over the data area; 16-byte aligned unless asked otherwise.
  uint64_t alloc(uint64_t len, uint64_t align = 16) {
    next_data_ = (next_data_ + align - 1) / align * align;
    uint64_t gpa = kRamBase + next_data_;
    next_data_ += len;
    EXPECT_LE(next_data_, ram_.size()) << "fake data area exhausted";
    return gpa;
  }
  uint64_t put(std::span<const uint8_t> data) {
    uint64_t gpa = alloc(data.size());
    if (!data.empty()) {
      EXPECT_TRUE(memory_.write(gpa, data));
    }
    return gpa;
  }

  // ---- Descriptor table. -----------------------------------------------------------------------
  void set_descriptor(uint16_t index, const FakeDescriptor& descriptor) {
    put_obj(desc_table() + kDescriptorSize * index, descriptor);
  }
  FakeDescriptor descriptor(uint16_t index) const {
    return get_obj<FakeDescriptor>(desc_table() + kDescriptorSize * index);
  }
  // Hands out `count` consecutive descriptor indexes (wrapping at the queue size).
  uint16_t alloc_descriptors(uint16_t count) {
    uint16_t first = next_descriptor_;
    next_descriptor_ = static_cast<uint16_t>((next_descriptor_ + count) % size_);
    return first;
  }

  // ---- Available ring (driver-written). ----------------------------------------------------
  uint16_t avail_flags() const { return get_obj<uint16_t>(avail_ring()); }
  void set_avail_flags(uint16_t flags) { put_obj<uint16_t>(avail_ring(), flags); }
  uint16_t avail_idx() const { return get_obj<uint16_t>(avail_ring() + 2); }
  void set_avail_idx(uint16_t idx) { put_obj<uint16_t>(avail_ring() + 2, idx); }
  void set_avail_entry(uint16_t slot, uint16_t head) {
    put_obj<uint16_t>(avail_ring() + 4 + 2 * (slot % size_), head);
  }
  // Places `head` in the next ring slot and increments idx.
  void push_avail(uint16_t head) {
    uint16_t idx = avail_idx();
    set_avail_entry(idx, head);
    set_avail_idx(static_cast<uint16_t>(idx + 1));
  }
  void set_used_event(uint16_t value) { put_obj<uint16_t>(avail_ring() + 4 + 2 * size_, value); }

  // ---- Used ring (device-written). ---------------------------------------------------------
  uint16_t used_flags() const { return get_obj<uint16_t>(used_ring()); }
  uint16_t used_idx() const { return get_obj<uint16_t>(used_ring() + 2); }
  FakeUsedElement used_elem(uint16_t slot) const {
    return get_obj<FakeUsedElement>(used_ring() + 4 + kUsedElementSize * (slot % size_));
  }
  uint16_t avail_event() const { return get_obj<uint16_t>(used_ring() + 4 + kUsedElementSize * size_); }
  void set_avail_event(uint16_t value) {
    put_obj<uint16_t>(used_ring() + 4 + kUsedElementSize * size_, value);
  }
  // The used elements published since the previous call.
  std::vector<FakeUsedElement> take_used() {
    std::vector<FakeUsedElement> out;
    uint16_t idx = used_idx();
    for (; last_seen_used_ != idx; ++last_seen_used_) out.push_back(used_elem(last_seen_used_));
    return out;
  }

 private:
  std::vector<uint8_t> ram_;
  uint16_t size_;
  uint64_t features_;
  GuestMemory memory_;
  Queue queue_;
  uint64_t next_data_ = kDataOffset;
  uint16_t next_descriptor_ = 0;
  uint16_t last_seen_used_ = 0;
};

inline ChainBuilder& ChainBuilder::readable(std::span<const uint8_t> data) {
  uint64_t gpa = fake_.put(data);
  descriptors_.push_back({gpa, static_cast<uint32_t>(data.size()), 0, 0});
  return *this;
}

inline ChainBuilder& ChainBuilder::writable(uint32_t len) {
  uint64_t gpa = fake_.alloc(len);
  descriptors_.push_back({gpa, len, kDescFlagWrite, 0});
  return *this;
}

inline FakeChain ChainBuilder::build() {
  FakeChain chain;
  for (const FakeDescriptor& d : descriptors_) {
    if ((d.flags & kDescFlagIndirect) != 0) continue;
    ((d.flags & kDescFlagWrite) != 0 ? chain.writable : chain.readable).push_back({d.addr, d.len});
  }
  auto link = [](std::vector<FakeDescriptor>& list, auto index_of) {
    for (size_t i = 0; i < list.size(); ++i) {
      if (i + 1 < list.size()) {
        list[i].flags |= kDescFlagNext;
        list[i].next = index_of(i + 1);
      }
    }
  };
  if (indirect_) {
    std::vector<FakeDescriptor> table = descriptors_;
    link(table, [](size_t i) { return static_cast<uint16_t>(i); });
    uint64_t table_gpa = fake_.alloc(table.size() * kDescriptorSize);
    for (size_t i = 0; i < table.size(); ++i) {
      fake_.put_obj(table_gpa + i * kDescriptorSize, table[i]);
    }
    chain.head = fake_.alloc_descriptors(1);
    fake_.set_descriptor(chain.head, {table_gpa, static_cast<uint32_t>(table.size() * kDescriptorSize),
                                      kDescFlagIndirect, 0});
    return chain;
  }
  uint16_t count = static_cast<uint16_t>(descriptors_.empty() ? 1 : descriptors_.size());
  if (descriptors_.empty()) descriptors_.push_back({});  // a chain of one empty descriptor
  chain.head = fake_.alloc_descriptors(count);
  uint16_t size = fake_.size();
  uint16_t head = chain.head;
  auto index_of = [head, size](size_t i) { return static_cast<uint16_t>((head + i) % size); };
  link(descriptors_, index_of);
  for (size_t i = 0; i < descriptors_.size(); ++i) fake_.set_descriptor(index_of(i), descriptors_[i]);
  return chain;
}

inline FakeChain ChainBuilder::add() {
  FakeChain chain = build();
  fake_.push_avail(chain.head);
  return chain;
}

}  // namespace skiff::virtio::testing
