// SPDX-License-Identifier: Apache-2.0
#include "virtio/balloon/virtio_balloon.h"

#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/filtered_thread.h"
#include "virtio/balloon/balloon_constants.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio::balloon {
namespace {

constexpr uint64_t kPagesPerMib = (uint64_t{1} << 20) >> kPfnShift;

void drain_fd(int fd) {
  uint64_t count = 0;
  while (::read(fd, &count, sizeof(count)) > 0) {
  }
}

void store_le32(uint8_t* out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(value >> (8 * i));
}

uint32_t load_le32(const uint8_t* in) {
  return static_cast<uint32_t>(in[0]) | static_cast<uint32_t>(in[1]) << 8 | static_cast<uint32_t>(in[2]) << 16 |
         static_cast<uint32_t>(in[3]) << 24;
}

uint64_t offered_features(const BalloonSpec& spec) {
  uint64_t features = feature_mask(kFeatureVersion1) | feature_mask(kFeatureRingIndirectDesc) |
                      feature_mask(kFeatureRingEventIdx);
  if (spec.stats_interval_s > 0) features |= feature_mask(kFeatureStatsVq);
  if (spec.deflate_on_oom) features |= feature_mask(kFeatureDeflateOnOom);
  if (spec.free_page_reporting) features |= feature_mask(kFeatureFreePageReporting);
  return features;
}

// inflateq, deflateq, then one queue per queue feature (§5.5.2).
size_t queue_count(uint64_t features) {
  return 2 + (has_feature(features, kFeatureStatsVq) ? 1 : 0) + (has_feature(features, kFeatureFreePageHint) ? 1 : 0) +
         (has_feature(features, kFeatureFreePageReporting) ? 1 : 0);
}

}  // namespace

Result<std::shared_ptr<VirtioBalloon>> VirtioBalloon::create(const BalloonSpec& spec, const GuestMemory& memory) {
  auto reclaimer = MemoryReclaimer::create(memory);
  if (!reclaimer) return std::unexpected(reclaimer.error());
  const uint64_t features = offered_features(spec);
  std::vector<UniqueFd> notify;
  for (size_t i = 0; i < queue_count(features); ++i) {
    UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid()) return std::unexpected(errno_error("balloon: eventfd for a queue", errno));
    notify.push_back(std::move(fd));
  }
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer.valid()) return std::unexpected(errno_error("balloon: timerfd for the statistics", errno));
  const uint64_t ram_pages = memory.total_size() >> kPfnShift;
  std::shared_ptr<VirtioBalloon> balloon(
      new VirtioBalloon(spec, ram_pages, std::move(*reclaimer), std::move(notify), std::move(timer)));
  if (auto target = balloon->set_target_mib(spec.target_mib); !target) {
    return config_error(fmt::format("/balloon/target_mib: {}", target.error().message()));
  }
  return balloon;
}

VirtioBalloon::VirtioBalloon(const BalloonSpec& spec, uint64_t ram_pages, std::unique_ptr<MemoryReclaimer> reclaimer,
                             std::vector<UniqueFd> notify, UniqueFd stats_timer)
    : features_(offered_features(spec)),
      stats_interval_s_(spec.stats_interval_s),
      ram_pages_(ram_pages),
      reclaimer_(std::move(reclaimer)),
      notify_(std::move(notify)),
      stats_timer_(std::move(stats_timer)) {}

VirtioBalloon::~VirtioBalloon() { reset(); }

uint32_t VirtioBalloon::device_type() const { return kDeviceIdBalloon; }

std::vector<uint16_t> VirtioBalloon::queue_max_sizes() const {
  // Every queue has the same size, so a queue keeps working whichever role the driver's
  // features give its index.
  return std::vector<uint16_t>(notify_.size(), kQueueSize);
}

uint32_t VirtioBalloon::config_size() const { return kConfigSize; }

void VirtioBalloon::read_config(uint64_t offset, std::span<uint8_t> data) {
  std::array<uint8_t, kConfigSize> config{};
  {
    std::lock_guard lock(config_mutex_);
    store_le32(&config[kConfigNumPages], num_pages_);
    store_le32(&config[kConfigActual], actual_);
    store_le32(&config[kConfigPoisonVal], poison_val_);
  }
  // free_page_hint_cmd_id stays 0: FREE_PAGE_HINT is not offered.
  read_config_bytes(config, offset, data);
}

