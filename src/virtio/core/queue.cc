// SPDX-License-Identifier: Apache-2.0
#include "virtio/core/queue.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "state/read_field.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {
namespace {

// Modern virtio is little-endian (§2.7, "Legacy Interfaces: A Note on Virtqueue
// Endianness" is the exception we do not implement); the rings are read in host order.
static_assert(std::endian::native == std::endian::little, "virtio rings are little-endian");

// struct virtq_desc (§2.7.5).
struct Descriptor {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Descriptor) == kDescriptorSize);

// struct virtq_used_elem (§2.7.8).
struct UsedElement {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(UsedElement) == kUsedElementSize);

// Offsets inside the rings (§2.7.6, §2.7.8).
constexpr size_t kRingFlagsOffset = 0;
constexpr size_t kRingIdxOffset = 2;
constexpr size_t kRingEntriesOffset = 4;
// The longest chain in bytes a driver may add (§2.7.5.2).
constexpr uint64_t kMaxChainBytes = uint64_t{1} << 32;

// Ring fields shared with the running driver are accessed atomically: the driver writes
// them concurrently from another CPU.
uint16_t load_u16(std::span<uint8_t> ring, size_t offset, std::memory_order order) {
  // SAFETY: offset + 2 <= ring.size() (the ring size was checked against the queue size at
  // activation) and ring.data() + offset is 2-byte aligned (activate() checks the host
  // address of each ring), as std::atomic_ref<uint16_t> requires.
  auto* field = reinterpret_cast<uint16_t*>(ring.data() + offset);
  return std::atomic_ref<uint16_t>(*field).load(order);
}

void store_u16(std::span<uint8_t> ring, size_t offset, uint16_t value, std::memory_order order) {
  // SAFETY: as in load_u16.
  auto* field = reinterpret_cast<uint16_t*>(ring.data() + offset);
  std::atomic_ref<uint16_t>(*field).store(value, order);
}

Descriptor read_descriptor(std::span<const uint8_t> table, uint32_t index) {
  // Copied out once: the guest may rewrite the table while we look at it.
  Descriptor descriptor;
  std::memcpy(&descriptor, table.data() + static_cast<size_t>(index) * kDescriptorSize,
              sizeof(descriptor));
  return descriptor;
}

// The rule of vring_need_event() (§2.7.7.2 and §2.7.10): an event index `event` was
// crossed when the index moved from `old_idx` to `new_idx`, computed modulo 2^16 so the
// answer stays right when the free-running indexes wrap at 0xffff.
bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

Result<std::span<uint8_t>> ring_span(const GuestMemory& memory, const std::string& label,
                                     const char* what, uint64_t gpa, uint64_t size,
                                     uint64_t alignment) {
  // §2.7.1: the driver MUST align each part as the table in §2.7 says.
  if (gpa % alignment != 0) {
    return guest_error(fmt::format("{}: {} at {:#x} is not {}-byte aligned (virtio 1.2 §2.7.1)",
                                   label, what, gpa, alignment));
  }
  if (!checked_end(gpa, size)) {
    return guest_error(fmt::format("{}: {} at {:#x} (+{:#x} bytes) wraps around the address space",
                                   label, what, gpa, size));
  }
  auto span = memory.slice(gpa, size);
  if (!span) {
    return guest_error(fmt::format("{}: {} at {:#x} (+{:#x} bytes) is not inside guest RAM",
                                   label, what, gpa, size));
  }
  return *span;
}

}  // namespace

// ---- DescriptorChain ------------------------------------------------------------------------

DescriptorChain::DescriptorChain(DescriptorChain&& other) noexcept
    : queue_(std::exchange(other.queue_, nullptr)),
      memory_(other.memory_),
      generation_(other.generation_),
      avail_position_(other.avail_position_),
      head_(other.head_),
      malformed_(other.malformed_),
      error_(std::move(other.error_)),
      readable_(std::move(other.readable_)),
      writable_(std::move(other.writable_)),
      readable_len_(std::exchange(other.readable_len_, 0)),
      writable_len_(std::exchange(other.writable_len_, 0)) {
  other.readable_.clear();
  other.writable_.clear();
}

