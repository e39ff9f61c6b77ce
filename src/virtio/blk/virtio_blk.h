// SPDX-License-Identifier: Apache-2.0
// virtio-blk (virtio 1.2 §5.2): a raw image file or block device as a guest disk.
//
// Threads: one I/O thread per active queue, named "skiff-<id>-q<N>" (truncated to the
// kernel's 15 characters), each an EventLoop over three fds: the queue's notify eventfd
// (registered by the transport as a KVM ioeventfd), its engine's completion eventfd
// (io_uring), and a timerfd that resumes a queue paused by the rate limiter. Each thread
// owns its queue's engine and in-flight requests; nothing else touches them while it runs.
// activate() and reset() run on the transport's thread, serialised by activation_mutex_;
// reset() stops the threads, then completes what was in flight (draining the engines)
// before it returns, so the kernel writes into guest memory no more after that.
//
// pause() (the snapshot seam, virtio_device.h) stops the threads the same way, then answers
// what the engines had in flight (drain) and gives a request held for the rate limiter back
// to the ring (Queue::undo_pop), keeping the queues, engines and interrupt; resume() starts
// the same threads again.
//
// Data moves between the disk and guest memory without a copy: iovecs point straight at
// the guest buffers. Exception: with O_DIRECT (cache=none), a request whose guest buffers
// are not aligned as the disk requires (DiskInfo::memory_alignment for addresses, the
// logical block size for lengths) goes through an aligned bounce buffer, so the guest gets
// its data rather than an IOERR from a kernel EINVAL.
#pragma once

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/adaptive_poll.h"
#include "common/event_loop.h"
#include "common/token_bucket.h"
#include "common/unique_fd.h"
#include "memory/guest_memory.h"
#include "skiff/spec.h"
#include "virtio/blk/blk_constants.h"
#include "virtio/blk/blk_request.h"
#include "virtio/blk/disk_backend.h"
#include "virtio/blk/io_engine.h"
#include "virtio/core/rate_limited_log.h"
#include "virtio/core/virtio_device.h"

namespace skiff::virtio {

// Counters for the stats API (monotonic, survive reset()).
struct BlkStats {
  uint64_t reads = 0;  // IN requests completed OK
  uint64_t writes = 0;  // OUT requests completed OK
  uint64_t read_bytes = 0;
  uint64_t write_bytes = 0;
  uint64_t flushes = 0;
  uint64_t discards = 0;
  uint64_t write_zeroes = 0;
  uint64_t errors = 0;       // requests answered IOERR, or returned without a status
  uint64_t unsupported = 0;  // requests answered UNSUPP
  uint64_t throttled = 0;    // times the rate limiter paused a queue
  // Requests that went to the engine (reads, writes, flushes, discards, write-zeroes), timed
  // from submission to completion.
  uint64_t timed_requests = 0;
  uint64_t latency_total_ns = 0;
  uint64_t latency_max_ns = 0;
  // Busy polling of the queue threads (poll_queue). Host-side figures: not in the state
  // blob, so they start from zero after a restore.
  uint64_t poll_episodes = 0;   // poll windows run
  uint64_t poll_hits = 0;       // times polling found work (a request or a completion)
  uint64_t poll_contended = 0;  // episodes cut short because the thread was preempted
  uint64_t poll_window_ns = 0;  // the longest current window among the queues
};

class VirtioBlk : public VirtioDevice {
 public:
  // Data buffers per request we accept (seg_max is min(this, queue size - 2)): IOV_MAX
  // minus the header and status descriptors.
  static constexpr uint32_t kMaxSegments = 1022;
  static constexpr uint32_t kSizeMax = 1 << 20;  // size_max: bytes per data buffer
  static constexpr uint32_t kMaxDiscardSectors = 1 << 22;  // 2 GiB per segment
  static constexpr uint32_t kMaxDiscardSegments = 32;
  static constexpr uint32_t kMaxWriteZeroesSectors = 1 << 22;
  static constexpr uint32_t kMaxWriteZeroesSegments = 32;

  // Builds the engine for queue `queue_index` when it is activated; `depth` is the queue size
  // the driver chose.
  using EngineFactory =
      std::function<std::unique_ptr<BlockIoEngine>(uint16_t queue_index, uint32_t depth)>;

