// SPDX-License-Identifier: Apache-2.0
#include "virtio/blk/virtio_blk.h"

#include <sched.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/filtered_thread.h"
#include "state/read_field.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {
namespace {

template <typename T>
void store(std::span<uint8_t> config, uint32_t offset, T value) {
  static_assert(std::endian::native == std::endian::little, "virtio config is little-endian");
  std::memcpy(config.data() + offset, &value, sizeof(T));
}

uint32_t clamp_u32(uint64_t value) {
  return static_cast<uint32_t>(std::min<uint64_t>(value, UINT32_MAX));
}

// Largest multiple of `unit` (> 0) not above `value`, but at least `unit`.
uint32_t round_down_to(uint32_t value, uint32_t unit) {
  return std::max(value / unit * unit, unit);
}

void drain_fd(int fd) {
  uint64_t count = 0;
  while (::read(fd, &count, sizeof(count)) > 0) {
  }
}

// The CPU time the calling thread has had. Not in the vDSO: a system call (allowed on the
// blk_io thread by the runtime group), made twice per poll episode.
std::chrono::nanoseconds thread_cpu_time() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec);
}

AdaptivePoll::Params poll_params(const DiskSpec& spec) {
  AdaptivePoll::Params params;
  params.max = std::chrono::microseconds(spec.poll_max_us);
  return params;
}

}  // namespace

void VirtioBlk::AlignedFree::operator()(uint8_t* p) const { std::free(p); }

Result<std::shared_ptr<VirtioBlk>> VirtioBlk::create(const DiskSpec& spec, const GuestMemory& memory) {
  auto opened = DiskBackend::open(spec);
  if (!opened) return std::unexpected(opened.error());
  std::shared_ptr<DiskBackend> backend = std::move(*opened);
  const DiskInfo info = backend->info();
  // The io_uring fallback is logged once per disk, not once per queue.
  auto warned = std::make_shared<std::atomic<bool>>(false);
  EngineFactory factory = [backend, kind = spec.io_engine, warned](uint16_t, uint32_t depth) {
    bool already = warned->load();
    auto engine = make_engine(backend, kind, depth, &already);
    if (already) warned->store(true);
    return engine;
  };
  return create_with_engines(spec, memory, info, std::move(factory), std::move(backend));
}

Result<std::shared_ptr<VirtioBlk>> VirtioBlk::create_with_engines(const DiskSpec& spec,
                                                                  const GuestMemory& memory,
                                                                  const DiskInfo& info,
                                                                  EngineFactory factory,
                                                                  std::shared_ptr<DiskBackend> backend) {
  if (spec.queues == 0) return config_error(fmt::format("disk \"{}\": queues must be at least 1", spec.id));
  if (spec.queue_size == 0 || !std::has_single_bit(spec.queue_size) || spec.queue_size > kMaxQueueSize) {
    return config_error(fmt::format("disk \"{}\": queue_size {} must be a power of two up to {}",
                                    spec.id, spec.queue_size, kMaxQueueSize));
  }
  if (spec.serial.size() > kBlkIdBytes) {
    return config_error(fmt::format("disk \"{}\": serial \"{}\" is longer than {} bytes", spec.id,
                                    spec.serial, kBlkIdBytes));
  }
  std::shared_ptr<VirtioBlk> device(new VirtioBlk(spec, memory, info, std::move(factory), std::move(backend)));
  if (auto ok = device->init_queues(); !ok) return std::unexpected(ok.error());
  return device;
}

VirtioBlk::VirtioBlk(const DiskSpec& spec, const GuestMemory& memory, const DiskInfo& info,
                     EngineFactory factory, std::shared_ptr<DiskBackend> backend)
    : spec_(spec), memory_(memory), info_(info), factory_(std::move(factory)), backend_(std::move(backend)) {
  const bool read_only = spec_.read_only || info_.read_only;
  const bool discard = !read_only && spec_.discard == DiscardMode::kUnmap && info_.discard_supported;
  features_ = feature_mask(kFeatureVersion1) | feature_mask(kFeatureRingIndirectDesc) |
              feature_mask(kFeatureRingEventIdx) | feature_mask(kBlkFeatureSizeMax) |
              feature_mask(kBlkFeatureSegMax) | feature_mask(kBlkFeatureBlkSize) |
              feature_mask(kBlkFeatureTopology) | feature_mask(kBlkFeatureFlush);
  if (read_only) features_ |= feature_mask(kBlkFeatureRo);
  if (discard) features_ |= feature_mask(kBlkFeatureDiscard);
  if (!read_only) features_ |= feature_mask(kBlkFeatureWriteZeroes);
  if (spec_.queues > 1) features_ |= feature_mask(kBlkFeatureMq);

  const uint32_t logical = info_.logical_block_size;
  limits_.capacity = info_.capacity;
  limits_.alignment = (info_.direct || info_.block_device) ? logical : static_cast<uint32_t>(kSectorSize);
  limits_.read_only = read_only;
  limits_.discard = discard;
  limits_.write_zeroes = !read_only;
  // The header and the status take a descriptor each.
  limits_.seg_max = std::clamp<uint32_t>(uint32_t{spec_.queue_size} - 2, 1, kMaxSegments);
  limits_.size_max = kSizeMax;
  const uint32_t sectors_per_block = logical / static_cast<uint32_t>(kSectorSize);
  uint32_t max_discard = kMaxDiscardSectors;
  if (info_.discard_max_bytes != 0) {
    max_discard = std::min(max_discard, clamp_u32(info_.discard_max_bytes >> kSectorShift));
  }
  limits_.max_discard_sectors = round_down_to(max_discard, sectors_per_block);
  limits_.max_discard_seg = kMaxDiscardSegments;
  limits_.max_write_zeroes_sectors = round_down_to(kMaxWriteZeroesSectors, sectors_per_block);
  limits_.max_write_zeroes_seg = kMaxWriteZeroesSegments;

  offered_limits_ = limits_;
  id_bytes_ = spec_.serial.empty() ? spec_.id.substr(0, kBlkIdBytes) : spec_.serial;
  build_config();
}

