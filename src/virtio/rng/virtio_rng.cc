// SPDX-License-Identifier: Apache-2.0
#include "virtio/rng/virtio_rng.h"

#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/filtered_thread.h"
#include "state/read_field.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {

Result<std::shared_ptr<VirtioRng>> VirtioRng::create(std::string name) {
  UniqueFd notify(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!notify.valid()) return std::unexpected(errno_error(fmt::format("{}: eventfd", name), errno));
  return std::shared_ptr<VirtioRng>(new VirtioRng(std::move(name), std::move(notify)));
}

VirtioRng::VirtioRng(std::string name, UniqueFd notify) : name_(std::move(name)), notify_(std::move(notify)) {}

VirtioRng::~VirtioRng() { reset(); }

uint32_t VirtioRng::device_type() const { return kDeviceIdEntropy; }

uint64_t VirtioRng::device_features() const {
  return feature_mask(kFeatureVersion1) | feature_mask(kFeatureRingIndirectDesc) |
         feature_mask(kFeatureRingEventIdx);
}

void VirtioRng::read_config(uint64_t, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);  // §5.4.4: no configuration space
}

Result<void> VirtioRng::activate(uint64_t, std::vector<Queue*> queues, std::shared_ptr<VirtioInterrupt> interrupt) {
  std::lock_guard lock(mutex_);
  if (queues.size() != 1 || queues[0] == nullptr) {
    return internal_error(fmt::format("{}: expected 1 queue, got {}", name_, queues.size()));
  }
  auto worker = EventLoop::create(fmt::format("skiff-{}", name_),
                                  security::filtered_thread_starter(security::ThreadKind::rng, worker_seccomp()));
  if (!worker) return std::unexpected(worker.error());
  queue_ = queues[0];
  interrupt_ = std::move(interrupt);
  if (auto added = (*worker)->add(notify_.get(), [this] { process_requests(); }); !added) return added;
  worker_ = std::move(*worker);
  paused_ = false;
  check_notification_ = true;
  if (auto started = worker_->start(); !started) return started;
  // Requests posted before activation (or before the ioeventfd existed) are served now.
  notify_queue(0);
  return {};
}

void VirtioRng::notify_queue(uint16_t) {
  uint64_t one = 1;
  if (::write(notify_.get(), &one, sizeof(one)) != sizeof(one) && errno != EAGAIN) {
    spdlog::error("{}: cannot wake the worker: {}", name_, std::strerror(errno));
  }
}

std::optional<int> VirtioRng::queue_notify_fd(uint16_t queue_index) const {
  return queue_index == 0 ? std::optional<int>(notify_.get()) : std::nullopt;
}

void VirtioRng::process_requests() {
  uint64_t count = 0;
  // Level-triggered epoll: drain the counter first so a notification arriving while we
  // work wakes us again.
  if (::read(notify_.get(), &count, sizeof(count)) < 0 && errno != EAGAIN) {
    spdlog::error("{}: reading the notify eventfd: {}", name_, std::strerror(errno));
  }
  if (!queue_->active()) return;
  bool used_any = false;
  std::array<uint8_t, 4096> random;
  while (auto chain = queue_->pop()) {
    uint32_t written = 0;
    if (!chain->malformed()) {
      // §5.4.6.1: the device fills device-writable buffers; read-only ones are ignored.
      const uint64_t want = std::min<uint64_t>(chain->writable_len(), kMaxBytesPerRequest);
      while (written < want) {
        size_t chunk = std::min<uint64_t>(random.size(), want - written);
        ssize_t got = getrandom(random.data(), chunk, 0);
        if (got <= 0) {
          if (got < 0 && errno == EINTR) continue;
          spdlog::error("{}: getrandom: {}", name_, std::strerror(errno));
          break;
        }
        size_t copied = chain->write_at(written, std::span(random.data(), static_cast<size_t>(got)));
        written += static_cast<uint32_t>(copied);
        if (copied == 0) break;  // the buffers end here
      }
    }
    bytes_served_.fetch_add(written, std::memory_order_relaxed);
    requests_served_.fetch_add(1, std::memory_order_relaxed);
    queue_->add_used(std::move(*chain), written);
    used_any = true;
  }
  const bool check = std::exchange(check_notification_, false);
  if ((used_any || check) && queue_->needs_notification()) interrupt_->signal_used_queue(0);
}

void VirtioRng::reset() {
  std::unique_ptr<EventLoop> worker;
  {
    std::lock_guard lock(mutex_);
    worker = std::move(worker_);
  }
  if (worker) worker->stop();  // joins: no request is being served after this
  std::lock_guard lock(mutex_);
  queue_ = nullptr;
  interrupt_.reset();
  paused_ = false;
  uint64_t count = 0;
  while (::read(notify_.get(), &count, sizeof(count)) > 0) {
  }
}

// ---- State --------------------------------------------------------------------------------

namespace {
constexpr const char* kRngStateKind = "virtio-rng";
constexpr uint32_t kRngStateVersion = 1;
}  // namespace

Result<void> VirtioRng::pause() {
  std::lock_guard lock(mutex_);
  if (worker_ == nullptr || paused_) return {};
  // Joins: process_requests() answers and signals every chain it pops before it returns, so
  // nothing is held after this. The worker never takes mutex_.
  worker_->stop();
  paused_ = true;
  return {};
}

Result<void> VirtioRng::resume() {
  std::lock_guard lock(mutex_);
  if (worker_ == nullptr || !paused_) return {};
  check_notification_ = true;
  if (auto started = worker_->start(); !started) return started;
  paused_ = false;
  // Requests the driver posted while paused (their kick may be pending already).
  notify_queue(0);
  return {};
}

Result<state::StateBlob> VirtioRng::save_state() const {
  state::StateBlob blob(kRngStateKind, kRngStateVersion);
  blob.put("bytes_served", bytes_served_.load()).put("requests_served", requests_served_.load());
  return blob;
}

Result<void> VirtioRng::restore_state(const state::StateBlob& blob) {
  std::lock_guard lock(mutex_);
  if (worker_ != nullptr) return internal_error(fmt::format("{}: restore_state() after activate()", name_));
  if (auto expected = blob.expect(kRngStateKind, kRngStateVersion); !expected) return expected;
  uint64_t bytes = 0;
  uint64_t requests = 0;
  if (auto r = state::read_field(blob, "bytes_served", bytes); !r) return r;
  if (auto r = state::read_field(blob, "requests_served", requests); !r) return r;
  // Each request is answered with at most kMaxBytesPerRequest bytes.
  if (requests <= UINT64_MAX / kMaxBytesPerRequest && bytes > requests * kMaxBytesPerRequest) {
    return config_error(fmt::format("state of virtio-rng for {}: {} bytes served cannot come from {} requests", name_,
                                    bytes, requests));
  }
  bytes_served_.store(bytes);
  requests_served_.store(requests);
  return {};
}

}  // namespace skiff::virtio
