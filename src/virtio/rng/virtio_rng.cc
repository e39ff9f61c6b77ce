// SPDX-License-Identifier: Apache-2.0
#include "virtio/rng/virtio_rng.h"

#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/filtered_thread.h"
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
  if (used_any && queue_->needs_notification()) interrupt_->signal_used_queue(0);
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
  uint64_t count = 0;
  while (::read(notify_.get(), &count, sizeof(count)) > 0) {
  }
}

}  // namespace skiff::virtio
