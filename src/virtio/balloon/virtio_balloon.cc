// SPDX-License-Identifier: Apache-2.0
#include "virtio/balloon/virtio_balloon.h"

#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/filtered_thread.h"
#include "state/read_field.h"
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
  UniqueFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return std::unexpected(errno_error("balloon: eventfd for the worker", errno));
  const uint64_t ram_pages = memory.total_size() >> kPfnShift;
  std::shared_ptr<VirtioBalloon> balloon(new VirtioBalloon(spec, ram_pages, std::move(*reclaimer), std::move(notify),
                                                           std::move(timer), std::move(wake)));
  if (auto target = balloon->set_target_mib(spec.target_mib); !target) {
    return config_error(fmt::format("/balloon/target_mib: {}", target.error().message()));
  }
  return balloon;
}

VirtioBalloon::VirtioBalloon(const BalloonSpec& spec, uint64_t ram_pages, std::unique_ptr<MemoryReclaimer> reclaimer,
                             std::vector<UniqueFd> notify, UniqueFd stats_timer, UniqueFd wake)
    : features_(offered_features(spec)),
      stats_interval_s_(spec.stats_interval_s),
      ram_pages_(ram_pages),
      reclaimer_(std::move(reclaimer)),
      notify_(std::move(notify)),
      stats_timer_(std::move(stats_timer)),
      wake_(std::move(wake)) {}

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
  if (auto added = (*worker)->add(wake_.get(), [this] { on_wake(); }); !added) return added;

  queues_.clear();
  for (Queue* queue : queues) queues_.push_back(queue != nullptr && queue->active() ? queue : nullptr);
  roles_ = std::move(roles);
  interrupt_ = std::move(interrupt);
  stats_index_ = 0;
  for (size_t i = 0; i < roles_.size(); ++i) {
    if (roles_[i] == Role::kStats) stats_index_ = static_cast<uint16_t>(i);
  }
  stats_timer_enabled_ = stats_interval_s_ > 0 && has_feature(acked_features, kFeatureStatsVq) &&
                         queues_[stats_index_] != nullptr;
  paused_ = false;
  restored_ = false;
  check_notifications_ = true;
  worker_ = std::move(*worker);
  if (auto started = worker_->start(); !started) return started;
  arm_stats_timer(stats_timer_enabled_);
  // Buffers posted before activation (or before the ioeventfds exist) are served now, and
  // what a restored device still owes the driver (interrupts, a target change) is raised.
  for (size_t i = 0; i < notify_.size(); ++i) notify_queue(static_cast<uint16_t>(i));
  wake_worker();
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
  paused_ = false;
  restored_ = false;
  stats_timer_enabled_ = false;
  config_change_pending_.store(false);
  drain_fd(wake_.get());
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
  std::lock_guard lock(mutex_);
  // Before activation the driver reads num_pages when it starts (unless it is a restored
  // one, running already). After it, the worker raises the notification: this thread must
  // not wait for the transport's lock (the transport holds it while it calls activate() or
  // pause(), which take mutex_), and a paused device raises nothing until resume().
  if (interrupt_ == nullptr && !restored_) return {};
  config_change_pending_.store(true);
  wake_worker();
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

void VirtioBalloon::wake_worker() {
  uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof(one)) != sizeof(one) && errno != EAGAIN) {
    spdlog::error("balloon: cannot wake the worker: {}", std::strerror(errno));
  }
}

