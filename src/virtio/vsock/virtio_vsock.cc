// SPDX-License-Identifier: Apache-2.0
#include "virtio/vsock/virtio_vsock.h"

#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/filtered_thread.h"
#include "state/read_field.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio::vsock {

Result<std::shared_ptr<VirtioVsock>> VirtioVsock::create(uint32_t guest_cid, const std::filesystem::path& socket) {
  auto listener = api::listen_unix_socket(socket, "/vsock/socket");
  if (!listener) return std::unexpected(listener.error());
  auto muxer = VsockMuxer::create(guest_cid, socket, listener->fd.get());
  if (!muxer) {
    api::remove_unix_socket(*listener);
    return std::unexpected(muxer.error());
  }
  std::array<UniqueFd, 3> notify;
  for (auto& fd : notify) {
    fd.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid()) {
      api::remove_unix_socket(*listener);
      return std::unexpected(errno_error("virtio-vsock: eventfd", errno));
    }
  }
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer.valid()) {
    api::remove_unix_socket(*listener);
    return std::unexpected(errno_error("virtio-vsock: timerfd_create", errno));
  }
  return std::shared_ptr<VirtioVsock>(
      new VirtioVsock(guest_cid, std::move(*listener), std::move(*muxer), std::move(notify), std::move(timer)));
}

VirtioVsock::VirtioVsock(uint32_t guest_cid, api::UnixListener listener, std::unique_ptr<VsockMuxer> muxer,
                         std::array<UniqueFd, 3> notify, UniqueFd timer)
    : guest_cid_(guest_cid),
      listener_(std::move(listener)),
      muxer_(std::move(muxer)),
      notify_(std::move(notify)),
      timer_(std::move(timer)),
      packet_(kHeaderSize + kMaxPayload) {}

VirtioVsock::~VirtioVsock() {
  reset();
  muxer_.reset();  // before the listener it polls closes
  api::remove_unix_socket(listener_);
}

uint32_t VirtioVsock::device_type() const { return kDeviceIdVsock; }

uint64_t VirtioVsock::device_features() const {
  return feature_mask(kFeatureVersion1) | feature_mask(kFeatureRingIndirectDesc) |
         feature_mask(kFeatureRingEventIdx);
}

void VirtioVsock::read_config(uint64_t offset, std::span<uint8_t> data) {
  std::array<uint8_t, kConfigSize> config{};
  for (size_t i = 0; i < 4; ++i) config[i] = static_cast<uint8_t>(guest_cid_ >> (8 * i));  // upper half 0
  read_config_bytes(config, offset, data);
}

Result<void> VirtioVsock::activate(uint64_t, std::vector<Queue*> queues, std::shared_ptr<VirtioInterrupt> interrupt) {
  std::lock_guard lock(mutex_);
  if (queues.size() != 3 || std::any_of(queues.begin(), queues.end(), [](Queue* q) { return q == nullptr; })) {
    return internal_error(fmt::format("virtio-vsock: expected 3 queues, got {}", queues.size()));
  }
  auto worker = EventLoop::create("skiff-vsock",
                                  security::filtered_thread_starter(security::ThreadKind::vsock, worker_seccomp()));
  if (!worker) return std::unexpected(worker.error());
  const std::pair<int, EventLoop::Handler> handlers[] = {
      {notify_[kTxQueue].get(), [this] { on_tx(); }},
      {notify_[kRxQueue].get(), [this] { on_rx(); }},
      {notify_[kEventQueue].get(), [this] { on_event_queue(); }},
      {muxer_->poll_fd(), [this] { on_host(); }},
      {timer_.get(), [this] { on_timer(); }},
  };
  for (const auto& [fd, handler] : handlers) {
    if (auto added = (*worker)->add(fd, handler); !added) return added;
  }
  queues_ = std::move(queues);
  interrupt_ = std::move(interrupt);
  worker_ = std::move(*worker);
  paused_ = false;
  check_notification_ = true;
  if (auto started = worker_->start(); !started) {
    worker_.reset();
    queues_.clear();
    interrupt_.reset();
    return started;
  }
  // Packets (and event buffers) posted before the ioeventfds existed are served now.
  for (uint16_t i = 0; i < 3; ++i) notify_queue(i);
  return {};
}

void VirtioVsock::notify_queue(uint16_t queue_index) {
  if (queue_index >= notify_.size()) return;
  uint64_t one = 1;
  if (::write(notify_[queue_index].get(), &one, sizeof(one)) != sizeof(one) && errno != EAGAIN) {
    spdlog::error("virtio-vsock: cannot wake the worker: {}", std::strerror(errno));
  }
}