DescriptorChain& DescriptorChain::operator=(DescriptorChain&& other) noexcept {
  if (this != &other) {
    release();
    queue_ = std::exchange(other.queue_, nullptr);
    memory_ = other.memory_;
    generation_ = other.generation_;
    avail_position_ = other.avail_position_;
    head_ = other.head_;
    malformed_ = other.malformed_;
    error_ = std::move(other.error_);
    readable_ = std::move(other.readable_);
    writable_ = std::move(other.writable_);
    readable_len_ = std::exchange(other.readable_len_, 0);
    writable_len_ = std::exchange(other.writable_len_, 0);
    other.readable_.clear();
    other.writable_.clear();
  }
  return *this;
}

DescriptorChain::~DescriptorChain() { release(); }

void DescriptorChain::release() {
  if (queue_ != nullptr) queue_->return_dropped(*this);
  queue_ = nullptr;
}

namespace {

// Walks `buffers` as one byte stream from `offset`, handing each piece that overlaps
// [offset, offset + total) to `copy(guest_address, position_in_stream_piece, length)`; stops
// at the end of the buffers, after `total` bytes, or when `copy` fails. Returns the bytes done.
template <typename Copy>
size_t copy_across(const std::vector<GuestBuffer>& buffers, uint64_t offset, size_t total, Copy copy) {
  size_t copied = 0;
  for (const GuestBuffer& buffer : buffers) {
    if (copied == total) break;
    if (offset >= buffer.len) {
      offset -= buffer.len;
      continue;
    }
    size_t n = std::min<uint64_t>(buffer.len - offset, total - copied);
    if (!copy(buffer.addr + offset, copied, n)) break;
    copied += n;
    offset = 0;
  }
  return copied;
}

}  // namespace

size_t DescriptorChain::read_at(uint64_t offset, std::span<uint8_t> out) const {
  return copy_across(readable_, offset, out.size(), [&](uint64_t gpa, size_t at, size_t n) {
    return memory_->read(gpa, out.subspan(at, n)).has_value();
  });
}

std::vector<uint8_t> DescriptorChain::read_all(uint64_t max_len) const {
  std::vector<uint8_t> data(std::min(readable_len_, max_len));
  data.resize(read_at(0, data));
  return data;
}

size_t DescriptorChain::write_at(uint64_t offset, std::span<const uint8_t> data) const {
  return copy_across(writable_, offset, data.size(), [&](uint64_t gpa, size_t at, size_t n) {
    return memory_->write(gpa, data.subspan(at, n)).has_value();
  });
}

// ---- Queue: configuration --------------------------------------------------------------------

Queue::Queue(uint16_t max_size, std::string label)
    : max_size_(max_size), label_(std::move(label)), size_(max_size) {}

Result<void> Queue::validate(const GuestMemory& memory) const {
  // §2.7: "Queue Size value is always a power of 2. The maximum Queue Size value is 32768."
  if (size_ == 0 || !std::has_single_bit(size_)) {
    return guest_error(fmt::format("{}: queue size {} is not a power of two (virtio 1.2 §2.7)",
                                   label_, size_));
  }
  if (size_ > max_size_) {
    return guest_error(fmt::format("{}: queue size {} is larger than the device's maximum {}",
                                   label_, size_, max_size_));
  }
  auto desc = ring_span(memory, label_, "descriptor table", desc_table_address_,
                        desc_table_size(size_), kDescTableAlignment);
  if (!desc) return std::unexpected(desc.error());
  auto avail = ring_span(memory, label_, "available ring", avail_ring_address_,
                         avail_ring_size(size_), kAvailRingAlignment);
  if (!avail) return std::unexpected(avail.error());
  auto used = ring_span(memory, label_, "used ring", used_ring_address_, used_ring_size(size_),
                        kUsedRingAlignment);
  if (!used) return std::unexpected(used.error());
  // The ring fields are accessed with std::atomic_ref<uint16_t>; guest RAM is mapped at
  // page granularity so this only fails for odd test buffers.
  if (reinterpret_cast<uintptr_t>(avail->data()) % alignof(uint16_t) != 0 ||
      reinterpret_cast<uintptr_t>(used->data()) % alignof(uint16_t) != 0) {
    return internal_error(fmt::format("{}: guest RAM backing the rings is not 2-byte aligned "
                                      "in the VMM", label_));
  }
  return {};
}