VirtioBlk::~VirtioBlk() {
  reset();
  // A safety net for VMMs that forget flush() at shutdown: closing the fd alone would leave
  // cache=writeback data in the host page cache, not on the disk.
  if (backend_ != nullptr && !limits_.read_only) {
    if (auto flushed = flush(); !flushed) spdlog::warn("{}", flushed.error().message());
  }
}

Result<void> VirtioBlk::init_queues() {
  for (uint16_t i = 0; i < spec_.queues; ++i) {
    auto q = std::make_unique<QueueState>();
    q->index = i;
    q->notify = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!q->notify.valid()) {
      return std::unexpected(errno_error(fmt::format("disk \"{}\" queue {}: eventfd", spec_.id, i), errno));
    }
    q->timer = UniqueFd(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!q->timer.valid()) {
      return std::unexpected(errno_error(fmt::format("disk \"{}\" queue {}: timerfd_create", spec_.id, i), errno));
    }
    queues_.push_back(std::move(q));
  }
  if (spec_.rate_limit.limited()) limiter_.emplace(spec_.rate_limit.bytes_per_second, spec_.rate_limit.ops_per_second);
  return {};
}

void VirtioBlk::build_config() {
  std::span<uint8_t> config(config_);
  const uint32_t logical = info_.logical_block_size;
  // §5.2.4: capacity in 512-byte sectors whatever blk_size is.
  store<uint64_t>(config, kBlkConfigCapacity, info_.capacity >> kSectorShift);
  store<uint32_t>(config, kBlkConfigSizeMax, limits_.size_max);
  store<uint32_t>(config, kBlkConfigSegMax, limits_.seg_max);
  store<uint32_t>(config, kBlkConfigBlkSize, logical);
  // Topology (§5.2.4 struct virtio_blk_topology), in logical blocks.
  const uint32_t per_physical = std::max(info_.physical_block_size / logical, 1u);
  store<uint8_t>(config, kBlkConfigPhysicalBlockExp, static_cast<uint8_t>(std::bit_width(per_physical) - 1));
  store<uint8_t>(config, kBlkConfigAlignmentOffset,
                 static_cast<uint8_t>(std::min<uint32_t>(info_.alignment_offset / logical, 255)));
  store<uint16_t>(config, kBlkConfigMinIoSize,
                  static_cast<uint16_t>(std::min<uint32_t>(info_.min_io_size / logical, UINT16_MAX)));
  store<uint32_t>(config, kBlkConfigOptIoSize, info_.optimal_io_size / logical);
  // Without VIRTIO_BLK_F_CONFIG_WCE the driver assumes a writeback cache when FLUSH is
  // negotiated (§5.2.5); say so here too.
  store<uint8_t>(config, kBlkConfigWriteback, 1);
  store<uint16_t>(config, kBlkConfigNumQueues, spec_.queues);
  if (limits_.discard) {
    store<uint32_t>(config, kBlkConfigMaxDiscardSectors, limits_.max_discard_sectors);
    store<uint32_t>(config, kBlkConfigMaxDiscardSeg, limits_.max_discard_seg);
    const uint32_t granularity = std::max(info_.discard_granularity, logical);
    store<uint32_t>(config, kBlkConfigDiscardAlignment, granularity >> kSectorShift);
  }
  if (limits_.write_zeroes) {
    store<uint32_t>(config, kBlkConfigMaxWriteZeroesSectors, limits_.max_write_zeroes_sectors);
    store<uint32_t>(config, kBlkConfigMaxWriteZeroesSeg, limits_.max_write_zeroes_seg);
    // §5.2.6.2: set iff a write-zeroes request can deallocate sectors.
    store<uint8_t>(config, kBlkConfigWriteZeroesMayUnmap, limits_.discard ? 1 : 0);
  }
}

