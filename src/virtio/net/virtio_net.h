// SPDX-License-Identifier: Apache-2.0
// virtio-net (virtio 1.2 §5.1) backed by a Linux tap (or any NetBackend).
//
// Queues: receiveq0, transmitq0, receiveq1, transmitq1, ..., then controlq (§5.1.2); the
// control queue always exists because CTRL_VQ is always offered.
//
// Data path, per queue pair, on one worker thread "skiff-<id>-q<N>" (an EventLoop; pair 0's
// thread also serves the control queue):
//   - TX: each chain's readable buffers (virtio-net header + frame) are handed to writev()
//     as iovecs pointing into guest memory: no copy. Chains with a writable part, shorter
//     than the header or longer than header + kMaxFrameSize are dropped (counted) and
//     returned with length 0.
//   - RX: readv() from the tap straight into the guest's writable buffers. With MRG_RXBUF a
//     frame may span several chains (num_buffers in the header says how many); the device
//     gathers chains until they could hold the largest frame the guest may receive, or the
//     ring is empty. A frame that outgrows the buffers at hand is finished in a bounce buffer
//     and copied into the next chains when the guest posts them; only a frame that can
//     never fit (the whole ring is too small, or without MRG_RXBUF the chain is too small)
//     is dropped and counted. With no RX buffers the tap fd leaves the epoll set, so the
//     worker neither spins nor drops: the guest's next kick resumes reading.
//   - Rate limits (skiff::RateLimiter, per NIC and direction): when a frame is refused the
//     worker parks it, stops reading the tap (RX) or popping (TX), and arms a timerfd.
//
// Pause (the snapshot seam, virtio_device.h): pause() stops the workers, then, on the
// transport's thread, gives every held chain back: RX buffers waiting for a frame and a TX
// chain waiting for the rate limiter go back to their rings untouched (Queue::undo_pop); a
// received frame that only waited for the RX limiter is delivered; a frame still waiting
// for more RX buffers (its tail in the bounce buffer) is dropped and counted, as when the
// ring is too small. Frames arriving meanwhile wait in the tap. resume() restarts the same
// workers.
//
// Threads and locks: activate(), reset(), pause() and resume() run on the transport's
// thread with mutex_ held while no worker runs; each pair's state is touched only by its own worker after that.
// The control queue handler changes the number of active pairs (an atomic) and wakes the
// other workers through their RX eventfds; each worker attaches or detaches its own tap
// queue. The rate limiters are shared by all workers under limiter_mutex_ (a leaf lock).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/event_loop.h"
#include "common/token_bucket.h"
#include "common/unique_fd.h"
#include "memory/guest_memory.h"
#include "skiff/spec.h"
#include "virtio/core/virtio_device.h"
#include "virtio/net/net_backend.h"

namespace skiff::virtio::net {

// Per-NIC traffic counters; bytes count frames without the virtio-net header.
struct NetCounters {
  uint64_t rx_bytes = 0;    // tap -> guest
  uint64_t rx_packets = 0;
  uint64_t rx_dropped = 0;  // frames read from the tap that no guest buffer could hold
  uint64_t tx_bytes = 0;    // guest -> tap
  uint64_t tx_packets = 0;
  uint64_t tx_dropped = 0;  // malformed or oversized chains, and frames the tap refused
};

class VirtioNet : public VirtioDevice {
 public:
  static constexpr uint16_t kCtrlQueueSize = 64;

  // Opens the tap the spec names (or adopts spec.tap_fd), then builds the device. The MAC is
  // spec.mac or generate_mac(vm_name, spec.id). `memory` is the guest RAM the queues live in;
  // it must outlive the device.
  static Result<std::shared_ptr<VirtioNet>> create(const NetSpec& spec, std::string_view vm_name,
                                                   const GuestMemory& memory);
  // The same over any backend (tests pass socketpairs). spec.tap/tap_fd are not used;
  // backend->queue_count() must equal spec.queues.
  static Result<std::shared_ptr<VirtioNet>> create_with_backend(const NetSpec& spec, std::string_view vm_name,
                                                                std::unique_ptr<NetBackend> backend,
                                                                const GuestMemory& memory);
  ~VirtioNet() override;

