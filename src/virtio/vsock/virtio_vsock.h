// SPDX-License-Identifier: Apache-2.0
// virtio-vsock (virtio 1.2 §5.10), served by skiff itself over Unix sockets: no
// /dev/vhost-vsock on the host. The connection logic is VsockMuxer (vsock_muxer.h, which
// also states the buffering bound); this class is the device around it:
//
//   queues      rx (0): buffers the driver posts for packets to the guest; tx (1): the
//               guest's packets; event (2): buffers for device events (TRANSPORT_RESET).
//   config      le64 guest_cid (§5.10.4), read-only.
//   features    VERSION_1, EVENT_IDX, INDIRECT_DESC; stream sockets only (no
//               VIRTIO_VSOCK_F_SEQPACKET), which is what a driver assumes without
//               VIRTIO_VSOCK_F_STREAM.
//   thread      "skiff-vsock" (EventLoop, seccomp kind vsock): the three queue eventfds,
//               the muxer's epoll set (listening socket and every connection), a timerfd
//               for connection deadlines.
//
// The listening socket is bound when the device is created (so a spec whose socket is in
// use fails before the VM starts) and removed when the device goes. Host programs that
// connect before the guest driver is ready wait in its backlog.
//
// State: kind "virtio-vsock", version 1: guest_cid and the counters. Connections are not
// saved: the host ends of them belong to this process. A restored device (restore_state
// before activate) sends the guest VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue
// as soon as the driver posts an event buffer, so the guest drops every connection it had,
// as Firecracker's does. pause()/resume() within one process keep the connections.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "api/unix_socket.h"
#include "common/event_loop.h"
#include "common/unique_fd.h"
#include "virtio/core/virtio_device.h"
#include "virtio/vsock/vsock_muxer.h"

namespace skiff::virtio::vsock {

class VirtioVsock : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  static constexpr uint16_t kEventQueue = 2;
  static constexpr uint32_t kConfigSize = 8;

  // Binds and listens on `socket` (0600; a stale socket is replaced, a live one refused).
  static Result<std::shared_ptr<VirtioVsock>> create(uint32_t guest_cid, const std::filesystem::path& socket);
  ~VirtioVsock() override;

  uint32_t device_type() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize, kQueueSize}; }
  uint64_t device_features() const override;
  uint32_t config_size() const override { return kConfigSize; }
  void read_config(uint64_t offset, std::span<uint8_t> data) override;
  void write_config(uint64_t, std::span<const uint8_t>) override {}  // read-only (§5.10.4)
  Result<void> activate(uint64_t acked_features, std::vector<Queue*> queues,
                        std::shared_ptr<VirtioInterrupt> interrupt) override;
  void notify_queue(uint16_t queue_index) override;
  std::optional<int> queue_notify_fd(uint16_t queue_index) const override;
  // Stops the worker and closes every connection; the listening socket stays.
  void reset() override;

  Result<void> pause() override;
  Result<void> resume() override;
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

  uint32_t guest_cid() const { return guest_cid_; }
  const std::filesystem::path& socket_path() const { return listener_.path; }
  MuxerStats stats() const;
  // Transport-reset events delivered to the guest (after restores).
  uint64_t transport_resets() const { return transport_resets_.load(); }

 private:
  VirtioVsock(uint32_t guest_cid, api::UnixListener listener, std::unique_ptr<VsockMuxer> muxer,
              std::array<UniqueFd, 3> notify, UniqueFd timer);

  // Worker entry points.
  void on_tx();
  void on_rx();
  void on_event_queue();
  void on_host();
  void on_timer();
  // Fills receive buffers with what the muxer has for the guest, then re-arms the timer and
  // signals the queues that used buffers.
  void finish_pass();
  void process_tx();
  void fill_rx();
  void deliver_transport_reset();
  void arm_timer();
  void drain(int fd);

  const uint32_t guest_cid_;
  api::UnixListener listener_;
  std::unique_ptr<VsockMuxer> muxer_;
  std::array<UniqueFd, 3> notify_;  // per queue, registered as KVM ioeventfds
  UniqueFd timer_;

  std::mutex mutex_;  // guards the activation state against reset()
  std::vector<Queue*> queues_;
  std::shared_ptr<VirtioInterrupt> interrupt_;
  std::unique_ptr<EventLoop> worker_;
  bool paused_ = false;
  // The worker's: check every queue for pending interrupts on its next pass (after
  // activate and resume), and whether each queue used a buffer in this pass.
  bool check_notification_ = false;
  std::array<bool, 3> used_{};
  bool transport_reset_pending_ = false;  // set by restore_state(), cleared once delivered
  std::vector<uint8_t> packet_;           // the worker's buffer for one packet
  std::atomic<uint64_t> transport_resets_{0};
};

}  // namespace skiff::virtio::vsock
