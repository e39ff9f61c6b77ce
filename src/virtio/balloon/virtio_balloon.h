// SPDX-License-Identifier: Apache-2.0
// virtio-balloon, the traditional memory balloon (virtio 1.2 §5.5), with memory that really
// goes back to the host: inflated and reported pages are released through MemoryReclaimer
// (madvise, or hole punching in the memfd / hugetlbfs file; see memory/memory_reclaim.h for
// what each backing does, hugepages included).
//
// Queues (§5.5.2), in this order, each present only with its feature:
//   inflateq, deflateq, statsq (STATS_VQ), free_page_vq (FREE_PAGE_HINT, never offered),
//   reporting_vq (PAGE_REPORTING).
// A queue that does not exist takes no index: drivers number the queues that exist
// consecutively (Linux does), so reporting_vq is index 2 without STATS_VQ and 3 with it.
// The device offers one queue per offered feature and assigns the roles in activate() from
// the features the driver acknowledged.
//
// Features offered: VERSION_1, INDIRECT_DESC, EVENT_IDX; STATS_VQ when stats_interval_s > 0;
// DEFLATE_ON_OOM when asked for (nothing to do on the device side: the guest deflates on its
// own); PAGE_REPORTING when asked for. Not MUST_TELL_HOST: pages the guest takes back need
// no host action before use (anonymous and file pages fault back in; a released huge page
// is allocated again when its deflate arrives, and Linux waits for that acknowledgement
// anyway). Not FREE_PAGE_HINT (a migration aid) or PAGE_POISON.
//
// Protocol, all on one worker thread "skiff-balloon" (an EventLoop over one notify eventfd
// per queue, a stats timerfd and a wake eventfd for the host side):
//   - inflateq / deflateq: each buffer is an array of le32 4 KiB page numbers (§5.5.6);
//     every page is checked against guest RAM (outside: ignored and counted), duplicates
//     are harmless, and at most kMaxPfnsPerBuffer are read from one buffer. Buffers go back
//     with length 0 once the pages are released (inflate) or usable again (deflate).
//   - statsq (§5.5.6.3): the device holds the one buffer the driver posts; when the timer
//     fires it returns the buffer, the driver refills and posts it again, and the device
//     parses it (latest_stats()). A buffer the parser refuses is counted and held all the
//     same so the protocol keeps going.
//   - reporting_vq (§5.5.6.7): each buffer of a chain is a range of guest pages the guest
//     found free; they are released (MemoryReclaimer::discard_free) and the chain returned.
//   - config (§5.5.4): num_pages is the host's target (set_target_pages(): the worker sends
//     a configuration change notification), actual is written by the driver
//     (actual_pages()).
//
// Pause (the snapshot seam, virtio_device.h): pause() stops the worker, whose handlers
// finish every inflate, deflate and report buffer they pop before they return, and gives
// the held stats buffer back to the driver, which is the device's request for new
// statistics (§5.5.6.3), as if the stats timer had fired: the driver answers after
// resume(), or to the device restored from this state. A target set while paused is
// announced by the worker after resume().
//
// Threads and locks: activate(), reset(), pause() and resume() run on the transport's
// thread (with its lock held) and take mutex_; the worker runs only between activate() and
// reset(), and not while paused. set_target_*() may be called from any thread: it takes
// config_mutex_ (a leaf) and then mutex_ to mark the change pending and wake the worker,
// which alone raises interrupts (so a paused device raises none, and the host thread never
// waits for the transport's lock). stats_mutex_ is a leaf lock. The MemoryReclaimer has its
// own lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "common/event_loop.h"
#include "common/unique_fd.h"
#include "memory/guest_memory.h"
#include "memory/memory_reclaim.h"
#include "skiff/spec.h"
#include "virtio/balloon/balloon_stats.h"
#include "virtio/core/rate_limited_log.h"
#include "virtio/core/virtio_device.h"

namespace skiff::virtio::balloon {

// Counters of the device since it was created.
struct BalloonCounters {
  ReclaimCounters reclaim;         // pages given back and taken back, bytes released, ...
  uint64_t inflate_buffers = 0;    // buffers served on inflateq
  uint64_t deflate_buffers = 0;    // buffers served on deflateq
  uint64_t report_buffers = 0;     // chains served on reporting_vq
  uint64_t stats_received = 0;     // stats buffers parsed
  uint64_t stats_rejected = 0;     // stats buffers the parser refused
  uint64_t malformed_buffers = 0;  // malformed chains, PFN arrays with a partial entry
  bool operator==(const BalloonCounters&) const = default;
};

class VirtioBalloon : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 128;
  // One inflate/deflate buffer is read up to this many PFNs (Linux sends at most 256), so
  // a guest cannot keep the worker busy for long with one buffer.
  static constexpr uint32_t kMaxPfnsPerBuffer = 64 * 1024;

  // `memory` is the guest RAM both the queues and the ballooned pages live in; it must
  // outlive the device. The initial target is spec.target_mib. Fails when the target is
  // not below the guest's RAM or a RAM region cannot be reclaimed page by page.
  static Result<std::shared_ptr<VirtioBalloon>> create(const BalloonSpec& spec, const GuestMemory& memory);
  ~VirtioBalloon() override;