uint32_t VirtioBlk::device_type() const { return kDeviceIdBlock; }

std::vector<uint16_t> VirtioBlk::queue_max_sizes() const {
  return std::vector<uint16_t>(spec_.queues, spec_.queue_size);
}

void VirtioBlk::read_config(uint64_t offset, std::span<uint8_t> data) {
  read_config_bytes(config_, offset, data);
}

Result<void> VirtioBlk::activate(uint64_t acked_features, std::vector<Queue*> queues,
                                 std::shared_ptr<VirtioInterrupt> interrupt) {
  std::lock_guard lock(activation_mutex_);
  if (queues.size() != queues_.size()) {
    return internal_error(fmt::format("disk \"{}\": expected {} queues, got {}", spec_.id,
                                      queues_.size(), queues.size()));
  }
  if (interrupt == nullptr) return internal_error(fmt::format("disk \"{}\": no interrupt", spec_.id));
  stop_queues();  // a second activation without reset() replaces the first
  paused_ = false;
  // Requests of a feature the driver did not accept are answered UNSUPP.
  limits_ = offered_limits_;
  limits_.discard = limits_.discard && has_feature(acked_features, kBlkFeatureDiscard);
  limits_.write_zeroes = limits_.write_zeroes && has_feature(acked_features, kBlkFeatureWriteZeroes);
  interrupt_ = std::move(interrupt);
  for (size_t i = 0; i < queues.size(); ++i) {
    QueueState& q = *queues_[i];
    if (queues[i] == nullptr || !queues[i]->active()) continue;
    q.queue = queues[i];
    const uint32_t depth = q.queue->size();
    q.engine = factory_(q.index, depth);
    if (q.engine == nullptr) {
      stop_queues();
      return internal_error(fmt::format("disk \"{}\" queue {}: no I/O engine", spec_.id, i));
    }
    q.slots.clear();
    q.slots.resize(depth);
    q.free_slots.clear();
    for (uint32_t s = depth; s > 0; --s) q.free_slots.push_back(s - 1);
    // The first pass asks needs_notification() even if it uses nothing: a restored queue may
    // carry used buffers whose interrupt the saved device had not raised yet.
    q.used_pending = true;
    q.poll = AdaptivePoll(poll_params(spec_));
    q.poll_setup_pending = true;
    q.idle_known = false;
    q.poll_window_ns.store(0, std::memory_order_relaxed);
    auto loop = EventLoop::create(fmt::format("skiff-{}-q{}", spec_.id, i),
                                  security::filtered_thread_starter(security::ThreadKind::blk_io, worker_seccomp()));
    if (!loop) {
      stop_queues();
      return std::unexpected(loop.error());
    }
    QueueState* state = &q;
    Result<void> added = (*loop)->add(q.notify.get(), [this, state] { on_notify(*state); });
    if (added) added = (*loop)->add(q.timer.get(), [this, state] { on_timer(*state); });
    if (added && q.engine->completion_fd() >= 0) {
      added = (*loop)->add(q.engine->completion_fd(), [this, state] { on_completions(*state); });
    }
    if (!added) {
      stop_queues();
      return std::unexpected(added.error());
    }
    q.loop = std::move(*loop);
  }
  for (auto& q : queues_) {
    if (q->loop == nullptr) continue;
    if (auto started = q->loop->start(); !started) {
      stop_queues();
      return started;
    }
    // Requests posted before activation (or before the ioeventfd existed) are served now.
    notify_queue(q->index);
  }
  return {};
}

void VirtioBlk::notify_queue(uint16_t queue_index) {
  if (queue_index >= queues_.size()) return;
  uint64_t one = 1;
  if (::write(queues_[queue_index]->notify.get(), &one, sizeof(one)) != sizeof(one) && errno != EAGAIN) {
    spdlog::error("disk \"{}\": cannot wake queue {}: {}", spec_.id, queue_index, std::strerror(errno));
  }
}

std::optional<int> VirtioBlk::queue_notify_fd(uint16_t queue_index) const {
  if (queue_index >= queues_.size()) return std::nullopt;
  return queues_[queue_index]->notify.get();
}

// ---- Queue threads ---------------------------------------------------------------------------

void VirtioBlk::on_notify(QueueState& q) {
  note_wakeup(q);
  // Level-triggered: clear the counter first so a notification during the work wakes us again.
  drain_fd(q.notify.get());
  process_queue(q, true);
  poll_queue(q);
}

void VirtioBlk::on_timer(QueueState& q) {
  drain_fd(q.timer.get());
  // The rate limiter's timer says nothing about when the guest or the disk answer.
  q.idle_known = false;
  q.throttled = false;
  process_queue(q);
}

