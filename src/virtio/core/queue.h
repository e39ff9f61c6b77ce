// SPDX-License-Identifier: Apache-2.0
// The split virtqueue (virtio 1.2 §2.7) as the device sees it.
//
// Everything in the three rings and in the buffers is guest-controlled: a Queue reads the
// rings only through spans that GuestMemory checked at activation, reads each descriptor
// once into a local copy (so the guest cannot change it between the check and the use),
// bounds every index by the queue size, bounds every chain's length, and checks every
// buffer [addr, addr + len) against guest RAM before handing it to the device.
//
// Life cycle, as a transport drives it:
//   1. The driver writes size and ring addresses (set_size(), set_desc_table_address(), ...)
//      and enables the queue (set_ready(true)); these setters only store values.
//   2. When the driver sets DRIVER_OK, the transport calls activate(memory, features) on
//      each ready queue. activate() runs validate() (spec §2.7 sizes and alignment, every
//      ring inside guest RAM) and returns an error naming the failing ring and address.
//   3. The device's worker pops chains, uses them and returns them with add_used(), then
//      asks needs_notification() whether to interrupt the driver.
//   4. reset() (device reset, or queue reset) returns the queue to its power-on state.
//
// State (snapshot, restore, migration): save_state() describes the configuration, the
// device's progress through the rings and the counters; restore_state() on a fresh (or
// reset) queue puts all of it back, activating the queue when the saved one was active, so
// the next pop() continues where the saved queue stopped. The rings themselves live in guest
// memory, which the snapshot carries separately. A device first gives back every chain it
// holds (add_used(), or undo_pop() for one it has not started on), so nothing is in flight.
//
// A typical device loop:
//   while (auto chain = queue.pop()) {
//     uint32_t written = handle(*chain);           // malformed chains have no buffers
//     queue.add_used(std::move(*chain), written);
//   }
//   if (queue.needs_notification()) interrupt->signal_used_queue(index);
// With notifications disabled while busy (set_notification(false)), re-enable them with
// set_notification(true) and pop() again before sleeping: the driver may have added a
// buffer just before the re-enable became visible.
//
// Threads: configuration and activation happen under the transport's lock while the
// device is not running; after activation one device thread at a time calls pop(),
// add_used(), needs_notification() and set_notification(). A Queue is not internally
// locked. It is neither copyable nor movable, because chains point back at it; a chain
// must not outlive its queue.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "memory/guest_memory.h"
#include "skiff/error.h"
#include "state/state_blob.h"
#include "virtio/core/rate_limited_log.h"

namespace skiff::virtio {

class Queue;

// One buffer of a descriptor chain. [addr, addr + len) was checked to lie inside one
// guest RAM region when the chain was popped. len is never 0 (zero-length descriptors are
// accepted but not listed).
struct GuestBuffer {
  uint64_t addr = 0;
  uint32_t len = 0;
  bool operator==(const GuestBuffer&) const = default;
};

// A descriptor chain popped from a Queue: the device-readable buffers followed by the
// device-writable ones (spec §2.7.4.2 puts every writable buffer after every readable
// one; a chain that breaks this is malformed).
//
// Move-only. It must go back to the guest exactly once: Queue::add_used() does that, and if
// the device drops a chain without calling it, the destructor returns it with length 0
// (and logs the device bug once per queue), so no descriptor ever leaks.
//
// A malformed chain (bad index, loop, buffer outside RAM, bad indirect table, ...) is still
// handed to the device, with malformed() true, error() saying why, and no buffers; the
// device returns it (add_used with 0, or just drops it — that is not logged as a bug) so
// the driver gets its descriptors back. A head index beyond the queue size goes back in the
// used element as the driver gave it, so the avail and used counts stay balanced.
//
// Overlapping buffers are allowed: the spec does not forbid them (§2.7.5 only fixes the
// order of readable and writable ones), and every copy below goes through GuestMemory, so
// overlap cannot hurt the VMM; what the guest reads back from overlapping buffers is its
// own business.
class DescriptorChain {
 public:
  DescriptorChain() = default;  // an empty chain that returns nothing
  DescriptorChain(DescriptorChain&& other) noexcept;
  DescriptorChain& operator=(DescriptorChain&& other) noexcept;
  DescriptorChain(const DescriptorChain&) = delete;
  DescriptorChain& operator=(const DescriptorChain&) = delete;
  ~DescriptorChain();

  // The descriptor index the driver put in the available ring; the used element's id.
  uint16_t head_index() const { return head_; }
  bool malformed() const { return malformed_; }
  // Why the chain is malformed, or empty.
  const std::string& error() const { return error_; }
  // True until the chain has been returned to the guest.
  bool pending() const { return queue_ != nullptr; }

  std::span<const GuestBuffer> readable() const { return readable_; }
  std::span<const GuestBuffer> writable() const { return writable_; }
  // Total bytes of the readable / writable buffers (each at most 2^32, spec §2.7.5.2).
  uint64_t readable_len() const { return readable_len_; }
  uint64_t writable_len() const { return writable_len_; }

