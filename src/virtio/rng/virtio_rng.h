// SPDX-License-Identifier: Apache-2.0
// virtio-rng, the entropy device (virtio 1.2 §5.4): one queue, requestq, of buffers the
// driver posts for the device to fill with random bytes from the host (getrandom(2)).
// No configuration space and no device-specific features.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "common/event_loop.h"
#include "common/unique_fd.h"
#include "virtio/core/virtio_device.h"

namespace skiff::virtio {

class VirtioRng : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  // One request is answered with at most this many bytes (the rest of its buffers stay
  // untouched and used.len says how much was written), so a guest cannot make one request
  // monopolise the device thread.
  static constexpr uint32_t kMaxBytesPerRequest = 64 * 1024;

  // `name` labels the worker thread ("skiff-<name>") and log lines.
  static Result<std::shared_ptr<VirtioRng>> create(std::string name);
  ~VirtioRng() override;

  uint32_t device_type() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  uint64_t device_features() const override;
  uint32_t config_size() const override { return 0; }
  void read_config(uint64_t offset, std::span<uint8_t> data) override;
  void write_config(uint64_t, std::span<const uint8_t>) override {}
  Result<void> activate(uint64_t acked_features, std::vector<Queue*> queues,
                        std::shared_ptr<VirtioInterrupt> interrupt) override;
  void notify_queue(uint16_t queue_index) override;
  std::optional<int> queue_notify_fd(uint16_t queue_index) const override;
  void reset() override;

  // State: kind "virtio-rng", version 1, the counters bytes_served and requests_served (the
  // device has no configuration space and answers every request on its worker's pass, so
  // pause() only stops the worker).
  Result<void> pause() override;
  Result<void> resume() override;
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

  uint64_t bytes_served() const { return bytes_served_.load(); }
  uint64_t requests_served() const { return requests_served_.load(); }

 private:
  VirtioRng(std::string name, UniqueFd notify);
  // Worker thread: answers every available request.
  void process_requests();

  const std::string name_;
  UniqueFd notify_;  // the queue's notification eventfd (a KVM ioeventfd when registered)
  std::mutex mutex_;  // guards activation state against reset()
  Queue* queue_ = nullptr;
  std::shared_ptr<VirtioInterrupt> interrupt_;
  std::unique_ptr<EventLoop> worker_;
  bool paused_ = false;
  // The worker's next pass asks needs_notification() even if it uses nothing: buffers used
  // before a pause, or by the device a restored queue was saved from, may still be waiting
  // for their interrupt. Set before the worker (re)starts; then the worker's.
  bool check_notification_ = false;
  std::atomic<uint64_t> bytes_served_{0};
  std::atomic<uint64_t> requests_served_{0};
};

}  // namespace skiff::virtio