void VirtioBalloon::write_config(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(config_mutex_);
  std::array<uint8_t, kConfigSize> config{};
  store_le32(&config[kConfigNumPages], num_pages_);
  store_le32(&config[kConfigActual], actual_);
  store_le32(&config[kConfigPoisonVal], poison_val_);
  write_config_bytes(config, offset, data);
  // §5.5.4: num_pages belongs to the device; the driver writes actual (and poison_val).
  actual_ = load_le32(&config[kConfigActual]);
  poison_val_ = load_le32(&config[kConfigPoisonVal]);
}

Result<void> VirtioBalloon::activate(uint64_t acked_features, std::vector<Queue*> queues,
                                     std::shared_ptr<VirtioInterrupt> interrupt) {
  std::lock_guard lock(mutex_);
  if (queues.size() != notify_.size()) {
    return internal_error(fmt::format("balloon: expected {} queues, got {}", notify_.size(), queues.size()));
  }
  // §5.5.2: the queues that exist for the acknowledged features, numbered consecutively.
  std::vector<Role> roles = {Role::kInflate, Role::kDeflate};
  if (has_feature(acked_features, kFeatureStatsVq)) roles.push_back(Role::kStats);
  if (has_feature(acked_features, kFeatureFreePageReporting)) roles.push_back(Role::kReporting);
  roles.resize(queues.size(), Role::kNone);

  auto worker = EventLoop::create("skiff-balloon",
                                  security::filtered_thread_starter(security::ThreadKind::balloon, worker_seccomp()));
  if (!worker) return std::unexpected(worker.error());
  for (size_t i = 0; i < notify_.size(); ++i) {
    const auto index = static_cast<uint16_t>(i);
    if (auto added = (*worker)->add(notify_[i].get(), [this, index] { on_notify(index); }); !added) return added;
  }
  if (auto added = (*worker)->add(stats_timer_.get(), [this] { on_stats_timer(); }); !added) return added;

  queues_.clear();
  for (Queue* queue : queues) queues_.push_back(queue != nullptr && queue->active() ? queue : nullptr);
  roles_ = std::move(roles);
  interrupt_ = std::move(interrupt);
  stats_index_ = 0;
  for (size_t i = 0; i < roles_.size(); ++i) {
    if (roles_[i] == Role::kStats) stats_index_ = static_cast<uint16_t>(i);
  }
  const bool stats = stats_interval_s_ > 0 && has_feature(acked_features, kFeatureStatsVq) &&
                     queues_[stats_index_] != nullptr;
  worker_ = std::move(*worker);
  if (auto started = worker_->start(); !started) return started;
  arm_stats_timer(stats);
  // Buffers posted before activation (or before the ioeventfds exist) are served now.
  for (size_t i = 0; i < notify_.size(); ++i) notify_queue(static_cast<uint16_t>(i));
  return {};
}

void VirtioBalloon::notify_queue(uint16_t queue_index) {
  if (queue_index >= notify_.size()) return;
  uint64_t one = 1;
  if (::write(notify_[queue_index].get(), &one, sizeof(one)) != sizeof(one) && errno != EAGAIN) {
    spdlog::error("balloon: cannot wake the worker: {}", std::strerror(errno));
  }
}

std::optional<int> VirtioBalloon::queue_notify_fd(uint16_t queue_index) const {
  if (queue_index >= notify_.size()) return std::nullopt;
  return notify_[queue_index].get();
}

void VirtioBalloon::reset() {
  std::unique_ptr<EventLoop> worker;
  {
    std::lock_guard lock(mutex_);
    worker = std::move(worker_);
  }
  if (worker) worker->stop();  // joins: no buffer is being served after this
  std::lock_guard lock(mutex_);
  arm_stats_timer(false);
  drain_fd(stats_timer_.get());
  if (stats_chain_) {
    // The held stats buffer goes back empty so the driver's accounting balances.
    if (stats_index_ < queues_.size() && queues_[stats_index_] != nullptr) {
      queues_[stats_index_]->add_used(std::move(*stats_chain_), 0);
    }
    stats_chain_.reset();
  }
  queues_.clear();
  roles_.clear();
  interrupt_.reset();
  for (const UniqueFd& fd : notify_) drain_fd(fd.get());
  {
    std::lock_guard config_lock(config_mutex_);
    actual_ = 0;
    poison_val_ = 0;
  }
  reclaimer_->forget_given_back();
}