  uint32_t device_type() const override;
  std::vector<uint16_t> queue_max_sizes() const override;
  uint64_t device_features() const override { return features_; }
  // The feature dependencies of §5.1.3.1.
  std::string check_features(uint64_t driver_features) const override;
  uint32_t config_size() const override;
  void read_config(uint64_t offset, std::span<uint8_t> data) override;
  // The configuration space is read-only (§5.1.4): writes are ignored.
  void write_config(uint64_t, std::span<const uint8_t>) override {}
  Result<void> activate(uint64_t acked_features, std::vector<Queue*> queues,
                        std::shared_ptr<VirtioInterrupt> interrupt) override;
  void notify_queue(uint16_t queue_index) override;
  std::optional<int> queue_notify_fd(uint16_t queue_index) const override;
  // Stops the workers and returns every held chain; the tap stays open for the next
  // activation.
  void reset() override;

  // State: kind "virtio-net", version 1: active_queue_pairs (the driver's VQ_PAIRS_SET) and
  // the NetCounters. The configuration space is read-only and CTRL_MAC_ADDR is not offered,
  // so the MAC stays the spec's; the CTRL_RX modes and MAC table are acknowledged without
  // being kept (skiff does not filter). The rate limiters start full after a restore.
  Result<void> pause() override;
  Result<void> resume() override;
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

  NetCounters counters() const;
  const MacAddress& mac() const { return mac_; }
  const std::string& id() const { return id_; }
  uint16_t queue_pairs() const { return pairs_; }
  // Queue pairs in use: 1 until the driver sends VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET.
  uint16_t active_queue_pairs() const { return active_pairs_.load(); }
  uint16_t ctrl_queue_index() const { return static_cast<uint16_t>(2 * pairs_); }
  NetBackend& backend() { return *backend_; }

 private:
  struct Pair;
  struct Counters {
    std::atomic<uint64_t> rx_bytes{0}, rx_packets{0}, rx_dropped{0};
    std::atomic<uint64_t> tx_bytes{0}, tx_packets{0}, tx_dropped{0};
  };

  VirtioNet(const NetSpec& spec, MacAddress mac, std::unique_ptr<NetBackend> backend, const GuestMemory& memory,
            std::vector<std::unique_ptr<Pair>> pairs, UniqueFd ctrl_notify);

  // Worker entry points (a pair's EventLoop).
  void on_rx(Pair& pair);
  void on_rx_timer(Pair& pair);
  void on_tx(Pair& pair);
  void on_tx_timer(Pair& pair);
  void on_ctrl();

  void process_rx(Pair& pair);
  void process_tx(Pair& pair);
  // Returns the RX chains that hold the frame received (num_buffers written) and counts it.
  void deliver_frame(Pair& pair);
  // Writes one well-formed TX chain to the backend and returns it.
  void transmit(Pair& pair, DescriptorChain chain);
  // The used-buffer interrupts of the pair's queues, when something was used (used_rx/tx).
  void signal_used(Pair& pair);
  // pause(): gives back the chains a stopped worker held.
  void release_held_chains(Pair& pair);
  bool fill_rx_chains(Pair& pair);
  void set_tap_polling(Pair& pair, bool enabled);
  void arm_timer(int timer_fd, std::chrono::nanoseconds delay);
  uint8_t handle_ctrl(const DescriptorChain& chain);
  void wake(int event_fd);

  const std::string id_;
  const MacAddress mac_;
  const uint16_t pairs_;
  const uint16_t queue_size_;
  const std::optional<uint32_t> mtu_;  // offered through VIRTIO_NET_F_MTU when set
  const GuestMemory& memory_;
  std::unique_ptr<NetBackend> backend_;
  uint64_t features_ = 0;
  std::vector<std::unique_ptr<Pair>> pair_state_;
  UniqueFd ctrl_notify_;

  std::mutex mutex_;  // guards the activation state below against reset()
  uint64_t acked_ = 0;
  bool mergeable_ = false;
  uint64_t rx_target_ = 0;  // bytes of RX buffers to gather before reading a frame
  Queue* ctrl_ = nullptr;
  std::shared_ptr<VirtioInterrupt> interrupt_;
  std::vector<std::unique_ptr<EventLoop>> workers_;
  bool paused_ = false;
  // The control queue's next pass asks needs_notification() (as Pair::used_rx does).
  bool ctrl_check_ = false;

  std::atomic<uint16_t> active_pairs_{1};

  std::mutex limiter_mutex_;  // leaf lock
  RateLimiter rx_limiter_;
  RateLimiter tx_limiter_;

  Counters counters_;
};

}  // namespace skiff::virtio::net