std::optional<int> VirtioVsock::queue_notify_fd(uint16_t queue_index) const {
  if (queue_index >= notify_.size()) return std::nullopt;
  return notify_[queue_index].get();
}

// ---- Worker -------------------------------------------------------------------------------

void VirtioVsock::drain(int fd) {
  uint64_t count = 0;
  // Level-triggered epoll: read first, so a kick arriving while we work wakes us again.
  if (::read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
    spdlog::error("virtio-vsock: reading an eventfd: {}", std::strerror(errno));
  }
}

void VirtioVsock::on_tx() {
  drain(notify_[kTxQueue].get());
  process_tx();
  finish_pass();
}

void VirtioVsock::on_rx() {
  drain(notify_[kRxQueue].get());
  finish_pass();
}

void VirtioVsock::on_event_queue() {
  drain(notify_[kEventQueue].get());
  finish_pass();
}

void VirtioVsock::on_host() {
  muxer_->on_host_events(Clock::now());
  finish_pass();
}

void VirtioVsock::on_timer() {
  drain(timer_.get());
  muxer_->on_timer(Clock::now());
  finish_pass();
}

void VirtioVsock::process_tx() {
  Queue& tx = *queues_[kTxQueue];
  if (!tx.active()) return;
  while (auto chain = tx.pop()) {
    std::array<uint8_t, kHeaderSize> header_bytes{};
    if (chain->malformed() || chain->readable_len() < kHeaderSize ||
        chain->read_at(0, header_bytes) != kHeaderSize) {
      // Nothing to answer: without a header there is no connection to reset.
      muxer_->count_bad_packet();
      tx.add_used(std::move(*chain), 0);
      used_[kTxQueue] = true;
      continue;
    }
    const PacketHeader header = decode_header(header_bytes);
    const uint64_t carried = chain->readable_len() - kHeaderSize;
    // At most len bytes, and never more than a packet may hold: the muxer rejects the rest
    // from the header alone.
    const size_t take = static_cast<size_t>(std::min<uint64_t>({header.len, carried, kMaxPayload}));
    const size_t got = chain->read_at(kHeaderSize, std::span(packet_.data(), take));
    muxer_->on_guest_packet(header, std::span<const uint8_t>(packet_.data(), got), Clock::now());
    // §5.10.6.2: the device uses transmitted buffers with length 0.
    tx.add_used(std::move(*chain), 0);
    used_[kTxQueue] = true;
  }
}

void VirtioVsock::fill_rx() {
  Queue& rx = *queues_[kRxQueue];
  if (!rx.active()) return;
  while (muxer_->has_packet_for_guest()) {
    auto chain = rx.pop();
    if (!chain) return;  // the driver's next rx kick brings us back
    if (chain->malformed() || chain->writable_len() < kHeaderSize) {
      muxer_->count_bad_packet();
      rx.add_used(std::move(*chain), 0);
      used_[kRxQueue] = true;
      continue;
    }
    const size_t capacity = static_cast<size_t>(std::min<uint64_t>(chain->writable_len(), packet_.size()));
    const size_t size = muxer_->next_packet_for_guest(std::span(packet_.data(), capacity));
    if (size == 0) {
      // Nothing after all (a socket had no data yet): the buffer stays the driver's.
      if (!rx.undo_pop(*chain)) rx.add_used(std::move(*chain), 0);
      return;
    }
    const size_t written = chain->write_at(0, std::span<const uint8_t>(packet_.data(), size));
    rx.add_used(std::move(*chain), static_cast<uint32_t>(written));
    used_[kRxQueue] = true;
  }
}

void VirtioVsock::deliver_transport_reset() {
  if (!transport_reset_pending_) return;
  Queue& events = *queues_[kEventQueue];
  if (!events.active()) return;
  auto chain = events.pop();
  if (!chain) return;  // when the driver posts one, its kick brings us back
  std::array<uint8_t, 4> event{};  // le32 id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
  event[0] = static_cast<uint8_t>(kEventTransportReset);
  const size_t written = chain->malformed() ? 0 : chain->write_at(0, event);
  events.add_used(std::move(*chain), static_cast<uint32_t>(written));
  used_[kEventQueue] = true;
  if (written == event.size()) {
    transport_reset_pending_ = false;
    transport_resets_.fetch_add(1, std::memory_order_relaxed);
  }
}

void VirtioVsock::finish_pass() {
  deliver_transport_reset();
  fill_rx();
  arm_timer();
  const bool check = std::exchange(check_notification_, false);
  for (uint16_t i = 0; i < 3; ++i) {
    if (!(std::exchange(used_[i], false) || check)) continue;
    if (queues_[i]->active() && queues_[i]->needs_notification()) interrupt_->signal_used_queue(i);
  }
}