  // ---- VirtioDevice ------------------------------------------------------------------------
  uint32_t device_type() const override;
  std::vector<uint16_t> queue_max_sizes() const override;
  uint64_t device_features() const override { return features_; }
  uint32_t config_size() const override;
  void read_config(uint64_t offset, std::span<uint8_t> data) override;
  // Only `actual` (and poison_val) are driver-writable; writes to the rest are ignored.
  void write_config(uint64_t offset, std::span<const uint8_t> data) override;
  Result<void> activate(uint64_t acked_features, std::vector<Queue*> queues,
                        std::shared_ptr<VirtioInterrupt> interrupt) override;
  void notify_queue(uint16_t queue_index) override;
  std::optional<int> queue_notify_fd(uint16_t queue_index) const override;
  // Stops the worker, returns the held stats buffer, clears `actual` and forgets which
  // pages the guest had given back (a new driver starts with an empty balloon).
  void reset() override;

  // State: kind "virtio-balloon", version 1: num_pages (the target), actual and poison_val
  // (what the driver wrote), config_change_pending, the counters, the latest statistics
  // with their sequence number (nested "balloon-stats"), and the reclaimer's state (nested
  // "memory-reclaimer": its counters and, on hugetlbfs, which pages the guest gave back).
  Result<void> pause() override;
  Result<void> resume() override;
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

  // ---- Host side (library API) --------------------------------------------------------------
  // Asks the guest to hold `mib` MiB (`pages` 4 KiB pages) in its balloon. The target must be
  // below the guest's RAM. When the driver is active the worker raises a configuration
  // change interrupt (soon after this returns; after resume() when paused); before that the
  // driver reads the target when it starts.
  Result<void> set_target_mib(uint64_t mib);
  Result<void> set_target_pages(uint64_t pages);
  uint32_t target_pages() const;
  // Pages the driver says are in the balloon now (config `actual`), in 4 KiB pages.
  uint32_t actual_pages() const;
  // The last statistics the guest sent; nullopt before the first (or without STATS_VQ).
  std::optional<BalloonStats> latest_stats() const;
  BalloonCounters counters() const;

 private:
  enum class Role { kNone, kInflate, kDeflate, kStats, kReporting };

  VirtioBalloon(const BalloonSpec& spec, uint64_t ram_pages, std::unique_ptr<MemoryReclaimer> reclaimer,
                std::vector<UniqueFd> notify, UniqueFd stats_timer, UniqueFd wake);

  // Worker side.
  void on_notify(uint16_t index);
  // The wake eventfd: a pending configuration change, and after activate() / resume() the
  // used-buffer interrupts still pending in the queues.
  void on_wake();
  void wake_worker();
  void on_stats_timer();
  void process_pages(uint16_t index, bool inflate);
  void process_stats(uint16_t index);
  void process_reports(uint16_t index);
  void signal_used(uint16_t index);
  void arm_stats_timer(bool enabled);

  const uint64_t features_;
  const uint32_t stats_interval_s_;
  const uint64_t ram_pages_;
  std::unique_ptr<MemoryReclaimer> reclaimer_;
  std::vector<UniqueFd> notify_;  // one eventfd per offered queue (a KVM ioeventfd when registered)
  UniqueFd stats_timer_;
  UniqueFd wake_;  // eventfd: the host side (or activate()/resume()) has something for the worker

  mutable std::mutex config_mutex_;  // leaf lock
  uint32_t num_pages_ = 0;
  uint32_t actual_ = 0;
  uint32_t poison_val_ = 0;

  std::mutex mutex_;  // guards the activation state below against reset()
  std::vector<Queue*> queues_;  // by index; nullptr when the queue is not active
  std::vector<Role> roles_;     // by index
  std::shared_ptr<VirtioInterrupt> interrupt_;
  std::unique_ptr<EventLoop> worker_;
  std::optional<DescriptorChain> stats_chain_;  // the stats buffer the device holds (worker)
  uint16_t stats_index_ = 0;
  bool stats_timer_enabled_ = false;
  bool paused_ = false;
  // The worker's next on_wake() asks needs_notification() on every queue. Set before the
  // worker (re)starts; then the worker's.
  bool check_notifications_ = false;
  // A target change the driver has not been told about (the worker raises it).
  std::atomic<bool> config_change_pending_{false};
  // restore_state() ran and activate() has not yet: the driver is already running in the
  // restored guest, so a target set now must be announced once the worker starts.
  bool restored_ = false;

  mutable std::mutex stats_mutex_;  // leaf lock
  std::optional<BalloonStats> latest_stats_;

  std::atomic<uint64_t> inflate_buffers_{0}, deflate_buffers_{0}, report_buffers_{0};
  std::atomic<uint64_t> stats_received_{0}, stats_rejected_{0}, malformed_buffers_{0};
  RateLimitedLog guest_log_;
};

}  // namespace skiff::virtio::balloon
