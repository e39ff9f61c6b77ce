// SPDX-License-Identifier: Apache-2.0
// Fakes shared by the virtio transport tests: a device that records what its transport
// asks of it, and a NotifyRegistrar that records ioeventfd registrations.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "virtio/core/virtio_constants.h"
#include "virtio/core/virtio_device.h"
#include "virtio/transport/notify_registrar.h"

namespace skiff::virtio::testing {

// A device that records what the transport asks of it.
class RecordingDevice : public VirtioDevice {
 public:
  explicit RecordingDevice(uint32_t type = kDeviceIdNet) : type_(type) {}
  uint32_t device_type() const override { return type_; }
  std::vector<uint16_t> queue_max_sizes() const override { return {64, 16}; }
  uint64_t device_features() const override {
    return feature_mask(kFeatureVersion1) | feature_mask(kFeatureRingEventIdx);
  }
  uint32_t config_size() const override { return static_cast<uint32_t>(config.size()); }
  void read_config(uint64_t offset, std::span<uint8_t> data) override {
    read_config_bytes(config, offset, data);
  }
  void write_config(uint64_t offset, std::span<const uint8_t> data) override {
    write_config_bytes(config, offset, data);
  }
  Result<void> activate(uint64_t features, std::vector<Queue*> queues,
                        std::shared_ptr<VirtioInterrupt> irq) override {
    ++activations;
    acked = features;
    active_queues = queues;
    interrupt = irq;
    if (fail_activation) return internal_error("refused for the test");
    return {};
  }
  void notify_queue(uint16_t index) override { notified.push_back(index); }
  std::optional<int> queue_notify_fd(uint16_t index) const override {
    return index == 0 ? std::optional<int>(42) : std::nullopt;
  }
  void reset() override {
    ++resets;
    interrupt.reset();
    active_queues.clear();
  }
  Result<void> pause() override {
    ++pauses;
    return {};
  }
  Result<void> resume() override {
    ++resumes;
    return {};
  }
  // The device's own state: its configuration bytes.
  Result<state::StateBlob> save_state() const override {
    state::StateBlob blob("recording-device", 1);
    blob.put_bytes("config", config);
    return blob;
  }
  Result<void> restore_state(const state::StateBlob& blob) override {
    if (auto expected = blob.expect("recording-device", 1); !expected) return expected;
    auto bytes = blob.bytes_exact("config", config.size());
    if (!bytes) return std::unexpected(bytes.error());
    config = std::move(*bytes);
    ++restores;
    return {};
  }

  std::vector<uint8_t> config = {1, 2, 3, 4, 5, 6, 7, 8};
  int activations = 0;
  int resets = 0;
  int pauses = 0;
  int resumes = 0;
  int restores = 0;
  bool fail_activation = false;
  uint64_t acked = 0;
  std::vector<Queue*> active_queues;
  std::shared_ptr<VirtioInterrupt> interrupt;
  std::vector<uint16_t> notified;

 private:
  uint32_t type_;
};

class FakeRegistrar : public NotifyRegistrar {
 public:
  struct Entry {
    int fd;
    uint64_t address;
    uint32_t length;
    std::optional<uint64_t> datamatch;
    bool operator==(const Entry&) const = default;
  };
  Result<void> add(int fd, uint64_t address, uint32_t length,
                   std::optional<uint64_t> match) override {
    added.push_back({fd, address, length, match});
    return {};
  }
  void remove(int fd, uint64_t address, uint32_t length, std::optional<uint64_t> match) override {
    removed.push_back({fd, address, length, match});
  }
  std::vector<Entry> added, removed;
};

}  // namespace skiff::virtio::testing