void VirtioVsock::arm_timer() {
  itimerspec when{};
  if (auto deadline = muxer_->next_deadline()) {
    auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(*deadline - Clock::now());
    left = std::max(left, std::chrono::nanoseconds(1));  // 0 would disarm it
    when.it_value.tv_sec = static_cast<time_t>(left.count() / 1'000'000'000);
    when.it_value.tv_nsec = static_cast<long>(left.count() % 1'000'000'000);
  }
  if (timerfd_settime(timer_.get(), 0, &when, nullptr) != 0) {
    spdlog::error("virtio-vsock: timerfd_settime: {}", std::strerror(errno));
  }
}

void VirtioVsock::reset() {
  std::unique_ptr<EventLoop> worker;
  {
    std::lock_guard lock(mutex_);
    worker = std::move(worker_);
  }
  if (worker) worker->stop();  // joins: no packet is being handled after this
  std::lock_guard lock(mutex_);
  // Host programs see their sockets close; the listener and its backlog stay.
  muxer_->close_all();
  queues_.clear();
  interrupt_.reset();
  paused_ = false;
  used_ = {};
  itimerspec off{};
  timerfd_settime(timer_.get(), 0, &off, nullptr);
  for (const UniqueFd& fd : notify_) drain(fd.get());
  drain(timer_.get());
}

MuxerStats VirtioVsock::stats() const { return muxer_->stats(); }

// ---- State --------------------------------------------------------------------------------

namespace {
constexpr const char* kVsockStateKind = "virtio-vsock";
constexpr uint32_t kVsockStateVersion = 1;
}  // namespace

Result<void> VirtioVsock::pause() {
  std::lock_guard lock(mutex_);
  if (worker_ == nullptr || paused_) return {};
  // Joins. The worker holds no chain between passes: it pops a receive buffer only with a
  // packet to put in it, and uses every transmitted one in the pass that popped it.
  worker_->stop();
  paused_ = true;
  return {};
}

Result<void> VirtioVsock::resume() {
  std::lock_guard lock(mutex_);
  if (worker_ == nullptr || !paused_) return {};
  check_notification_ = true;
  if (auto started = worker_->start(); !started) return started;
  paused_ = false;
  for (uint16_t i = 0; i < 3; ++i) notify_queue(i);
  return {};
}

Result<state::StateBlob> VirtioVsock::save_state() const {
  const MuxerStats totals = muxer_->stats();
  state::StateBlob blob(kVsockStateKind, kVsockStateVersion);
  blob.put("guest_cid", static_cast<uint64_t>(guest_cid_))
      .put("host_connections", totals.host_connections)
      .put("guest_connections", totals.guest_connections)
      .put("refused", totals.refused)
      .put("resets_sent", totals.resets_sent)
      .put("resets_received", totals.resets_received)
      .put("bytes_to_guest", totals.bytes_to_guest)
      .put("bytes_to_host", totals.bytes_to_host)
      .put("bad_packets", totals.bad_packets)
      .put("transport_resets", transport_resets_.load());
  return blob;
}

Result<void> VirtioVsock::restore_state(const state::StateBlob& blob) {
  std::lock_guard lock(mutex_);
  if (worker_ != nullptr) return internal_error("virtio-vsock: restore_state() after activate()");
  if (auto expected = blob.expect(kVsockStateKind, kVsockStateVersion); !expected) return expected;
  uint64_t cid = 0;
  if (auto r = state::read_field(blob, "guest_cid", cid); !r) return r;
  if (cid != guest_cid_) {
    return config_error(fmt::format("state of virtio-vsock: saved with guest CID {}, the spec says {}; restore with "
                                    "the spec the snapshot was taken with",
                                    cid, guest_cid_));
  }
  MuxerStats totals;
  uint64_t resets = 0;
  for (auto [name, field] : {std::pair{"host_connections", &totals.host_connections},
                             std::pair{"guest_connections", &totals.guest_connections},
                             std::pair{"refused", &totals.refused}, std::pair{"resets_sent", &totals.resets_sent},
                             std::pair{"resets_received", &totals.resets_received},
                             std::pair{"bytes_to_guest", &totals.bytes_to_guest},
                             std::pair{"bytes_to_host", &totals.bytes_to_host},
                             std::pair{"bad_packets", &totals.bad_packets}, std::pair{"transport_resets", &resets}}) {
    if (auto r = state::read_field(blob, name, *field); !r) return r;
  }
  muxer_->restore_totals(totals);
  transport_resets_.store(resets);
  // The guest's connections ended with the process that saved them: tell it.
  transport_reset_pending_ = true;
  return {};
}

}  // namespace skiff::virtio::vsock