  // Copies readable bytes starting `offset` bytes into the readable buffers into `out`;
  // stops at the end of the readable buffers. Returns the number of bytes copied.
  size_t read_at(uint64_t offset, std::span<uint8_t> out) const;
  // All readable bytes, but at most max_len of them (the device's own limit: the guest
  // can describe up to 4 GiB).
  std::vector<uint8_t> read_all(uint64_t max_len) const;
  // Copies `data` into the writable buffers starting `offset` bytes into them; stops at
  // the end of the writable buffers. Returns the number of bytes copied.
  size_t write_at(uint64_t offset, std::span<const uint8_t> data) const;

 private:
  friend class Queue;
  void release();  // returns the chain (length 0) if still pending

  Queue* queue_ = nullptr;  // set while pending
  const GuestMemory* memory_ = nullptr;
  uint64_t generation_ = 0;  // the queue activation this chain belongs to
  uint16_t avail_position_ = 0;  // the queue's next_avail when it popped this chain
  uint16_t head_ = 0;
  bool malformed_ = false;
  std::string error_;
  std::vector<GuestBuffer> readable_;
  std::vector<GuestBuffer> writable_;
  uint64_t readable_len_ = 0;
  uint64_t writable_len_ = 0;
};

// Counters for the stats API; they survive reset().
struct QueueStats {
  uint64_t chains_popped = 0;     // every chain pop() returned, malformed ones included
  uint64_t malformed_chains = 0;  // chains returned with length 0 because they were malformed
  uint64_t dropped_chains = 0;    // well-formed chains the device dropped without add_used
  uint64_t used_notifications = 0;        // needs_notification() answered true
  uint64_t suppressed_notifications = 0;  // needs_notification() answered false
};

class Queue {
 public:
  // max_size: the largest size the device supports (a power of two <= 32768). `label`
  // names the queue in errors and log lines, e.g. "virtio-blk0 queue 0".
  explicit Queue(uint16_t max_size, std::string label = "virtqueue");
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;
  ~Queue() = default;

  const std::string& label() const { return label_; }

  // ---- Configuration, written by the transport while the queue is not active. ---------
  uint16_t max_size() const { return max_size_; }
  // Starts at max_size; the driver may lower it. Checked by validate(), not here.
  uint16_t size() const { return size_; }
  void set_size(uint16_t size) { size_ = size; }
  uint64_t desc_table_address() const { return desc_table_address_; }
  void set_desc_table_address(uint64_t gpa) { desc_table_address_ = gpa; }
  uint64_t avail_ring_address() const { return avail_ring_address_; }
  void set_avail_ring_address(uint64_t gpa) { avail_ring_address_ = gpa; }
  uint64_t used_ring_address() const { return used_ring_address_; }
  void set_used_ring_address(uint64_t gpa) { used_ring_address_ = gpa; }
  // The driver's queue_enable / QueueReady.
  bool ready() const { return ready_; }
  void set_ready(bool ready) { ready_ = ready; }

  // Checks the configuration against the spec and guest RAM: size non-zero, a power of
  // two and <= max_size (§2.7); each ring aligned (§2.7.1: 16, 2, 4 bytes) and wholly
  // inside one guest RAM region, with overflow-safe arithmetic. The error names the ring
  // and its address.
  Result<void> validate(const GuestMemory& memory) const;

  // Validates, then starts serving the rings in `memory` with the negotiated `features`
  // (VIRTIO_F_EVENT_IDX and VIRTIO_F_INDIRECT_DESC matter here; VIRTIO_F_RING_PACKED is
  // refused). `memory` must outlive the activation. Indexes start at 0.
  Result<void> activate(const GuestMemory& memory, uint64_t features);
  bool active() const { return memory_ != nullptr; }
  bool event_idx() const { return event_idx_; }
  bool indirect_descriptors() const { return indirect_; }

  // Back to power-on state: size = max_size, addresses 0, not ready, not active, not
  // broken. Chains still held by the device become inert (their destructor does nothing).
  void reset();

  // ---- Device side, after activate(). ---------------------------------------------------
  // The next available chain, or nothing when the ring is empty, the queue is not active,
  // or the queue is broken. Reads the available idx with acquire ordering (§2.7.13.3.1:
  // the driver's barrier before its idx store pairs with it).
  std::optional<DescriptorChain> pop();
  // True when pop() would return a chain (or find the ring broken).
  bool has_available() const;

  // Gives back `chain`, the chain the latest pop() returned, without using it: the next
  // pop() reads the same available ring entry again and returns the same chain (its
  // descriptors are read anew). For a device that must let go of a chain it has not started
  // on (a request held for the rate limiter, a receive buffer waiting for a frame) before a
  // snapshot, where answering it would be visible to the driver. Chains popped one after
  // another can be given back in reverse order. Returns false, leaving `chain` with the
  // caller, when another chain was popped after it (or it is not this activation's); on
  // success `chain` is empty afterwards. Nothing in guest memory changes, and the available
  // ring entry is still there to read again: the driver writes that slot only when it makes
  // a buffer available `size` entries later, and it cannot while the chain's descriptors are
  // still its device's (a ring of `size` descriptors has no room for `size` more heads).
  bool undo_pop(DescriptorChain& chain);