void VirtioBlk::on_completions(QueueState& q) {
  note_wakeup(q);
  reap(q);
  // Completions free slots: requests left on the ring for want of one can start now.
  process_queue(q, true);
  poll_queue(q);
}

void VirtioBlk::note_wakeup(QueueState& q) {
  if (q.poll_setup_pending) {
    q.poll_setup_pending = false;
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    // A host with more CPUs than a cpu_set_t holds fails here (EINVAL): plenty, so poll.
    if (q.poll.enabled() && sched_getaffinity(0, sizeof(cpus), &cpus) == 0 &&
        static_cast<uint32_t>(CPU_COUNT(&cpus)) <= vcpu_count_) {
      // Every CPU this thread may use may be wanted by a vCPU: a spinning thread would only
      // delay the guest it waits for (e.g. the whole VMM under `taskset -c 1`).
      q.poll.disable();
      if (!poll_off_logged_.exchange(true)) {
        spdlog::info("disk \"{}\": no busy polling: its I/O threads may run on {} CPU(s), no more than the "
                     "VM's {} vCPU(s)",
                     spec_.id, CPU_COUNT(&cpus), vcpu_count_);
      }
    }
  }
  if (!q.idle_known) return;
  q.idle_known = false;
  q.poll.on_wakeup(std::chrono::steady_clock::now() - q.idle_since);
  q.poll_window_ns.store(static_cast<uint64_t>(q.poll.window().count()), std::memory_order_relaxed);
}

void VirtioBlk::poll_queue(QueueState& q) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_work = start;  // the handler that called us just did some
  const auto window = q.poll.window();
  if (window > AdaptivePoll::Duration::zero()) {
    const auto cpu_start = thread_cpu_time();
    auto quiet_until = start + window;
    const auto limit = start + kPollLimit;
    auto now = start;
    while (q.queue != nullptr && q.queue->active() && !q.throttled) {
      bool work = false;
      if (q.engine->has_completions()) {
        reap(q);
        work = true;
      }
      if (!q.free_slots.empty() && (q.deferred || q.queue->has_available())) {
        process_queue(q, true);
        work = true;
      }
      now = Clock::now();
      if (work) {
        q.poll.on_poll_hit();
        stats_.poll_hits.fetch_add(1, std::memory_order_relaxed);
        last_work = now;
        quiet_until = now + window;
      }
      if (now >= quiet_until || now >= limit) break;
      __builtin_ia32_pause();
    }
    // A thread that got markedly less CPU than the time it spent here was preempted:
    // something else (a vCPU, most likely) wanted this CPU, and spinning delays it.
    stats_.poll_episodes.fetch_add(1, std::memory_order_relaxed);
    if (q.poll.on_episode(thread_cpu_time() - cpu_start, now - start)) {
      stats_.poll_contended.fetch_add(1, std::memory_order_relaxed);
      q.poll_window_ns.store(0, std::memory_order_relaxed);
    }
  }
  // Before sleeping: notifications on, and whatever arrived meanwhile is served.
  process_queue(q);
  // The next event tells the controller whether a longer window would have caught it.
  q.idle_since = last_work;
  q.idle_known = q.poll.enabled();
}

void VirtioBlk::process_queue(QueueState& q, bool keep_quiet) {
  if (q.queue == nullptr || !q.queue->active() || q.throttled) {
    signal_used(q);
    return;
  }
  // No notifications while we drain the ring; re-enable, then look once more (§2.7.10).
  q.queue->set_notification(false);
  while (true) {
    bool paused = false;
    while (!q.free_slots.empty()) {
      std::optional<DescriptorChain> chain;
      if (q.deferred) {
        chain = std::move(q.deferred);
        q.deferred.reset();
      } else {
        chain = q.queue->pop();
      }
      if (!chain) break;
      if (!start_request(q, std::move(*chain))) {
        paused = true;
        break;
      }
    }
    // Out of slots (a driver that reuses heads can have more requests in flight than the
    // queue size) or throttled: completions or the timer bring us back.
    if (paused || q.free_slots.empty() || keep_quiet) break;
    q.queue->set_notification(true);
    if (!q.queue->has_available()) break;
    q.queue->set_notification(false);
  }
  q.engine->kick();
  reap(q);
}

uint32_t VirtioBlk::alloc_slot(QueueState& q) {
  uint32_t slot = q.free_slots.back();
  q.free_slots.pop_back();
  InFlight& f = q.slots[slot];
  f.iov.clear();
  f.bounce.reset();
  f.pending_ops = 0;
  f.error = 0;
  f.active = true;
  return slot;
}