void VirtioBalloon::on_wake() {
  drain_fd(wake_.get());
  if (std::exchange(check_notifications_, false)) {
    for (size_t i = 0; i < queues_.size(); ++i) {
      if (queues_[i] != nullptr) signal_used(static_cast<uint16_t>(i));
    }
  }
  if (config_change_pending_.exchange(false)) interrupt_->signal_config_change();
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

// ---- State ------------------------------------------------------------------------------------

namespace {

constexpr const char* kBalloonStateKind = "virtio-balloon";
constexpr uint32_t kBalloonStateVersion = 1;
constexpr const char* kStatsStateKind = "balloon-stats";
constexpr uint32_t kStatsStateVersion = 1;

// The named statistics, by the names named_stats() uses.
struct NamedStat {
  const char* name;
  std::optional<uint64_t> BalloonStats::*field;
};
constexpr NamedStat kNamedStats[] = {
    {"swap_in", &BalloonStats::swap_in},
    {"swap_out", &BalloonStats::swap_out},
    {"major_faults", &BalloonStats::major_faults},
    {"minor_faults", &BalloonStats::minor_faults},
    {"free_memory", &BalloonStats::free_memory},
    {"total_memory", &BalloonStats::total_memory},
    {"available_memory", &BalloonStats::available_memory},
    {"disk_caches", &BalloonStats::disk_caches},
    {"hugetlb_allocations", &BalloonStats::hugetlb_allocations},
    {"hugetlb_failures", &BalloonStats::hugetlb_failures},
};

state::StateBlob save_stats(const BalloonStats& stats) {
  state::StateBlob blob(kStatsStateKind, kStatsStateVersion);
  for (const NamedStat& named : kNamedStats) {
    if (const auto& value = stats.*named.field) blob.put(named.name, *value);
  }
  std::vector<uint64_t> tags;
  std::vector<uint64_t> values;
  for (const BalloonStats::Tagged& tagged : stats.other) {
    tags.push_back(tagged.tag);
    values.push_back(tagged.value);
  }
  const auto since_epoch = std::chrono::duration_cast<std::chrono::nanoseconds>(stats.received_at.time_since_epoch());
  blob.put_u64s("other_tags", tags)
      .put_u64s("other_values", values)
      .put("received_at_ns", static_cast<uint64_t>(std::max<int64_t>(since_epoch.count(), 0)))
      .put("sequence", stats.sequence);
  return blob;
}

Result<BalloonStats> restore_stats(const state::StateBlob& blob) {
  if (auto expected = blob.expect(kStatsStateKind, kStatsStateVersion); !expected) {
    return std::unexpected(expected.error());
  }
  BalloonStats stats;
  for (const NamedStat& named : kNamedStats) {
    if (!blob.has(named.name)) continue;  // not reported by the driver
    uint64_t value = 0;
    if (auto r = state::read_field(blob, named.name, value); !r) return std::unexpected(r.error());
    stats.*named.field = value;
  }
  // A stats buffer holds at most kMaxStatsEntries entries of 16-bit tags.
  auto tags = blob.u64s("other_tags", kMaxStatsEntries, UINT16_MAX);
  if (!tags) return std::unexpected(tags.error());
  auto values = blob.u64s("other_values", kMaxStatsEntries);
  if (!values) return std::unexpected(values.error());
  if (tags->size() != values->size()) {
    return config_error("state of balloon-stats: other_tags and other_values differ in length");
  }
  for (size_t i = 0; i < tags->size(); ++i) {
    stats.other.push_back({static_cast<uint16_t>((*tags)[i]), (*values)[i]});
  }
  // Nanoseconds since the epoch fit the clock's signed 64-bit count until 2262.
  uint64_t received_ns = 0;
  if (auto r = state::read_field(blob, "received_at_ns", received_ns, uint64_t{INT64_MAX}); !r) {
    return std::unexpected(r.error());
  }
  stats.received_at = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(received_ns)));
  if (auto r = state::read_field(blob, "sequence", stats.sequence); !r) return std::unexpected(r.error());
  return stats;
}

}  // namespace

Result<void> VirtioBalloon::pause() {
  std::lock_guard lock(mutex_);
  if (worker_ == nullptr || paused_) return {};
  // Joins after the current handler: every inflate, deflate and report buffer it popped is
  // released (or taken back) and returned by then. The worker never takes mutex_.
  worker_->stop();
  arm_stats_timer(false);
  drain_fd(stats_timer_.get());
  if (stats_chain_) {
    // Returning the held stats buffer asks the driver for new statistics (§5.5.6.3), which
    // is what the timer does: the device holds nothing across the snapshot, and the driver
    // answers the resumed or the restored device alike.
    if (stats_index_ < queues_.size() && queues_[stats_index_] != nullptr) {
      queues_[stats_index_]->add_used(std::move(*stats_chain_), 0);
    }
    stats_chain_.reset();
  }
  // Its interrupt comes from the worker's first pass after resume(), or on the restored
  // device (pending in the queue state): the transport may hold its lock now.
  paused_ = true;
  return {};
}

Result<void> VirtioBalloon::resume() {
  std::lock_guard lock(mutex_);
  if (worker_ == nullptr || !paused_) return {};
  check_notifications_ = true;
  if (auto started = worker_->start(); !started) return started;
  paused_ = false;
  arm_stats_timer(stats_timer_enabled_);
  // Buffers posted while paused (their kicks may be pending already), pending interrupts.
  for (size_t i = 0; i < notify_.size(); ++i) notify_queue(static_cast<uint16_t>(i));
  wake_worker();
  return {};
}