  // Opens the disk (DiskBackend::open) and creates the device. `memory` is the guest RAM
  // the transport activates the queues with; it must outlive the device.
  static Result<std::shared_ptr<VirtioBlk>> create(const DiskSpec& spec, const GuestMemory& memory);

  // For tests: a disk described by `info` whose I/O goes to the engines `factory` makes.
  // `backend` (optional) is what flush() syncs.
  static Result<std::shared_ptr<VirtioBlk>> create_with_engines(const DiskSpec& spec,
                                                                const GuestMemory& memory,
                                                                const DiskInfo& info,
                                                                EngineFactory factory,
                                                                std::shared_ptr<DiskBackend> backend = nullptr);
  ~VirtioBlk() override;

  // ---- VirtioDevice ------------------------------------------------------------------------
  uint32_t device_type() const override;
  std::vector<uint16_t> queue_max_sizes() const override;
  uint64_t device_features() const override { return features_; }
  uint32_t config_size() const override { return kBlkConfigSize; }
  void read_config(uint64_t offset, std::span<uint8_t> data) override;
  // Every field is read-only (VIRTIO_BLK_F_CONFIG_WCE is not offered): writes are ignored.
  void write_config(uint64_t, std::span<const uint8_t>) override {}
  Result<void> activate(uint64_t acked_features, std::vector<Queue*> queues,
                        std::shared_ptr<VirtioInterrupt> interrupt) override;
  void notify_queue(uint16_t queue_index) override;
  std::optional<int> queue_notify_fd(uint16_t queue_index) const override;
  void reset() override;

  // State: kind "virtio-blk", version 1, the BlkStats counters. The configuration space is
  // read-only (no VIRTIO_BLK_F_CONFIG_WCE: the cache mode is the spec's), so the guest
  // changes nothing else the device keeps. The rate limiter starts full after a restore,
  // as after creation.
  Result<void> pause() override;
  Result<void> resume() override;
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

  // ---- For the VMM -------------------------------------------------------------------------
  // Makes every completed write durable (fdatasync; nothing for cache=unsafe). The VMM
  // calls it on clean shutdown, after reset() or while the queues run.
  Result<void> flush();
  BlkStats stats() const;
  const DiskSpec& spec() const { return spec_; }
  const DiskInfo& disk_info() const { return info_; }
  // The limits requests are checked against (from the offered features until activation).
  const BlkLimits& limits() const { return limits_; }
  // How many vCPUs the VM has (1 unless told). Before activate(): a queue thread whose
  // CPUs are no more than this does not busy-poll (it could only take their time).
  void set_vcpu_count(uint32_t vcpus) { vcpu_count_ = vcpus; }

 private:
  struct AlignedFree {
    void operator()(uint8_t* p) const;
  };
  // One request between parsing and its status write.
  struct InFlight {
    DescriptorChain chain;
    BlkRequest request;
    std::vector<iovec> iov;
    std::unique_ptr<uint8_t, AlignedFree> bounce;
    uint32_t pending_ops = 0;
    int64_t error = 0;  // the first failing result (-errno, or a short count as -EIO)
    bool active = false;
    std::chrono::steady_clock::time_point started;  // submission, for the latency figures
  };
  // Polling after activity (poll_queue) lasts an adaptive window (AdaptivePoll, capped by
  // the spec's poll_max_us) after the last work found. The limit bounds how long a busy
  // queue keeps the thread from its event loop (a reset waits for it).
  static constexpr std::chrono::microseconds kPollLimit{1000};

  struct QueueState {
    uint16_t index = 0;
    UniqueFd notify;  // eventfd: guest notifications (a KVM ioeventfd once registered)
    UniqueFd timer;   // timerfd: the rate limiter's pause ends
    Queue* queue = nullptr;
    std::unique_ptr<BlockIoEngine> engine;
    std::unique_ptr<EventLoop> loop;
    std::vector<InFlight> slots;  // indexed by the engine tag
    std::vector<uint32_t> free_slots;
    std::optional<DescriptorChain> deferred;  // popped, waiting for the rate limiter
    bool throttled = false;
    bool used_pending = false;  // add_used() since the last notification check
    std::vector<IoCompletion> completions;  // scratch
    // Busy polling (queue thread only, but poll_window_ns, which stats() reads).
    AdaptivePoll poll;
    bool poll_setup_pending = false;  // the thread has not looked at its CPUs yet
    bool idle_known = false;  // idle_since holds when the thread last found work
    std::chrono::steady_clock::time_point idle_since;
    std::atomic<uint64_t> poll_window_ns{0};
  };