void VirtioBlk::arm_timer(QueueState& q, std::chrono::nanoseconds wait) {
  // At least 1 µs: a zero it_value would disarm the timer instead.
  const auto ns = std::max<int64_t>(wait.count(), 1000);
  itimerspec spec{};
  spec.it_value.tv_sec = ns / 1'000'000'000;
  spec.it_value.tv_nsec = ns % 1'000'000'000;
  if (timerfd_settime(q.timer.get(), 0, &spec, nullptr) != 0) {
    spdlog::error("disk \"{}\" queue {}: timerfd_settime: {}", spec_.id, q.index, std::strerror(errno));
  }
}

bool VirtioBlk::start_request(QueueState& q, DescriptorChain chain, bool charge_limiter) {
  BlkRequest request = parse_blk_request(chain, limits_);
  if (request.status == kBlkStatusOk && limiter_ && charge_limiter) {
    const bool transfer = request.type == BlkRequestType::kIn || request.type == BlkRequestType::kOut;
    const uint64_t bytes = transfer ? request.data_len : 0;
    std::lock_guard lock(limiter_mutex_);
    if (!limiter_->try_take(bytes)) {
      arm_timer(q, limiter_->wait_time(bytes));
      q.deferred = std::move(chain);
      q.throttled = true;
      stats_.throttled.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  }
  if (!request.has_status) {
    // Nothing can tell the driver what went wrong: give the descriptors back (§2.7.8: used
    // length 0 = nothing written).
    guest_log_.warn("disk \"{}\" queue {}: request returned without status: {}", spec_.id, q.index,
                    request.error);
    stats_.errors.fetch_add(1, std::memory_order_relaxed);
    q.queue->add_used(std::move(chain), 0);
    q.used_pending = true;
    return true;
  }
  if (request.status != kBlkStatusOk) {
    guest_log_.warn("disk \"{}\" queue {}: {} request answered {}: {}", spec_.id, q.index,
                    to_string(request.type), request.status == kBlkStatusUnsupp ? "UNSUPP" : "IOERR",
                    request.error);
    answer(q, std::move(chain), request.status, 1);
    return true;
  }
  if (request.type == BlkRequestType::kGetId) {
    // §5.2.6: NUL-padded, up to 20 bytes, no terminator when 20 long.
    std::array<uint8_t, kBlkIdBytes> id{};
    std::memcpy(id.data(), id_bytes_.data(), std::min<size_t>(id_bytes_.size(), id.size()));
    const size_t n = static_cast<size_t>(std::min<uint64_t>(request.data_len, kBlkIdBytes));
    const size_t written = chain.write_at(0, std::span(id.data(), n));
    answer(q, std::move(chain), kBlkStatusOk, static_cast<uint32_t>(written + 1));
    return true;
  }
  if ((request.type == BlkRequestType::kIn || request.type == BlkRequestType::kOut) && request.data_len == 0) {
    answer(q, std::move(chain), kBlkStatusOk, 1);
    return true;
  }

  const uint32_t slot = alloc_slot(q);
  InFlight& f = q.slots[slot];
  f.chain = std::move(chain);
  f.request = std::move(request);
  f.started = std::chrono::steady_clock::now();
  switch (f.request.type) {
    case BlkRequestType::kIn:
    case BlkRequestType::kOut:
      if (!submit_transfer(q, slot)) finish(q, slot);
      break;
    case BlkRequestType::kFlush:
      f.pending_ops = 1;
      q.engine->submit_flush(slot);
      break;
    case BlkRequestType::kDiscard:
    case BlkRequestType::kWriteZeroes: {
      // Copy: a synchronous engine completes (and may finish) the slot only at reap().
      const std::vector<BlkRange> ranges = f.request.ranges;
      const bool discard = f.request.type == BlkRequestType::kDiscard;
      f.pending_ops = static_cast<uint32_t>(ranges.size());
      for (const BlkRange& range : ranges) {
        if (discard) {
          q.engine->submit_discard(slot, range.offset, range.len);
        } else {
          q.engine->submit_write_zeroes(slot, range.offset, range.len, range.unmap && limits_.discard);
        }
      }
      break;
    }
    case BlkRequestType::kGetId:
    case BlkRequestType::kUnsupported:
      break;  // answered above
  }
  return true;
}

bool VirtioBlk::submit_transfer(QueueState& q, uint32_t slot) {
  InFlight& f = q.slots[slot];
  const bool read = f.request.type == BlkRequestType::kIn;
  bool aligned = true;
  f.iov.reserve(f.request.data.size());
  for (const GuestBuffer& buffer : f.request.data) {
    auto host = memory_.slice(buffer.addr, buffer.len);
    if (!host) {
      // The queue checked this range at pop(); memory does not shrink while we run.
      f.error = -EFAULT;
      io_log_.warn("disk \"{}\" queue {}: {}", spec_.id, q.index, host.error().message());
      return false;
    }
    f.iov.push_back({host->data(), host->size()});
    if (info_.direct && (reinterpret_cast<uintptr_t>(host->data()) % info_.memory_alignment != 0 ||
                         host->size() % limits_.alignment != 0)) {
      aligned = false;
    }
  }
  if (!aligned) {
    // O_DIRECT cannot take these buffers: stage the data in an aligned bounce buffer.
    const size_t alignment = std::max<size_t>({info_.memory_alignment, limits_.alignment, 4096});
    const size_t size = (f.request.data_len + alignment - 1) / alignment * alignment;
    // SAFETY: aligned_alloc with a power-of-two alignment and a size that is a multiple of it.
    f.bounce.reset(static_cast<uint8_t*>(std::aligned_alloc(alignment, size)));
    if (!f.bounce) {
      f.error = -ENOMEM;
      return false;
    }
    if (!read) f.chain.read_at(kBlkHeaderSize, std::span(f.bounce.get(), f.request.data_len));
    f.iov.assign(1, iovec{f.bounce.get(), f.request.data_len});
  }
  f.pending_ops = 1;
  if (read) {
    q.engine->submit_read(slot, f.request.offset(), f.iov);
  } else {
    q.engine->submit_write(slot, f.request.offset(), f.iov);
  }
  return true;
}

void VirtioBlk::reap(QueueState& q) {
  q.completions.clear();
  q.engine->reap(q.completions);
  for (const IoCompletion& completion : q.completions) handle_completion(q, completion);
  signal_used(q);
}

void VirtioBlk::handle_completion(QueueState& q, const IoCompletion& completion) {
  if (completion.tag >= q.slots.size() || !q.slots[completion.tag].active) {
    spdlog::error("disk \"{}\" queue {}: completion for unknown request {}", spec_.id, q.index, completion.tag);
    return;
  }
  const auto slot = static_cast<uint32_t>(completion.tag);
  InFlight& f = q.slots[slot];
  const bool transfer = f.request.type == BlkRequestType::kIn || f.request.type == BlkRequestType::kOut;
  if (f.error == 0) {
    if (completion.result < 0) {
      f.error = completion.result;
    } else if (transfer && static_cast<uint64_t>(completion.result) != f.request.data_len) {
      f.error = -EIO;  // short: the disk ended early (file truncated under us?)
    }
  }
  if (f.pending_ops > 0) --f.pending_ops;
  if (f.pending_ops == 0) finish(q, slot);
}

void VirtioBlk::finish(QueueState& q, uint32_t slot) {
  InFlight& f = q.slots[slot];
  const BlkRequest& request = f.request;
  const auto took = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - f.started);
  const auto took_ns = static_cast<uint64_t>(std::max<int64_t>(took.count(), 0));
  stats_.timed_requests.fetch_add(1, std::memory_order_relaxed);
  stats_.latency_total_ns.fetch_add(took_ns, std::memory_order_relaxed);
  // Only this queue's thread raises its own maximum, but disks have several queues.
  uint64_t max = stats_.latency_max_ns.load(std::memory_order_relaxed);
  while (took_ns > max && !stats_.latency_max_ns.compare_exchange_weak(max, took_ns, std::memory_order_relaxed)) {
  }
  uint8_t status = kBlkStatusOk;
  uint32_t used = 1;
  if (f.error != 0) {
    status = kBlkStatusIoErr;
    io_log_.warn("disk \"{}\" queue {}: {} at sector {} failed: {}", spec_.id, q.index,
                 to_string(request.type), request.sector, std::strerror(static_cast<int>(-f.error)));
  } else {
    switch (request.type) {
      case BlkRequestType::kIn:
        if (f.bounce) f.chain.write_at(0, std::span(f.bounce.get(), request.data_len));
        used = static_cast<uint32_t>(std::min<uint64_t>(request.data_len + 1, UINT32_MAX));
        stats_.reads.fetch_add(1, std::memory_order_relaxed);
        stats_.read_bytes.fetch_add(request.data_len, std::memory_order_relaxed);
        break;
      case BlkRequestType::kOut:
        stats_.writes.fetch_add(1, std::memory_order_relaxed);
        stats_.write_bytes.fetch_add(request.data_len, std::memory_order_relaxed);
        break;
      case BlkRequestType::kFlush:
        stats_.flushes.fetch_add(1, std::memory_order_relaxed);
        break;
      case BlkRequestType::kDiscard:
        stats_.discards.fetch_add(1, std::memory_order_relaxed);
        break;
      case BlkRequestType::kWriteZeroes:
        stats_.write_zeroes.fetch_add(1, std::memory_order_relaxed);
        break;
      case BlkRequestType::kGetId:
      case BlkRequestType::kUnsupported:
        break;
    }
  }
  DescriptorChain chain = std::move(f.chain);
  f.active = false;
  f.bounce.reset();
  f.iov.clear();
  q.free_slots.push_back(slot);
  answer(q, std::move(chain), status, used);
}