Result<state::StateBlob> VirtioBalloon::save_state() const {
  state::StateBlob blob(kBalloonStateKind, kBalloonStateVersion);
  {
    std::lock_guard lock(config_mutex_);
    blob.put("num_pages", num_pages_).put("actual", actual_).put("poison_val", poison_val_);
  }
  blob.put_bool("config_change_pending", config_change_pending_.load())
      .put("inflate_buffers", inflate_buffers_.load())
      .put("deflate_buffers", deflate_buffers_.load())
      .put("report_buffers", report_buffers_.load())
      .put("stats_received", stats_received_.load())
      .put("stats_rejected", stats_rejected_.load())
      .put("malformed_buffers", malformed_buffers_.load());
  {
    std::lock_guard lock(stats_mutex_);
    blob.put_bool("has_stats", latest_stats_.has_value());
    if (latest_stats_) blob.put_blob("stats", save_stats(*latest_stats_));
  }
  blob.put_blob("reclaimer", reclaimer_->save_state());
  return blob;
}

Result<void> VirtioBalloon::restore_state(const state::StateBlob& blob) {
  using state::read_field;
  std::lock_guard lock(mutex_);
  if (worker_ != nullptr) return internal_error("balloon: restore_state() after activate()");
  if (auto expected = blob.expect(kBalloonStateKind, kBalloonStateVersion); !expected) return expected;
  uint32_t num_pages = 0;
  uint32_t actual = 0;
  uint32_t poison_val = 0;
  bool config_change_pending = false;
  uint64_t inflate = 0;
  uint64_t deflate = 0;
  uint64_t report = 0;
  uint64_t stats_received = 0;
  uint64_t stats_rejected = 0;
  uint64_t malformed = 0;
  bool has_stats = false;
  for (auto read : {read_field(blob, "num_pages", num_pages), read_field(blob, "actual", actual),
                    read_field(blob, "poison_val", poison_val),
                    read_field(blob, "config_change_pending", config_change_pending),
                    read_field(blob, "inflate_buffers", inflate), read_field(blob, "deflate_buffers", deflate),
                    read_field(blob, "report_buffers", report), read_field(blob, "stats_received", stats_received),
                    read_field(blob, "stats_rejected", stats_rejected),
                    read_field(blob, "malformed_buffers", malformed), read_field(blob, "has_stats", has_stats)}) {
    if (!read) return read;
  }
  // The same rule as set_target_pages(): a target below the guest's RAM.
  if (num_pages != 0 && num_pages >= ram_pages_) {
    return config_error(fmt::format("state of virtio-balloon: num_pages {} is not below the guest's {} pages of RAM",
                                    num_pages, ram_pages_));
  }
  std::optional<BalloonStats> stats;
  if (has_stats) {
    auto nested = blob.blob("stats");
    if (!nested) return std::unexpected(nested.error());
    auto parsed = restore_stats(*nested);
    if (!parsed) return std::unexpected(parsed.error());
    // The latest set is one of those received: its sequence number counts them.
    if (parsed->sequence == 0 || parsed->sequence > stats_received) {
      return config_error(fmt::format("state of virtio-balloon: statistics number {} of {} received",
                                      parsed->sequence, stats_received));
    }
    stats = std::move(*parsed);
  }
  auto reclaimer = blob.blob("reclaimer");
  if (!reclaimer) return std::unexpected(reclaimer.error());
  // Last, as it is applied at once: everything before it was only checked.
  if (auto restored = reclaimer_->restore_state(*reclaimer); !restored) return restored;
  {
    std::lock_guard config_lock(config_mutex_);
    num_pages_ = num_pages;
    actual_ = actual;
    poison_val_ = poison_val;
  }
  config_change_pending_.store(config_change_pending);
  inflate_buffers_.store(inflate);
  deflate_buffers_.store(deflate);
  report_buffers_.store(report);
  stats_received_.store(stats_received);
  stats_rejected_.store(stats_rejected);
  malformed_buffers_.store(malformed);
  restored_ = true;
  std::lock_guard stats_lock(stats_mutex_);
  latest_stats_ = std::move(stats);
  return {};
}

}  // namespace skiff::virtio::balloon