// ---- Host side --------------------------------------------------------------------------------

Result<void> VirtioBalloon::set_target_mib(uint64_t mib) {
  if (mib > std::numeric_limits<uint64_t>::max() / kPagesPerMib) {
    return config_error(fmt::format("balloon target {} MiB is out of range", mib));
  }
  return set_target_pages(mib * kPagesPerMib);
}

Result<void> VirtioBalloon::set_target_pages(uint64_t pages) {
  // A balloon as large as RAM leaves the guest nothing to run on; num_pages is 32 bits.
  if (pages != 0 && (pages >= ram_pages_ || pages > std::numeric_limits<uint32_t>::max())) {
    return config_error(fmt::format("balloon target of {} pages ({} MiB) is not below the guest's {} MiB of RAM",
                                    pages, pages / kPagesPerMib, ram_pages_ / kPagesPerMib));
  }
  {
    std::lock_guard lock(config_mutex_);
    if (num_pages_ == pages) return {};
    num_pages_ = static_cast<uint32_t>(pages);
  }
  std::shared_ptr<VirtioInterrupt> interrupt;
  {
    std::lock_guard lock(mutex_);
    interrupt = interrupt_;
  }
  // With no lock held: the transport takes its own lock, which it holds while calling us.
  if (interrupt) interrupt->signal_config_change();
  return {};
}

uint32_t VirtioBalloon::target_pages() const {
  std::lock_guard lock(config_mutex_);
  return num_pages_;
}

uint32_t VirtioBalloon::actual_pages() const {
  std::lock_guard lock(config_mutex_);
  return actual_;
}

std::optional<BalloonStats> VirtioBalloon::latest_stats() const {
  std::lock_guard lock(stats_mutex_);
  return latest_stats_;
}

BalloonCounters VirtioBalloon::counters() const {
  BalloonCounters out;
  out.reclaim = reclaimer_->counters();
  out.inflate_buffers = inflate_buffers_.load(std::memory_order_relaxed);
  out.deflate_buffers = deflate_buffers_.load(std::memory_order_relaxed);
  out.report_buffers = report_buffers_.load(std::memory_order_relaxed);
  out.stats_received = stats_received_.load(std::memory_order_relaxed);
  out.stats_rejected = stats_rejected_.load(std::memory_order_relaxed);
  out.malformed_buffers = malformed_buffers_.load(std::memory_order_relaxed);
  return out;
}

// ---- Worker side ------------------------------------------------------------------------------

void VirtioBalloon::arm_stats_timer(bool enabled) {
  itimerspec spec{};
  if (enabled) {
    spec.it_value.tv_sec = stats_interval_s_;
    spec.it_interval.tv_sec = stats_interval_s_;
  }
  if (::timerfd_settime(stats_timer_.get(), 0, &spec, nullptr) != 0) {
    spdlog::error("balloon: timerfd_settime: {}", std::strerror(errno));
  }
}

void VirtioBalloon::on_notify(uint16_t index) {
  // Level-triggered epoll: drain first so a notification arriving while we work wakes us
  // again.
  drain_fd(notify_[index].get());
  if (index >= queues_.size() || queues_[index] == nullptr) return;
  switch (roles_[index]) {
    case Role::kInflate: process_pages(index, true); break;
    case Role::kDeflate: process_pages(index, false); break;
    case Role::kStats: process_stats(index); break;
    case Role::kReporting: process_reports(index); break;
    case Role::kNone: break;
  }
}

void VirtioBalloon::signal_used(uint16_t index) {
  if (queues_[index]->needs_notification()) interrupt_->signal_used_queue(index);
}