void VirtioBlk::answer(QueueState& q, DescriptorChain chain, uint8_t status, uint32_t used_len) {
  // The status is the last writable byte (§5.2.6); parse_blk_request made sure there is one.
  chain.write_at(chain.writable_len() - 1, std::span(&status, 1));
  if (status == kBlkStatusIoErr) stats_.errors.fetch_add(1, std::memory_order_relaxed);
  if (status == kBlkStatusUnsupp) stats_.unsupported.fetch_add(1, std::memory_order_relaxed);
  q.queue->add_used(std::move(chain), used_len);
  q.used_pending = true;
}

void VirtioBlk::signal_used(QueueState& q) {
  if (!q.used_pending || q.queue == nullptr) return;
  q.used_pending = false;
  if (resetting_) return;  // the transport is resetting the device: it may hold its lock
  if (q.queue->needs_notification()) interrupt_->signal_used_queue(q.index);
}

// ---- Reset and shutdown ------------------------------------------------------------------------

void VirtioBlk::stop_queues() {
  // Threads first: after this no handler runs, so their state is ours.
  for (auto& q : queues_) {
    if (q->loop) q->loop->stop();
  }
  resetting_ = true;
  for (auto& q : queues_) {
    complete_in_flight(*q);
    // Anything still held (a deferred chain, a request the engine lost) goes back with
    // length 0 through the chain's destructor.
    q->deferred.reset();
    q->slots.clear();
    q->free_slots.clear();
    q->engine.reset();
    q->loop.reset();
    q->queue = nullptr;
    q->throttled = false;
    q->used_pending = false;
    itimerspec disarm{};
    timerfd_settime(q->timer.get(), 0, &disarm, nullptr);
    drain_fd(q->timer.get());
    drain_fd(q->notify.get());
  }
  resetting_ = false;
  interrupt_.reset();
}