  // Returns `chain` to the driver: writes the used element {head, written_len}, then
  // publishes the used idx with release ordering (§2.7.8.2: len before idx). written_len
  // is clamped to the chain's writable length. A chain from another queue or from an
  // earlier activation is ignored (and logged: a device bug).
  void add_used(DescriptorChain chain, uint32_t written_len);

  // Whether the driver wants a used-buffer notification for what add_used() published
  // since the previous call (§2.7.7.2): with VIRTIO_F_EVENT_IDX, when used_event lies in
  // that range (the wrap-around-safe vring_need_event rule); otherwise unless the driver
  // set VIRTQ_AVAIL_F_NO_INTERRUPT. False when nothing was published since the last call.
  bool needs_notification();

  // Asks the driver to send (true) or stop sending (false) available-buffer
  // notifications (§2.7.10.2): VIRTQ_USED_F_NO_NOTIFY without EVENT_IDX, avail_event with
  // it. After enabling, pop() again before sleeping.
  void set_notification(bool enabled);

  // The driver broke the ring protocol in a way the device cannot recover from (the
  // available idx moved more than the queue size past the last seen one, §2.7.6.1 /
  // §2.7.13): the queue stops serving chains until reset(), and the fatal-error handler
  // has been called once so the transport can set DEVICE_NEEDS_RESET (§2.1.2).
  bool broken() const { return broken_; }
  const std::string& fatal_error() const { return fatal_error_; }
  // Installed by the transport before the device is activated; called on the device
  // thread, once per activation.
  void set_fatal_error_handler(std::function<void(const Error&)> handler) {
    fatal_error_handler_ = std::move(handler);
  }

  const QueueStats& stats() const { return stats_; }
  // The device's free-running indexes (for tests and state save).
  uint16_t next_avail() const { return next_avail_; }
  uint16_t next_used() const { return next_used_; }
  // next_used at the last needs_notification(): used buffers past it have not been
  // considered for an interrupt yet.
  uint16_t signalled_used() const { return signalled_used_; }
  bool notification_enabled() const { return notification_enabled_; }

  // ---- State (state/stateful.h) ----------------------------------------------------------
  // Kind "virtqueue", version 1: max_size, size, the ring addresses, ready, active,
  // event_idx, indirect, next_avail, next_used, signalled_used, notification_enabled,
  // broken, fatal_error and the QueueStats counters. Called while the device is paused (no
  // thread pops or uses), after the device gave back every chain it held: chains in flight
  // are not part of the state.
  state::StateBlob save_state() const;
  // Applies a save_state() blob to a queue fresh from construction or reset(), with the
  // features the transport restored. Every field is checked (the blob is untrusted): the
  // kind and version, max_size equal to this queue's, and for an active queue the same
  // checks as activate() (size, alignment, every ring inside `memory`) and event_idx /
  // indirect matching `driver_features`. An active queue is activated over `memory` (which
  // must outlive the activation, as for activate()) and then gets its indexes and
  // notification state back, so the next pop() continues where the saved queue stopped;
  // guest memory is not written (see restore_state() in queue.cc for why). The fatal-error
  // handler is not called for a queue saved broken: the transport restores
  // DEVICE_NEEDS_RESET itself. On error the queue is left reset.
  Result<void> restore_state(const state::StateBlob& blob, const GuestMemory& memory,
                             uint64_t driver_features);

 private:
  friend class DescriptorChain;

  // The part of activate() that maps the rings and starts a new activation, without
  // touching the indexes or guest memory (restore_state() shares it).
  Result<void> map_rings(const GuestMemory& memory, uint64_t features);
  uint16_t load_avail_idx() const;
  void write_used(uint32_t id, uint32_t len);
  void return_dropped(DescriptorChain& chain);
  // Walks the chain at `head` into `chain`; returns why it is malformed, if it is.
  std::optional<std::string> walk_chain(uint16_t head, DescriptorChain& chain) const;
  void mark_broken(std::string why);

  const uint16_t max_size_;
  const std::string label_;

  uint16_t size_;
  uint64_t desc_table_address_ = 0;
  uint64_t avail_ring_address_ = 0;
  uint64_t used_ring_address_ = 0;
  bool ready_ = false;

  // Activation state. The spans were checked by GuestMemory::slice() in activate().
  const GuestMemory* memory_ = nullptr;
  std::span<uint8_t> desc_table_;
  std::span<uint8_t> avail_ring_;
  std::span<uint8_t> used_ring_;
  uint64_t generation_ = 0;
  bool event_idx_ = false;
  bool indirect_ = false;
  uint16_t next_avail_ = 0;
  uint16_t next_used_ = 0;
  uint16_t signalled_used_ = 0;  // next_used_ at the last needs_notification()
  bool notification_enabled_ = true;
  bool broken_ = false;
  bool dropped_logged_ = false;
  std::string fatal_error_;
  std::function<void(const Error&)> fatal_error_handler_;

  QueueStats stats_;
  mutable RateLimitedLog guest_log_;
};

}  // namespace skiff::virtio