Result<void> Queue::map_rings(const GuestMemory& memory, uint64_t features) {
  if (has_feature(features, kFeatureRingPacked)) {
    return internal_error(fmt::format("{}: VIRTIO_F_RING_PACKED was negotiated but only split "
                                      "virtqueues are implemented", label_));
  }
  if (auto valid = validate(memory); !valid) return valid;
  // validate() checked these three slices.
  desc_table_ = *memory.slice(desc_table_address_, desc_table_size(size_));
  avail_ring_ = *memory.slice(avail_ring_address_, avail_ring_size(size_));
  used_ring_ = *memory.slice(used_ring_address_, used_ring_size(size_));
  memory_ = &memory;
  ++generation_;
  event_idx_ = has_feature(features, kFeatureRingEventIdx);
  indirect_ = has_feature(features, kFeatureRingIndirectDesc);
  return {};
}

Result<void> Queue::activate(const GuestMemory& memory, uint64_t features) {
  if (auto mapped = map_rings(memory, features); !mapped) return mapped;
  next_avail_ = 0;
  next_used_ = 0;
  signalled_used_ = 0;
  notification_enabled_ = true;
  broken_ = false;
  fatal_error_.clear();
  dropped_logged_ = false;
  // §2.7.10.2: with EVENT_IDX the device MUST keep used flags at 0. avail_event 0 asks for
  // a notification when the driver publishes the first buffer.
  store_u16(used_ring_, kRingFlagsOffset, 0, std::memory_order_relaxed);
  if (event_idx_) {
    store_u16(used_ring_, kRingEntriesOffset + kUsedElementSize * size_, 0,
              std::memory_order_relaxed);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return {};
}

void Queue::reset() {
  size_ = max_size_;
  desc_table_address_ = 0;
  avail_ring_address_ = 0;
  used_ring_address_ = 0;
  ready_ = false;
  memory_ = nullptr;
  desc_table_ = {};
  avail_ring_ = {};
  used_ring_ = {};
  ++generation_;  // chains still held by the device become inert
  event_idx_ = false;
  indirect_ = false;
  next_avail_ = 0;
  next_used_ = 0;
  signalled_used_ = 0;
  notification_enabled_ = true;
  broken_ = false;
  fatal_error_.clear();
}

// ---- Queue: device side ------------------------------------------------------------------------

uint16_t Queue::load_avail_idx() const {
  // Acquire: the ring entries and descriptors the driver wrote before its idx update
  // (§2.7.13.3.1) are visible after this load.
  return load_u16(avail_ring_, kRingIdxOffset, std::memory_order_acquire);
}

void Queue::mark_broken(std::string why) {
  broken_ = true;
  fatal_error_ = fmt::format("{}: {}", label_, why);
  spdlog::error("{}; the device needs a reset", fatal_error_);
  if (fatal_error_handler_) fatal_error_handler_(Error(ErrorKind::kGuest, fatal_error_));
}

bool Queue::has_available() const {
  if (!active() || broken_) return false;
  return load_avail_idx() != next_avail_;
}

std::optional<DescriptorChain> Queue::pop() {
  if (!active() || broken_) return std::nullopt;
  uint16_t avail_idx = load_avail_idx();
  if (avail_idx == next_avail_ && event_idx_ && notification_enabled_) {
    // Ask for a notification when the driver publishes the next buffer, then look again:
    // the full fence orders our avail_event store before the idx load, pairing with the
    // driver's barrier between its idx store and its avail_event load (§2.7.13.4), so
    // either we see the new buffer or the driver sees our avail_event and notifies.
    store_u16(used_ring_, kRingEntriesOffset + kUsedElementSize * size_, next_avail_,
              std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    avail_idx = load_avail_idx();
  }
  uint16_t pending = static_cast<uint16_t>(avail_idx - next_avail_);
  if (pending == 0) return std::nullopt;
  // §2.7.13: the ring holds at most queue-size heads, so a correct driver is never more
  // than that ahead of us (and never moves idx backwards, §2.7.6.1, which shows up here as
  // a huge jump). Anything else is a broken driver; we cannot tell which entries are real.
  if (pending > size_) {
    mark_broken(fmt::format("available idx {} is {} entries ahead of the device's {}, more than "
                            "the queue size {} (virtio 1.2 §2.7.6.1, §2.7.13)",
                            avail_idx, pending, next_avail_, size_));
    return std::nullopt;
  }
  uint16_t head = load_u16(avail_ring_, kRingEntriesOffset + 2 * (next_avail_ % size_),
                           std::memory_order_relaxed);
  DescriptorChain chain;
  chain.queue_ = this;
  chain.memory_ = memory_;
  chain.generation_ = generation_;
  chain.avail_position_ = next_avail_;
  chain.head_ = head;
  ++next_avail_;
  ++stats_.chains_popped;
  if (auto error = walk_chain(head, chain)) {
    chain.malformed_ = true;
    chain.error_ = std::move(*error);
    chain.readable_.clear();
    chain.writable_.clear();
    chain.readable_len_ = 0;
    chain.writable_len_ = 0;
    ++stats_.malformed_chains;
    guest_log_.warn("{}: malformed descriptor chain at head {}: {}; returned with length 0",
                    label_, head, chain.error_);
  }
  return chain;
}

bool Queue::undo_pop(DescriptorChain& chain) {
  if (chain.queue_ != this || chain.generation_ != generation_ || !active()) return false;
  if (static_cast<uint16_t>(chain.avail_position_ + 1) != next_avail_) return false;
  --next_avail_;
  --stats_.chains_popped;
  if (chain.malformed_) --stats_.malformed_chains;
  chain.queue_ = nullptr;
  chain.readable_.clear();
  chain.writable_.clear();
  chain.readable_len_ = 0;
  chain.writable_len_ = 0;
  return true;
}

std::optional<std::string> Queue::walk_chain(uint16_t head, DescriptorChain& chain) const {
  // The descriptor table being walked: the queue's, then at most one indirect table.
  std::span<const uint8_t> table = desc_table_;
  uint32_t table_entries = size_;
  bool in_indirect = false;
  uint32_t index = head;
  // §2.7.5: the queue size "is the maximum possible descriptor chain length", and
  // §2.7.5.3.1 keeps that bound with indirect tables. Counting descriptors (not the one
  // that points at an indirect table) bounds the walk, so loops through `next` end.
  uint32_t count = 0;
  bool seen_writable = false;
  uint64_t total_len = 0;

  while (true) {
    if (index >= table_entries) {
      if (in_indirect) {
        return fmt::format("next index {} is outside the indirect table of {} descriptors",
                           index, table_entries);
      }
      return fmt::format("{} index {} is not below the queue size {}",
                         count == 0 ? "head" : "next", index, size_);
    }
    if (++count > size_) {
      return fmt::format("chain is longer than the queue size {} (a loop through next?) "
                         "(virtio 1.2 §2.7.5.2, §2.7.5.3.1)",
                         size_);
    }
    Descriptor desc = read_descriptor(table, index);

    if ((desc.flags & kDescFlagIndirect) != 0) {
      // §2.7.5.3.1: only with VIRTIO_F_INDIRECT_DESC, never inside an indirect table, never
      // together with NEXT. The WRITE flag of this descriptor is ignored (§2.7.5.3.2).
      if (in_indirect) return std::string("indirect descriptor inside an indirect table (§2.7.5.3.1)");
      if (!indirect_) {
        return std::string("indirect descriptor but VIRTIO_F_INDIRECT_DESC was not negotiated");
      }
      if ((desc.flags & kDescFlagNext) != 0) {
        return std::string("indirect descriptor with NEXT set (§2.7.5.3.1)");
      }
      if (desc.len == 0 || desc.len % kDescriptorSize != 0) {
        return fmt::format("indirect table length {} is not a non-zero multiple of {}", desc.len,
                           kDescriptorSize);
      }
      uint32_t entries = desc.len / kDescriptorSize;
      --count;  // the pointer to the table is not a buffer of the chain
      if (entries > size_ - count) {
        return fmt::format("indirect table of {} descriptors makes the chain longer than the "
                           "queue size {} (§2.7.5.3.1)",
                           entries, size_);
      }
      auto indirect_table = memory_->slice(desc.addr, desc.len);
      if (!indirect_table) {
        return fmt::format("indirect table [{:#x}, +{:#x}) is not inside guest RAM", desc.addr,
                           desc.len);
      }
      // The spec sets no alignment for indirect tables; read_descriptor copies bytewise.
      table = *indirect_table;
      table_entries = entries;
      in_indirect = true;
      index = 0;  // §2.7.5.3: the first indirect descriptor is at index 0
      continue;
    }

    bool writable = (desc.flags & kDescFlagWrite) != 0;
    // §2.7.4.2: the driver MUST place device-writable descriptors after device-readable ones.
    if (!writable && seen_writable) {
      return fmt::format("device-readable descriptor {} follows a device-writable one (§2.7.4.2)",
                         index);
    }
    seen_writable = seen_writable || writable;
    // §2.7.5.2: a chain is at most 2^32 bytes in total.
    total_len += desc.len;
    if (total_len > kMaxChainBytes) {
      return std::string("chain is longer than 2^32 bytes (§2.7.5.2)");
    }
    // A zero-length descriptor describes no memory: accepted (the spec does not forbid it)
    // without looking at its address, and not listed.
    if (desc.len != 0) {
      if (!memory_->contains(desc.addr, desc.len)) {
        return fmt::format("{} buffer [{:#x}, +{:#x}) of descriptor {} is not inside guest RAM",
                           writable ? "writable" : "readable", desc.addr, desc.len, index);
      }
      if (writable) {
        chain.writable_.push_back({desc.addr, desc.len});
        chain.writable_len_ += desc.len;
      } else {
        chain.readable_.push_back({desc.addr, desc.len});
        chain.readable_len_ += desc.len;
      }
    }
    if ((desc.flags & kDescFlagNext) == 0) return std::nullopt;
    index = desc.next;
  }
}

void Queue::write_used(uint32_t id, uint32_t len) {
  UsedElement element{id, len};
  std::memcpy(used_ring_.data() + kRingEntriesOffset + kUsedElementSize * (next_used_ % size_),
              &element, sizeof(element));
  ++next_used_;
  // Release: §2.7.8.2, the device MUST set len (and the element) before updating idx.
  store_u16(used_ring_, kRingIdxOffset, next_used_, std::memory_order_release);
}

void Queue::add_used(DescriptorChain chain, uint32_t written_len) {
  if (chain.queue_ == nullptr) return;  // empty or already returned
  Queue* owner = std::exchange(chain.queue_, nullptr);
  if (owner != this || chain.generation_ != generation_ || !active()) {
    if (owner != this) {
      spdlog::error("{}: add_used() with a chain of another queue ({}); device bug", label_,
                    owner->label_);
      owner->return_dropped(chain);
    }
    return;  // from an earlier activation: the ring it belonged to is gone
  }
  // §2.7.8.2: len is what was written; never more than the writable buffers hold.
  uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(written_len, chain.writable_len_));
  write_used(chain.head_, len);
}

void Queue::return_dropped(DescriptorChain& chain) {
  chain.queue_ = nullptr;
  if (chain.generation_ != generation_ || !active()) return;
  if (!chain.malformed_) {
    ++stats_.dropped_chains;
    if (!dropped_logged_) {
      dropped_logged_ = true;
      spdlog::error("{}: the device dropped descriptor chain {} without add_used(); returned "
                    "with length 0 (device bug, logged once)",
                    label_, chain.head_);
    }
  }
  write_used(chain.head_, 0);
}

bool Queue::needs_notification() {
  if (!active()) return false;
  uint16_t old_used = std::exchange(signalled_used_, next_used_);
  if (old_used == next_used_) return false;
  // Our used idx store must be visible before we read the driver's suppression fields, and
  // the driver does the mirror image (§2.7.14): a full fence on both sides.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool notify;
  if (event_idx_) {
    // §2.7.7.2: with EVENT_IDX, notify when the used idx passed used_event.
    uint16_t used_event =
        load_u16(avail_ring_, kRingEntriesOffset + 2 * size_, std::memory_order_relaxed);
    notify = need_event(used_event, next_used_, old_used);
  } else {
    // §2.7.7.2: without EVENT_IDX, flags 1 (NO_INTERRUPT) means "do not notify".
    uint16_t flags = load_u16(avail_ring_, kRingFlagsOffset, std::memory_order_relaxed);
    notify = (flags & kAvailFlagNoInterrupt) == 0;
  }
  ++(notify ? stats_.used_notifications : stats_.suppressed_notifications);
  return notify;
}

void Queue::set_notification(bool enabled) {
  notification_enabled_ = enabled;
  if (!active()) return;
  if (event_idx_) {
    // §2.7.10.2: avail_event = the next index we will consume asks for a notification as
    // soon as the driver publishes it. Disabling leaves the old value, which the driver
    // has already passed, so it stops notifying.
    if (enabled) {
      store_u16(used_ring_, kRingEntriesOffset + kUsedElementSize * size_, next_avail_,
                std::memory_order_relaxed);
    }
  } else {
    store_u16(used_ring_, kRingFlagsOffset, enabled ? 0 : kUsedFlagNoNotify,
              std::memory_order_relaxed);
  }
  // Pairs with the driver's barrier between its idx store and its flags/avail_event load:
  // after this, a pop() sees every buffer the driver published without notifying us.
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// ---- Queue: state ------------------------------------------------------------------------------

namespace {
constexpr const char* kQueueStateKind = "virtqueue";
constexpr uint32_t kQueueStateVersion = 1;
}  // namespace

state::StateBlob Queue::save_state() const {
  state::StateBlob blob(kQueueStateKind, kQueueStateVersion);
  blob.put("max_size", max_size_)
      .put("size", size_)
      .put("desc_table_address", desc_table_address_)
      .put("avail_ring_address", avail_ring_address_)
      .put("used_ring_address", used_ring_address_)
      .put_bool("ready", ready_)
      .put_bool("active", active())
      .put_bool("event_idx", event_idx_)
      .put_bool("indirect", indirect_)
      .put("next_avail", next_avail_)
      .put("next_used", next_used_)
      .put("signalled_used", signalled_used_)
      .put_bool("notification_enabled", notification_enabled_)
      .put_bool("broken", broken_)
      .put_string("fatal_error", fatal_error_)
      .put("chains_popped", stats_.chains_popped)
      .put("malformed_chains", stats_.malformed_chains)
      .put("dropped_chains", stats_.dropped_chains)
      .put("used_notifications", stats_.used_notifications)
      .put("suppressed_notifications", stats_.suppressed_notifications);
  return blob;
}

Result<void> Queue::restore_state(const state::StateBlob& blob, const GuestMemory& memory,
                                  uint64_t driver_features) {
  using state::read_field;
  if (active()) {
    return internal_error(fmt::format("{}: restore_state() on an active queue (reset it first)", label_));
  }
  if (auto expected = blob.expect(kQueueStateKind, kQueueStateVersion); !expected) return expected;
  const auto bad = [this](std::string_view what) {
    return config_error(fmt::format("state of virtqueue for {}: {}", label_, what));
  };

  uint16_t saved_max_size = 0;
  uint16_t size = 0;
  uint64_t desc = 0;
  uint64_t avail = 0;
  uint64_t used = 0;
  bool ready = false;
  bool active = false;
  bool event_idx = false;
  bool indirect = false;
  uint16_t next_avail = 0;
  uint16_t next_used = 0;
  uint16_t signalled_used = 0;
  bool notification_enabled = true;
  bool broken = false;
  std::string fatal_error;
  QueueStats stats;
  for (auto read : {read_field(blob, "max_size", saved_max_size),
                    read_field(blob, "size", size),
                    read_field(blob, "desc_table_address", desc),
                    read_field(blob, "avail_ring_address", avail),
                    read_field(blob, "used_ring_address", used),
                    read_field(blob, "ready", ready),
                    read_field(blob, "active", active),
                    read_field(blob, "event_idx", event_idx),
                    read_field(blob, "indirect", indirect),
                    read_field(blob, "next_avail", next_avail),
                    read_field(blob, "next_used", next_used),
                    read_field(blob, "signalled_used", signalled_used),
                    read_field(blob, "notification_enabled", notification_enabled),
                    read_field(blob, "broken", broken),
                    read_field(blob, "fatal_error", fatal_error),
                    read_field(blob, "chains_popped", stats.chains_popped),
                    read_field(blob, "malformed_chains", stats.malformed_chains),
                    read_field(blob, "dropped_chains", stats.dropped_chains),
                    read_field(blob, "used_notifications", stats.used_notifications),
                    read_field(blob, "suppressed_notifications", stats.suppressed_notifications)}) {
    if (!read) return read;
  }

  // The device built from the same spec must offer the same queue: a different maximum
  // means the blob belongs to another device (or another build of it).
  if (saved_max_size != max_size_) {
    return bad(fmt::format("max_size {} differs from this queue's {}", saved_max_size, max_size_));
  }
  if (broken != !fatal_error.empty()) {
    return bad(broken ? "broken without a fatal_error" : "a fatal_error on a queue that is not broken");
  }
  if (!active) {
    // Before activation (or after reset()) a queue has no progress: anything else means the
    // blob was not written by save_state(). The configuration registers may hold any value
    // the driver wrote; activate() checks them when the driver sets DRIVER_OK.
    if (event_idx || indirect || next_avail != 0 || next_used != 0 || signalled_used != 0 ||
        !notification_enabled || broken) {
      return bad("an inactive queue with ring progress or negotiated ring features");
    }
    size_ = size;
    desc_table_address_ = desc;
    avail_ring_address_ = avail;
    used_ring_address_ = used;
    ready_ = ready;
    stats_ = stats;
    return {};
  }
  if (event_idx != has_feature(driver_features, kFeatureRingEventIdx) ||
      indirect != has_feature(driver_features, kFeatureRingIndirectDesc)) {
    return bad(fmt::format("event_idx {} / indirect {} do not match the negotiated features {:#x}", event_idx,
                           indirect, driver_features));
  }

  size_ = size;
  desc_table_address_ = desc;
  avail_ring_address_ = avail;
  used_ring_address_ = used;
  ready_ = ready;
  // The same checks as activate(): size a power of two <= max_size, every ring aligned and
  // inside guest RAM. A blob pointing the rings anywhere else is refused here, before any
  // ring is read.
  if (auto mapped = map_rings(memory, driver_features); !mapped) {
    Error error = mapped.error();
    reset();
    return bad(error.message());
  }
  // Unlike activate(), nothing is written to guest memory. The used ring's flags and
  // avail_event are what this device last wrote there (set_notification(), pop() on an
  // empty ring), and the snapshot's copy of guest memory already holds them, consistent
  // with notification_enabled and next_avail. activate() writes 0 to both because a new
  // ring starts at index 0; here that would be wrong: with EVENT_IDX, avail_event 0 on a
  // ring the driver has filled to idx 1000 tells it not to notify until its idx wraps around
  // to 0 again (vring_need_event(0, 1001, 1000) is false, §2.7.10), so the device would
  // sleep on a full ring; without it, flags 0 would turn on notifications the device had
  // turned off. Leaving guest memory alone also keeps the restored memory identical to the
  // snapshot.
  next_avail_ = next_avail;
  next_used_ = next_used;
  signalled_used_ = signalled_used;
  notification_enabled_ = notification_enabled;
  broken_ = broken;
  fatal_error_ = std::move(fatal_error);
  dropped_logged_ = false;
  stats_ = stats;
  return {};
}

}  // namespace skiff::virtio