void VirtioBlk::complete_in_flight(QueueState& q) {
  if (!q.engine) return;
  // Let the kernel finish what it has (it writes into guest memory), then answer the driver
  // as usual; the interrupt is left to the caller.
  q.completions.clear();
  q.engine->drain(q.completions);
  for (const IoCompletion& completion : q.completions) handle_completion(q, completion);
}

void VirtioBlk::reset() {
  std::lock_guard lock(activation_mutex_);
  stop_queues();
  paused_ = false;
  limits_ = offered_limits_;  // for the next negotiation
}

Result<void> VirtioBlk::flush() {
  if (backend_ == nullptr) return {};
  if (int ret = backend_->flush(); ret < 0) {
    return std::unexpected(errno_error(
        fmt::format("{}: fdatasync at shutdown (data written by the guest may not be on disk)",
                    backend_->label()),
        -ret));
  }
  return {};
}

BlkStats VirtioBlk::stats() const {
  BlkStats out;
  out.reads = stats_.reads.load();
  out.writes = stats_.writes.load();
  out.read_bytes = stats_.read_bytes.load();
  out.write_bytes = stats_.write_bytes.load();
  out.flushes = stats_.flushes.load();
  out.discards = stats_.discards.load();
  out.write_zeroes = stats_.write_zeroes.load();
  out.errors = stats_.errors.load();
  out.unsupported = stats_.unsupported.load();
  out.throttled = stats_.throttled.load();
  out.timed_requests = stats_.timed_requests.load();
  out.latency_total_ns = stats_.latency_total_ns.load();
  out.latency_max_ns = stats_.latency_max_ns.load();
  out.poll_episodes = stats_.poll_episodes.load();
  out.poll_hits = stats_.poll_hits.load();
  out.poll_contended = stats_.poll_contended.load();
  for (const auto& q : queues_) {
    out.poll_window_ns = std::max(out.poll_window_ns, q->poll_window_ns.load(std::memory_order_relaxed));
  }
  return out;
}

// ---- State ------------------------------------------------------------------------------------

namespace {
constexpr const char* kBlkStateKind = "virtio-blk";
constexpr uint32_t kBlkStateVersion = 1;
}  // namespace