void VirtioBalloon::process_pages(uint16_t index, bool inflate) {
  Queue& queue = *queues_[index];
  bool used_any = false;
  std::vector<uint8_t> bytes;
  std::vector<uint32_t> pfns;
  while (auto chain = queue.pop()) {
    (inflate ? inflate_buffers_ : deflate_buffers_).fetch_add(1, std::memory_order_relaxed);
    if (chain->malformed()) {
      malformed_buffers_.fetch_add(1, std::memory_order_relaxed);
    } else {
      // §5.5.6: an array of le32 page numbers in the device-readable part.
      const uint64_t length = chain->readable_len();
      if (length % sizeof(uint32_t) != 0) {
        malformed_buffers_.fetch_add(1, std::memory_order_relaxed);
        guest_log_.warn("balloon: {} buffer of {} bytes ends in a partial page number; ignoring the last {} bytes",
                        inflate ? "inflate" : "deflate", length, length % sizeof(uint32_t));
      }
      uint64_t count = length / sizeof(uint32_t);
      if (count > kMaxPfnsPerBuffer) {
        guest_log_.warn("balloon: {} buffer holds {} page numbers; only the first {} are used",
                        inflate ? "inflate" : "deflate", count, kMaxPfnsPerBuffer);
        count = kMaxPfnsPerBuffer;
      }
      bytes.resize(count * sizeof(uint32_t));
      const size_t got = chain->read_at(0, bytes);
      pfns.resize(got / sizeof(uint32_t));
      for (size_t i = 0; i < pfns.size(); ++i) pfns[i] = load_le32(&bytes[i * sizeof(uint32_t)]);
      const ReclaimOutcome outcome = inflate ? reclaimer_->discard_pfns(pfns) : reclaimer_->reuse_pfns(pfns);
      if (outcome.out_of_range != 0) {
        guest_log_.warn("balloon: {} of {} page numbers in an {} buffer lie outside guest RAM; ignored",
                        outcome.out_of_range, pfns.size(), inflate ? "inflate" : "deflate");
      }
    }
    queue.add_used(std::move(*chain), 0);
    used_any = true;
  }
  if (used_any) signal_used(index);
}

void VirtioBalloon::process_stats(uint16_t index) {
  Queue& queue = *queues_[index];
  bool used_any = false;
  while (auto chain = queue.pop()) {
    if (stats_chain_) {
      // The driver owns one stats buffer; a second one means it gave up on the first.
      queue.add_used(std::move(*stats_chain_), 0);
      stats_chain_.reset();
      used_any = true;
    }
    Result<BalloonStats> parsed = guest_error("balloon: malformed stats chain");
    if (!chain->malformed()) {
      const uint64_t length = chain->readable_len();
      if (length > uint64_t{kMaxStatsEntries} * kStatEntrySize) {
        parsed = guest_error(fmt::format("balloon: stats buffer of {} bytes is larger than {} entries", length,
                                         kMaxStatsEntries));
      } else {
        parsed = parse_balloon_stats(chain->read_all(length));
      }
    }
    if (parsed) {
      parsed->received_at = std::chrono::system_clock::now();
      parsed->sequence = stats_received_.fetch_add(1, std::memory_order_relaxed) + 1;
      std::lock_guard lock(stats_mutex_);
      latest_stats_ = std::move(*parsed);
    } else {
      stats_rejected_.fetch_add(1, std::memory_order_relaxed);
      guest_log_.warn("{}", parsed.error().message());
    }
    // Held until the timer asks for the next set (§5.5.6.3).
    stats_chain_ = std::move(*chain);
  }
  if (used_any) signal_used(index);
}

void VirtioBalloon::on_stats_timer() {
  drain_fd(stats_timer_.get());
  if (!stats_chain_ || stats_index_ >= queues_.size() || queues_[stats_index_] == nullptr) return;
  // Returning the buffer is the request for new statistics: the driver refills it and posts
  // it again (§5.5.6.3).
  queues_[stats_index_]->add_used(std::move(*stats_chain_), 0);
  stats_chain_.reset();
  signal_used(stats_index_);
}

void VirtioBalloon::process_reports(uint16_t index) {
  Queue& queue = *queues_[index];
  bool used_any = false;
  while (auto chain = queue.pop()) {
    report_buffers_.fetch_add(1, std::memory_order_relaxed);
    if (chain->malformed()) {
      malformed_buffers_.fetch_add(1, std::memory_order_relaxed);
    } else {
      // §5.5.6.7: the buffers are the free pages themselves (Linux posts them
      // device-writable); the device writes nothing into them. The queue checked every
      // buffer against guest RAM when it popped the chain.
      for (const GuestBuffer& buffer : chain->readable()) reclaimer_->discard_free(buffer.addr, buffer.len);
      for (const GuestBuffer& buffer : chain->writable()) reclaimer_->discard_free(buffer.addr, buffer.len);
    }
    queue.add_used(std::move(*chain), 0);
    used_any = true;
  }
  if (used_any) signal_used(index);
}

}  // namespace skiff::virtio::balloon