  VirtioBlk(const DiskSpec& spec, const GuestMemory& memory, const DiskInfo& info,
            EngineFactory factory, std::shared_ptr<DiskBackend> backend);
  Result<void> init_queues();
  void build_config();

  // Queue-thread handlers.
  void on_notify(QueueState& q);
  void on_timer(QueueState& q);
  void on_completions(QueueState& q);
  // Drains the avail ring. With `keep_quiet` the driver's notifications stay off afterwards
  // (the caller polls), otherwise they are re-enabled and the ring checked once more.
  void process_queue(QueueState& q, bool keep_quiet = false);
  // After activity: polls the avail ring and the engine's completions for the adaptive window
  // after the last work found (at most kPollLimit in all), with the driver's notifications off, so
  // a driver that submits again at once needs no notification (no VM exit) and a completion
  // that arrives in the window needs no wake-up of this thread.
  void poll_queue(QueueState& q);
  // First thing in a handler that may poll: the first time after activation, polling is
  // turned off if the thread's CPUs are no more than the vCPUs; then the controller hears
  // how long the thread was idle before this event.
  void note_wakeup(QueueState& q);
  // Parses and starts one request; false when the rate limiter paused the queue (the chain
  // is kept in q.deferred). With `charge_limiter` false the limiter is not asked (pause()
  // finishing a deferred request it could not give back).
  bool start_request(QueueState& q, DescriptorChain chain, bool charge_limiter = true);
  bool submit_transfer(QueueState& q, uint32_t slot);
  void reap(QueueState& q);
  void handle_completion(QueueState& q, const IoCompletion& completion);
  void finish(QueueState& q, uint32_t slot);
  void answer(QueueState& q, DescriptorChain chain, uint8_t status, uint32_t used_len);
  void signal_used(QueueState& q);
  uint32_t alloc_slot(QueueState& q);
  void arm_timer(QueueState& q, std::chrono::nanoseconds wait);
  void stop_queues();
  // Answers everything the engines have in flight, on the calling thread, without
  // interrupts (reset() and pause(); the threads are stopped).
  void complete_in_flight(QueueState& q);

  const DiskSpec spec_;
  const GuestMemory& memory_;
  const DiskInfo info_;
  const EngineFactory factory_;
  const std::shared_ptr<DiskBackend> backend_;
  uint64_t features_ = 0;
  std::array<uint8_t, kBlkConfigSize> config_{};
  std::string id_bytes_;  // GET_ID answer, at most 20 bytes

  std::mutex activation_mutex_;
  BlkLimits offered_limits_;  // from the offered features
  BlkLimits limits_;  // offered_limits_ narrowed by the driver's features at activate(),
                      // before the threads start
  std::shared_ptr<VirtioInterrupt> interrupt_;
  std::vector<std::unique_ptr<QueueState>> queues_;
  uint32_t vcpu_count_ = 1;
  std::atomic<bool> poll_off_logged_{false};  // the "no polling: shared CPUs" line, once
  bool resetting_ = false;  // reset() is completing requests: no interrupts
  bool paused_ = false;     // pause() stopped the threads (activation_mutex_)

  std::mutex limiter_mutex_;  // the queues share the disk's rate limit
  std::optional<RateLimiter> limiter_;

  struct AtomicStats {
    std::atomic<uint64_t> reads{0}, writes{0}, read_bytes{0}, write_bytes{0}, flushes{0},
        discards{0}, write_zeroes{0}, errors{0}, unsupported{0}, throttled{0}, timed_requests{0},
        latency_total_ns{0}, latency_max_ns{0}, poll_episodes{0}, poll_hits{0}, poll_contended{0};
  };
  AtomicStats stats_;
  RateLimitedLog guest_log_;
  RateLimitedLog io_log_;
};

}  // namespace skiff::virtio