Result<void> VirtioBlk::pause() {
  std::lock_guard lock(activation_mutex_);
  if (paused_) return {};
  bool running = false;
  for (auto& q : queues_) running = running || q->loop != nullptr;
  if (!running) return {};
  // Threads first (the handler running now finishes; the threads never take
  // activation_mutex_): after this their queue state is ours until resume().
  for (auto& q : queues_) {
    if (q->loop) q->loop->stop();
  }
  for (auto& q : queues_) {
    if (q->queue == nullptr || q->engine == nullptr) continue;
    if (q->deferred) {
      // A request the rate limiter held back was popped last (nothing is popped while one
      // waits): the ring gets it back untouched and the next pass pops it again, after
      // resume() or on the device restored from this state. If that ever fails, the request
      // is run now without charging the limiter, so it is still answered before the pause.
      DescriptorChain chain = std::move(*q->deferred);
      q->deferred.reset();
      if (!q->queue->undo_pop(chain)) {
        start_request(*q, std::move(chain), /*charge_limiter=*/false);
        q->engine->kick();
      }
    }
    // Wait for the engine and answer every request it had, in guest memory and in the used
    // ring. The interrupt is not raised here (the transport may hold its lock): the used
    // buffers stay pending in the queue, and the first pass after resume() or on the
    // restored device asks needs_notification() (used_pending).
    complete_in_flight(*q);
    q->used_pending = true;
    // The limiter's pause ends with this one: resume() asks the limiter again.
    q->throttled = false;
    itimerspec disarm{};
    timerfd_settime(q->timer.get(), 0, &disarm, nullptr);
    drain_fd(q->timer.get());
  }
  paused_ = true;
  return {};
}

Result<void> VirtioBlk::resume() {
  std::lock_guard lock(activation_mutex_);
  if (!paused_) return {};
  for (auto& q : queues_) {
    if (q->loop == nullptr) continue;
    if (auto started = q->loop->start(); !started) return started;
    // Requests posted while paused, and the interrupt for what pause() completed.
    notify_queue(q->index);
  }
  paused_ = false;
  return {};
}

Result<state::StateBlob> VirtioBlk::save_state() const {
  const BlkStats s = stats();
  state::StateBlob blob(kBlkStateKind, kBlkStateVersion);
  blob.put("reads", s.reads)
      .put("writes", s.writes)
      .put("read_bytes", s.read_bytes)
      .put("write_bytes", s.write_bytes)
      .put("flushes", s.flushes)
      .put("discards", s.discards)
      .put("write_zeroes", s.write_zeroes)
      .put("errors", s.errors)
      .put("unsupported", s.unsupported)
      .put("throttled", s.throttled)
      .put("timed_requests", s.timed_requests)
      .put("latency_total_ns", s.latency_total_ns)
      .put("latency_max_ns", s.latency_max_ns);
  return blob;
}

Result<void> VirtioBlk::restore_state(const state::StateBlob& blob) {
  using state::read_field;
  std::lock_guard lock(activation_mutex_);
  for (auto& q : queues_) {
    if (q->loop != nullptr) {
      return internal_error(fmt::format("disk \"{}\": restore_state() after activate()", spec_.id));
    }
  }
  if (auto expected = blob.expect(kBlkStateKind, kBlkStateVersion); !expected) return expected;
  BlkStats s;
  for (auto read : {read_field(blob, "reads", s.reads), read_field(blob, "writes", s.writes),
                    read_field(blob, "read_bytes", s.read_bytes), read_field(blob, "write_bytes", s.write_bytes),
                    read_field(blob, "flushes", s.flushes), read_field(blob, "discards", s.discards),
                    read_field(blob, "write_zeroes", s.write_zeroes), read_field(blob, "errors", s.errors),
                    read_field(blob, "unsupported", s.unsupported), read_field(blob, "throttled", s.throttled),
                    read_field(blob, "timed_requests", s.timed_requests),
                    read_field(blob, "latency_total_ns", s.latency_total_ns),
                    read_field(blob, "latency_max_ns", s.latency_max_ns)}) {
    if (!read) return read;
  }
  // Every successful engine request was timed once (finish()), and the longest took no more
  // than all of them together: counters that break this were not written by this device.
  const uint64_t completed[] = {s.reads, s.writes, s.flushes, s.discards, s.write_zeroes};
  uint64_t sum = 0;
  for (uint64_t n : completed) {
    if (n > s.timed_requests - sum) {
      return config_error(fmt::format("state of virtio-blk for disk \"{}\": {} requests timed, fewer than the "
                                      "reads, writes, flushes, discards and write-zeroes completed",
                                      spec_.id, s.timed_requests));
    }
    sum += n;
  }
  if (s.latency_max_ns > s.latency_total_ns) {
    return config_error(fmt::format("state of virtio-blk for disk \"{}\": latency_max_ns {} above latency_total_ns {}",
                                    spec_.id, s.latency_max_ns, s.latency_total_ns));
  }
  stats_.reads.store(s.reads);
  stats_.writes.store(s.writes);
  stats_.read_bytes.store(s.read_bytes);
  stats_.write_bytes.store(s.write_bytes);
  stats_.flushes.store(s.flushes);
  stats_.discards.store(s.discards);
  stats_.write_zeroes.store(s.write_zeroes);
  stats_.errors.store(s.errors);
  stats_.unsupported.store(s.unsupported);
  stats_.throttled.store(s.throttled);
  stats_.timed_requests.store(s.timed_requests);
  stats_.latency_total_ns.store(s.latency_total_ns);
  stats_.latency_max_ns.store(s.latency_max_ns);
  return {};
}

}  // namespace skiff::virtio
