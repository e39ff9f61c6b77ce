// SPDX-License-Identifier: Apache-2.0
#include "virtio/net/virtio_net.h"

#include <linux/if_tun.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/filtered_thread.h"
#include "state/read_field.h"
#include "virtio/core/rate_limited_log.h"
#include "virtio/core/virtio_constants.h"
#include "virtio/net/mac.h"
#include "virtio/net/net_constants.h"
#include "virtio/net/tap.h"

namespace skiff::virtio::net {
namespace {

// IOV_MAX: readv/writev take at most this many iovecs.
constexpr size_t kMaxIovecs = 1024;
// Work done per wake-up before yielding to the other fds of the loop (RX frames, TX chains).
constexpr int kRxBudget = 64;
constexpr int kTxBudget = 256;
// A frame larger than this (header included) cannot come from a tap.
constexpr uint64_t kBounceSize = 2 * (kNetHeaderSize + kMaxFrameSize);
// tun's limit on the queues of one tap.
constexpr uint16_t kMaxQueuePairs = 256;

// One RX chain held by the device: popped, not yet returned.
struct HeldChain {
  DescriptorChain chain;
  uint64_t capacity = 0;  // usable writable bytes (capped at one frame)
  uint64_t filled = 0;    // bytes of the frame being received that it holds
};

Result<UniqueFd> make_eventfd(std::string_view what) {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd.valid()) return std::unexpected(errno_error(fmt::format("{}: eventfd", what), errno));
  return fd;
}

void drain_fd(int fd) {
  uint64_t count = 0;
  while (::read(fd, &count, sizeof(count)) > 0) {
  }
}

// Appends iovecs covering the first `max_bytes` of `buffers` (slices of guest memory checked
// by GuestMemory). Returns the bytes covered, or nullopt when a buffer does not resolve (the
// queue checked it at pop time, so that is a bug, handled like a malformed chain).
std::optional<uint64_t> append_iovecs(const GuestMemory& memory, std::span<const GuestBuffer> buffers,
                                      uint64_t max_bytes, std::vector<iovec>& iov) {
  uint64_t covered = 0;
  for (const GuestBuffer& buffer : buffers) {
    if (covered >= max_bytes || iov.size() >= kMaxIovecs) break;
    uint64_t len = std::min<uint64_t>(buffer.len, max_bytes - covered);
    auto slice = memory.slice(buffer.addr, len);
    if (!slice) return std::nullopt;
    iov.push_back(iovec{slice->data(), slice->size()});
    covered += len;
  }
  return covered;
}

}  // namespace

struct VirtioNet::Pair {
  size_t index = 0;
  std::string label;  // "<id> pair <N>", for log lines
  UniqueFd rx_notify;  // the RX queue's notification eventfd (a KVM ioeventfd when registered)
  UniqueFd tx_notify;

  // ---- Activation state (reset() clears it). ---------------------------------------------
  Queue* rx = nullptr;
  Queue* tx = nullptr;
  uint16_t rx_index = 0;
  uint16_t tx_index = 0;
  UniqueFd tap_poll;  // an epoll set holding the tap fd while RX wants frames
  bool tap_polled = false;
  UniqueFd rx_timer;  // rate-limit timers
  UniqueFd tx_timer;
  bool rx_throttled = false;
  bool tx_throttled = false;
  bool attached = true;  // the tap queue is attached (multiqueue taps)

  std::deque<HeldChain> rx_chains;
  // The frame being received: its length (header included) and the part of it that did not
  // fit the chains at hand, kept in `bounce` until more chains arrive.
  bool frame_active = false;
  uint64_t frame_length = 0;
  uint64_t overflow = 0;
  uint64_t overflow_copied = 0;
  size_t frame_chains = 0;  // how many held chains (from the front) hold frame bytes
  std::optional<DescriptorChain> tx_held;  // waiting for rate-limit tokens
  std::vector<iovec> iov;
  std::vector<uint8_t> bounce;
  // Published buffers since the last interrupt check (the worker's). Also set before the
  // worker (re)starts, so its first pass asks needs_notification(): buffers used while
  // pausing, or by the device a restored queue was saved from, may await their interrupt.
  bool used_rx = false;
  bool used_tx = false;
  RateLimitedLog guest_log;
};

Result<std::shared_ptr<VirtioNet>> VirtioNet::create(const NetSpec& spec, std::string_view vm_name,
                                                     const GuestMemory& memory) {
  if (spec.mtu && (*spec.mtu < kMinMtu || *spec.mtu > kMaxMtu)) {
    return config_error(fmt::format("nets \"{}\": mtu {} out of range {}..{}", spec.id, *spec.mtu, kMinMtu, kMaxMtu));
  }
  if (!spec.tap_fd && spec.tap.empty()) {
    return config_error(fmt::format("nets \"{}\": needs `tap` (an interface name) or `tap_fd`", spec.id));
  }
  Result<std::unique_ptr<Tap>> tap = spec.tap_fd ? Tap::adopt(*spec.tap_fd, spec.queues, spec.mtu)
                                                 : Tap::open(spec.tap, spec.queues, spec.mtu);
  if (!tap) return std::unexpected(tap.error().with_context(fmt::format("nets \"{}\"", spec.id)));
  return create_with_backend(spec, vm_name, std::move(*tap), memory);
}

Result<std::shared_ptr<VirtioNet>> VirtioNet::create_with_backend(const NetSpec& spec, std::string_view vm_name,
                                                                  std::unique_ptr<NetBackend> backend,
                                                                  const GuestMemory& memory) {
  const std::string where = fmt::format("nets \"{}\"", spec.id);
  if (spec.queues == 0 || spec.queues > kMaxQueuePairs) {
    return config_error(fmt::format("{}: queues {}: must be 1..{}", where, spec.queues, kMaxQueuePairs));
  }
  if (spec.queue_size == 0 || (spec.queue_size & (spec.queue_size - 1)) != 0 || spec.queue_size > kMaxQueueSize) {
    return config_error(fmt::format("{}: queue_size {}: must be a power of two up to {}", where, spec.queue_size,
                                    kMaxQueueSize));
  }
  if (spec.mtu && (*spec.mtu < kMinMtu || *spec.mtu > kMaxMtu)) {
    return config_error(fmt::format("{}: mtu {} out of range {}..{}", where, *spec.mtu, kMinMtu, kMaxMtu));
  }
  if (!backend || backend->queue_count() != spec.queues) {
    return internal_error(fmt::format("{}: backend has {} queues, spec asks {}", where,
                                      backend ? backend->queue_count() : 0, spec.queues));
  }
  std::vector<std::unique_ptr<Pair>> pairs;
  for (uint16_t i = 0; i < spec.queues; ++i) {
    auto pair = std::make_unique<Pair>();
    pair->index = i;
    pair->label = fmt::format("{} pair {}", spec.id, i);
    auto rx = make_eventfd(where);
    if (!rx) return std::unexpected(rx.error());
    auto tx = make_eventfd(where);
    if (!tx) return std::unexpected(tx.error());
    pair->rx_notify = std::move(*rx);
    pair->tx_notify = std::move(*tx);
    pairs.push_back(std::move(pair));
  }
  auto ctrl = make_eventfd(where);
  if (!ctrl) return std::unexpected(ctrl.error());
  MacAddress mac = spec.mac ? *spec.mac : generate_mac(vm_name, spec.id);
  return std::shared_ptr<VirtioNet>(
      new VirtioNet(spec, mac, std::move(backend), memory, std::move(pairs), std::move(*ctrl)));
}

VirtioNet::VirtioNet(const NetSpec& spec, MacAddress mac, std::unique_ptr<NetBackend> backend,
                     const GuestMemory& memory, std::vector<std::unique_ptr<Pair>> pairs, UniqueFd ctrl_notify)
    : id_(spec.id),
      mac_(mac),
      pairs_(spec.queues),
      queue_size_(spec.queue_size),
      mtu_(spec.mtu),
      memory_(memory),
      backend_(std::move(backend)),
      pair_state_(std::move(pairs)),
      ctrl_notify_(std::move(ctrl_notify)),
      rx_limiter_(spec.rx_rate_limit.bytes_per_second, spec.rx_rate_limit.ops_per_second),
      tx_limiter_(spec.tx_rate_limit.bytes_per_second, spec.tx_rate_limit.ops_per_second) {
  features_ = feature_mask(kFeatureVersion1) | feature_mask(kFeatureRingIndirectDesc) |
              feature_mask(kFeatureRingEventIdx) | feature_mask(kFeatureMac) | feature_mask(kFeatureStatus) |
              feature_mask(kFeatureMrgRxbuf) | feature_mask(kFeatureCtrlVq) | feature_mask(kFeatureCtrlRx);
  if (mtu_) features_ |= feature_mask(kFeatureMtu);
  if (pairs_ > 1) features_ |= feature_mask(kFeatureMq);
  // Offloads only as far as the tap takes them: TUN_F_CSUM gates both checksum features,
  // each TSO flag its two TSO features, TUN_F_TSO_ECN the ECN pair.
  const unsigned tap_offloads = backend_->supported_offloads();
  if (spec.offloads && (tap_offloads & TUN_F_CSUM) != 0) {
    features_ |= feature_mask(kFeatureCsum) | feature_mask(kFeatureGuestCsum);
    if ((tap_offloads & TUN_F_TSO4) != 0) {
      features_ |= feature_mask(kFeatureHostTso4) | feature_mask(kFeatureGuestTso4);
    }
    if ((tap_offloads & TUN_F_TSO6) != 0) {
      features_ |= feature_mask(kFeatureHostTso6) | feature_mask(kFeatureGuestTso6);
    }
    if ((tap_offloads & TUN_F_TSO_ECN) != 0 && (tap_offloads & (TUN_F_TSO4 | TUN_F_TSO6)) != 0) {
      features_ |= feature_mask(kFeatureHostEcn) | feature_mask(kFeatureGuestEcn);
    }
  }
}

VirtioNet::~VirtioNet() { reset(); }

uint32_t VirtioNet::device_type() const { return kDeviceIdNet; }

std::vector<uint16_t> VirtioNet::queue_max_sizes() const {
  std::vector<uint16_t> sizes(2 * pairs_, queue_size_);
  sizes.push_back(kCtrlQueueSize);
  return sizes;
}

std::string VirtioNet::check_features(uint64_t driver_features) const {
  auto has = [driver_features](unsigned bit) { return has_feature(driver_features, bit); };
  // §5.1.3.1: "The driver MUST NOT negotiate VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6
  // or VIRTIO_NET_F_GUEST_UFO if it does not negotiate VIRTIO_NET_F_GUEST_CSUM."
  if ((has(kFeatureGuestTso4) || has(kFeatureGuestTso6) || has(kFeatureGuestUfo)) && !has(kFeatureGuestCsum)) {
    return "VIRTIO_NET_F_GUEST_TSO4/TSO6/UFO need VIRTIO_NET_F_GUEST_CSUM (virtio 1.2 5.1.3.1)";
  }
  // "... MUST NOT negotiate VIRTIO_NET_F_GUEST_ECN ... without VIRTIO_NET_F_GUEST_TSO4 or
  // VIRTIO_NET_F_GUEST_TSO6."
  if (has(kFeatureGuestEcn) && !has(kFeatureGuestTso4) && !has(kFeatureGuestTso6)) {
    return "VIRTIO_NET_F_GUEST_ECN needs VIRTIO_NET_F_GUEST_TSO4 or VIRTIO_NET_F_GUEST_TSO6 (virtio 1.2 5.1.3.1)";
  }
  // "... MUST NOT negotiate VIRTIO_NET_F_HOST_TSO4, HOST_TSO6 or HOST_UFO without
  // VIRTIO_NET_F_CSUM."
  if ((has(kFeatureHostTso4) || has(kFeatureHostTso6) || has(kFeatureHostUfo)) && !has(kFeatureCsum)) {
    return "VIRTIO_NET_F_HOST_TSO4/TSO6/UFO need VIRTIO_NET_F_CSUM (virtio 1.2 5.1.3.1)";
  }
  // "... MUST NOT negotiate VIRTIO_NET_F_HOST_ECN without HOST_TSO4 or HOST_TSO6."
  if (has(kFeatureHostEcn) && !has(kFeatureHostTso4) && !has(kFeatureHostTso6)) {
    return "VIRTIO_NET_F_HOST_ECN needs VIRTIO_NET_F_HOST_TSO4 or VIRTIO_NET_F_HOST_TSO6 (virtio 1.2 5.1.3.1)";
  }
  // "... MUST NOT negotiate VIRTIO_NET_F_CTRL_RX, CTRL_VLAN, GUEST_ANNOUNCE, MQ or
  // CTRL_MAC_ADDR without VIRTIO_NET_F_CTRL_VQ."
  if ((has(kFeatureCtrlRx) || has(kFeatureCtrlVlan) || has(kFeatureGuestAnnounce) || has(kFeatureMq) ||
       has(kFeatureCtrlMacAddr)) &&
      !has(kFeatureCtrlVq)) {
    return "VIRTIO_NET_F_CTRL_RX/CTRL_VLAN/GUEST_ANNOUNCE/MQ/CTRL_MAC_ADDR need VIRTIO_NET_F_CTRL_VQ "
           "(virtio 1.2 5.1.3.1)";
  }
  // §5.1.2: without MQ the control queue is queue 2, but this device keeps it after all its
  // queue pairs (2N). A multiqueue NIC therefore takes CTRL_VQ only together with MQ; such
  // a driver fails FEATURES_OK and may retry without CTRL_VQ (Linux always takes MQ).
  if (pairs_ > 1 && has(kFeatureCtrlVq) && !has(kFeatureMq)) {
    return "on a multiqueue NIC VIRTIO_NET_F_CTRL_VQ needs VIRTIO_NET_F_MQ (the control queue follows all queue "
           "pairs)";
  }
  return {};
}

uint32_t VirtioNet::config_size() const { return kConfigSize; }

void VirtioNet::read_config(uint64_t offset, std::span<uint8_t> data) {
  // §5.1.4: mac, status, max_virtqueue_pairs, mtu; little-endian.
  std::array<uint8_t, kConfigSize> config{};
  std::copy(mac_.begin(), mac_.end(), config.begin() + kConfigMacOffset);
  auto put16 = [&config](uint32_t at, uint16_t value) {
    config[at] = static_cast<uint8_t>(value);
    config[at + 1] = static_cast<uint8_t>(value >> 8);
  };
  // The link is reported up: the tap carries frames whenever it exists.
  put16(kConfigStatusOffset, kStatusLinkUp);
  put16(kConfigMaxPairsOffset, pairs_);
  put16(kConfigMtuOffset, static_cast<uint16_t>(mtu_.value_or(0)));
  read_config_bytes(config, offset, data);
}

Result<void> VirtioNet::activate(uint64_t acked_features, std::vector<Queue*> queues,
                                 std::shared_ptr<VirtioInterrupt> interrupt) {
  std::lock_guard lock(mutex_);
  if (queues.size() != 2u * pairs_ + 1) {
    return internal_error(fmt::format("{}: expected {} queues, got {}", id_, 2 * pairs_ + 1, queues.size()));
  }
  acked_ = acked_features;
  mergeable_ = has_feature(acked_features, kFeatureMrgRxbuf);
  const bool guest_gso = has_feature(acked_features, kFeatureGuestTso4) ||
                         has_feature(acked_features, kFeatureGuestTso6) ||
                         has_feature(acked_features, kFeatureGuestUfo);
  // The largest frame the tap may hand us: a GSO frame when the guest takes them, otherwise
  // one MTU plus the Ethernet/VLAN header.
  rx_target_ = kNetHeaderSize + (guest_gso ? kMaxFrameSize : backend_->mtu() + kEthernetHeaderWithVlan);
  const unsigned offloads = tun_offload_flags(acked_features) & backend_->supported_offloads();
  if (auto set = backend_->set_offloads(offloads); !set) return std::unexpected(set.error());
  // active_pairs_ is 1 after creation and reset(), or what restore_state() put back. Without
  // MQ the driver cannot have changed it (§5.1.6.5.5), whatever a state blob says.
  if (!has_feature(acked_features, kFeatureMq)) active_pairs_.store(1);
  paused_ = false;
  ctrl_check_ = true;
  interrupt_ = std::move(interrupt);
  auto active = [](Queue* queue) { return queue != nullptr && queue->active() ? queue : nullptr; };
  ctrl_ = active(queues[2 * pairs_]);

  std::vector<std::unique_ptr<EventLoop>> workers;
  auto fail = [this](Error error) {
    for (auto& pair : pair_state_) {
      pair->rx = pair->tx = nullptr;
    }
    ctrl_ = nullptr;
    interrupt_.reset();
    return std::unexpected(std::move(error));
  };
  for (auto& pair_ptr : pair_state_) {
    Pair& pair = *pair_ptr;
    pair.rx_index = static_cast<uint16_t>(2 * pair.index);
    pair.tx_index = static_cast<uint16_t>(2 * pair.index + 1);
    pair.rx = active(queues[pair.rx_index]);
    pair.tx = active(queues[pair.tx_index]);
    const bool serves_ctrl = pair.index == 0 && ctrl_ != nullptr;
    // Only pair 0 carries traffic until VQ_PAIRS_SET (§5.1.6.5.5): the others' tap queues are
    // detached so the kernel does not steer frames where nobody reads.
    pair.attached = pair.index < active_pairs_.load();
    pair.used_rx = pair.used_tx = true;
    if (auto steered = backend_->set_queue_enabled(pair.index, pair.attached); !steered) {
      return fail(steered.error());
    }
    if (pair.rx == nullptr && pair.tx == nullptr && !serves_ctrl) continue;
    pair.tap_poll.reset(::epoll_create1(EPOLL_CLOEXEC));
    pair.rx_timer.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    pair.tx_timer.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!pair.tap_poll.valid() || !pair.rx_timer.valid() || !pair.tx_timer.valid()) {
      return fail(errno_error(fmt::format("{}: epoll/timerfd for the worker", pair.label), errno));
    }
    pair.tap_polled = false;
    pair.bounce.resize(kBounceSize);
    pair.iov.reserve(kMaxIovecs);
    auto worker = EventLoop::create(fmt::format("skiff-{}-q{}", id_, pair.index),
                                    security::filtered_thread_starter(security::ThreadKind::net_io, worker_seccomp()));
    if (!worker) return fail(worker.error());
    Pair* p = &pair;
    std::vector<std::pair<int, EventLoop::Handler>> handlers = {
        {pair.rx_notify.get(), [this, p] { on_rx(*p); }},
        {pair.tap_poll.get(), [this, p] { on_rx(*p); }},
        {pair.rx_timer.get(), [this, p] { on_rx_timer(*p); }},
        {pair.tx_notify.get(), [this, p] { on_tx(*p); }},
        {pair.tx_timer.get(), [this, p] { on_tx_timer(*p); }},
    };
    if (serves_ctrl) handlers.emplace_back(ctrl_notify_.get(), [this] { on_ctrl(); });
    for (auto& [fd, handler] : handlers) {
      if (auto added = (*worker)->add(fd, std::move(handler)); !added) return fail(added.error());
    }
    workers.push_back(std::move(*worker));
  }
  workers_ = std::move(workers);
  for (auto& worker : workers_) {
    if (auto started = worker->start(); !started) {
      workers_.clear();  // stops and joins the workers already running
      return fail(started.error());
    }
  }
  // Buffers posted before activation (or before the ioeventfds existed) are served now.
  for (auto& pair : pair_state_) {
    if (pair->rx != nullptr) wake(pair->rx_notify.get());
    if (pair->tx != nullptr) wake(pair->tx_notify.get());
  }
  if (ctrl_ != nullptr) wake(ctrl_notify_.get());
  return {};
}

void VirtioNet::wake(int event_fd) {
  uint64_t one = 1;
  if (::write(event_fd, &one, sizeof(one)) != sizeof(one) && errno != EAGAIN) {
    spdlog::error("{}: cannot wake a worker: {}", id_, std::strerror(errno));
  }
}

void VirtioNet::notify_queue(uint16_t queue_index) {
  if (auto fd = queue_notify_fd(queue_index)) wake(*fd);
}

std::optional<int> VirtioNet::queue_notify_fd(uint16_t queue_index) const {
  if (queue_index == ctrl_queue_index()) return ctrl_notify_.get();
  if (queue_index >= ctrl_queue_index()) return std::nullopt;
  const Pair& pair = *pair_state_[queue_index / 2];
  return queue_index % 2 == 0 ? pair.rx_notify.get() : pair.tx_notify.get();
}

void VirtioNet::reset() {
  std::vector<std::unique_ptr<EventLoop>> workers;
  {
    std::lock_guard lock(mutex_);
    workers = std::move(workers_);
  }
  for (auto& worker : workers) worker->stop();  // joins: no frame is moving after this
  std::lock_guard lock(mutex_);
  for (auto& pair_ptr : pair_state_) {
    Pair& pair = *pair_ptr;
    // Held chains go back empty so the driver's accounting balances (the queue is reset
    // right after this anyway).
    while (!pair.rx_chains.empty()) {
      if (pair.rx != nullptr) pair.rx->add_used(std::move(pair.rx_chains.front().chain), 0);
      pair.rx_chains.pop_front();
    }
    if (pair.tx_held) {
      if (pair.tx != nullptr) pair.tx->add_used(std::move(*pair.tx_held), 0);
      pair.tx_held.reset();
    }
    pair.frame_active = false;
    pair.rx = pair.tx = nullptr;
    pair.tap_poll.reset();
    pair.tap_polled = false;
    pair.rx_timer.reset();
    pair.tx_timer.reset();
    pair.rx_throttled = pair.tx_throttled = false;
    pair.used_rx = false;
    drain_fd(pair.rx_notify.get());
    drain_fd(pair.tx_notify.get());
  }
  drain_fd(ctrl_notify_.get());
  ctrl_ = nullptr;
  interrupt_.reset();
  active_pairs_.store(1);
  paused_ = false;
}

NetCounters VirtioNet::counters() const {
  NetCounters out;
  out.rx_bytes = counters_.rx_bytes.load(std::memory_order_relaxed);
  out.rx_packets = counters_.rx_packets.load(std::memory_order_relaxed);
  out.rx_dropped = counters_.rx_dropped.load(std::memory_order_relaxed);
  out.tx_bytes = counters_.tx_bytes.load(std::memory_order_relaxed);
  out.tx_packets = counters_.tx_packets.load(std::memory_order_relaxed);
  out.tx_dropped = counters_.tx_dropped.load(std::memory_order_relaxed);
  return out;
}

// ---- Worker side ----------------------------------------------------------------------------

void VirtioNet::arm_timer(int timer_fd, std::chrono::nanoseconds delay) {
  // At least 100 us: a zero it_value would disarm the timer.
  const int64_t ns = std::max<int64_t>(delay.count(), 100'000);
  itimerspec spec{};
  spec.it_value.tv_sec = ns / 1'000'000'000;
  spec.it_value.tv_nsec = ns % 1'000'000'000;
  if (::timerfd_settime(timer_fd, 0, &spec, nullptr) != 0) {
    spdlog::error("{}: timerfd_settime: {}", id_, std::strerror(errno));
  }
}

void VirtioNet::set_tap_polling(Pair& pair, bool enabled) {
  if (pair.tap_polled == enabled) return;
  const int tap_fd = backend_->queue_fd(pair.index);
  epoll_event event{};
  event.events = EPOLLIN;
  // DEL rather than clearing EPOLLIN: epoll reports EPOLLERR/EPOLLHUP whatever the mask, and a
  // detached tap queue polls as EPOLLERR.
  if (::epoll_ctl(pair.tap_poll.get(), enabled ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, tap_fd, &event) != 0) {
    spdlog::error("{}: epoll_ctl {} tap fd: {}", pair.label, enabled ? "add" : "del", std::strerror(errno));
    return;
  }
  pair.tap_polled = enabled;
}

void VirtioNet::on_rx(Pair& pair) {
  drain_fd(pair.rx_notify.get());
  process_rx(pair);
  signal_used(pair);
}

void VirtioNet::on_rx_timer(Pair& pair) {
  drain_fd(pair.rx_timer.get());
  pair.rx_throttled = false;
  process_rx(pair);
  signal_used(pair);
}

void VirtioNet::on_tx(Pair& pair) {
  drain_fd(pair.tx_notify.get());
  process_tx(pair);
  signal_used(pair);
}

void VirtioNet::on_tx_timer(Pair& pair) {
  drain_fd(pair.tx_timer.get());
  pair.tx_throttled = false;
  process_tx(pair);
  signal_used(pair);
}

void VirtioNet::signal_used(Pair& pair) {
  if (pair.used_rx && pair.rx != nullptr) {
    pair.used_rx = false;
    if (pair.rx->needs_notification()) interrupt_->signal_used_queue(pair.rx_index);
  }
  if (pair.used_tx && pair.tx != nullptr) {
    pair.used_tx = false;
    if (pair.tx->needs_notification()) interrupt_->signal_used_queue(pair.tx_index);
  }
}

// Pops RX chains until the held ones could take the largest frame (with MRG_RXBUF) or one
// chain is held (without). Chains no frame can use go straight back with length 0. Returns
// whether any chain is held.
bool VirtioNet::fill_rx_chains(Pair& pair) {
  auto capacity = [&pair] {
    uint64_t total = 0;
    for (const HeldChain& held : pair.rx_chains) total += held.capacity;
    return total;
  };
  uint64_t held = capacity();
  while (mergeable_ ? held < rx_target_ : pair.rx_chains.empty()) {
    auto chain = pair.rx->pop();
    if (!chain) break;
    // §5.1.6.3.1: receive buffers are device-writable, and with MRG_RXBUF each at least a
    // header long; a chain that cannot even hold the header carries no frame.
    if (chain->malformed() || chain->readable_len() != 0 || chain->writable_len() < kNetHeaderSize) {
      pair.guest_log.warn("{}: RX chain {} unusable ({}); returned empty", pair.label, chain->head_index(),
                          chain->malformed() ? chain->error()
                                             : fmt::format("{} readable, {} writable bytes", chain->readable_len(),
                                                           chain->writable_len()));
      pair.rx->add_used(std::move(*chain), 0);
      pair.used_rx = true;
      continue;
    }
    HeldChain entry{std::move(*chain), 0, 0};
    entry.capacity = std::min<uint64_t>(entry.chain.writable_len(), kNetHeaderSize + kMaxFrameSize);
    held += entry.capacity;
    pair.rx_chains.push_back(std::move(entry));
  }
  return !pair.rx_chains.empty();
}

void VirtioNet::process_rx(Pair& pair) {
  Queue* rx = pair.rx;
  if (rx == nullptr || pair.rx_throttled) return;
  const bool enabled = pair.index < active_pairs_.load();
  if (enabled != pair.attached) {
    if (auto steered = backend_->set_queue_enabled(pair.index, enabled); !steered) {
      spdlog::error("{}: {}", pair.label, steered.error().message());
    } else {
      pair.attached = enabled;
    }
  }
  if (!enabled) {
    set_tap_polling(pair, false);
    return;
  }

  // Waits for the guest to post buffers: tap fd out of the epoll set, notifications on, and
  // one more look at the ring for buffers posted before the notifications were on.
  auto wait_for_buffers = [&]() {
    set_tap_polling(pair, false);
    rx->set_notification(true);
    return rx->has_available();
  };

  int budget = kRxBudget;
  while (budget > 0) {
    if (!pair.frame_active) {
      if (!fill_rx_chains(pair)) {
        if (wait_for_buffers()) continue;
        break;
      }
      // Chains in hand: the tap decides when we run, not the driver's kicks.
      rx->set_notification(false);

      pair.iov.clear();
      const size_t chain_count = mergeable_ ? pair.rx_chains.size() : 1;
      std::vector<uint64_t> covered(chain_count, 0);
      bool bad = false;
      for (size_t i = 0; i < chain_count && pair.iov.size() < kMaxIovecs - 1; ++i) {
        HeldChain& held = pair.rx_chains[i];
        auto bytes = append_iovecs(memory_, held.chain.writable(), held.capacity, pair.iov);
        if (!bytes) {
          bad = true;
          break;
        }
        covered[i] = *bytes;
      }
      if (bad) {
        // Cannot happen for chains the queue checked; give everything back rather than loop.
        pair.guest_log.warn("{}: RX buffer outside guest RAM; returning held chains", pair.label);
        while (!pair.rx_chains.empty()) {
          rx->add_used(std::move(pair.rx_chains.front().chain), 0);
          pair.rx_chains.pop_front();
        }
        pair.used_rx = true;
        continue;
      }
      uint64_t guest_bytes = 0;
      for (uint64_t c : covered) guest_bytes += c;
      pair.iov.push_back(iovec{pair.bounce.data(), pair.bounce.size()});

      ssize_t n = backend_->read_frame(pair.index, pair.iov.data(), static_cast<int>(pair.iov.size()));
      if (n < 0) {
        const int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
          set_tap_polling(pair, true);
          break;
        }
        // EBADFD: the queue was detached; anything else is logged. Either way stop reading
        // until the next kick rather than spin on a failing fd.
        if (err != EBADFD) spdlog::warn("{}: reading the tap: {}", pair.label, std::strerror(err));
        set_tap_polling(pair, false);
        break;
      }
      --budget;
      const uint64_t length = static_cast<uint64_t>(n);
      if (length == 0) continue;
      if (length < kNetHeaderSize || length > guest_bytes + pair.bounce.size()) {
        counters_.rx_dropped.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      uint64_t remaining = std::min(length, guest_bytes);
      pair.frame_chains = 0;
      for (size_t i = 0; i < chain_count; ++i) {
        HeldChain& held = pair.rx_chains[i];
        held.filled = std::min(remaining, covered[i]);
        remaining -= held.filled;
        if (held.filled != 0) pair.frame_chains = i + 1;
      }
      pair.frame_length = length;
      pair.overflow = length - std::min(length, guest_bytes);
      pair.overflow_copied = 0;
      if (pair.overflow != 0 && !mergeable_) {
        // Without MRG_RXBUF a frame must fit one chain (§5.1.6.3.1): this one is too small.
        pair.guest_log.warn("{}: {}-byte frame does not fit a {}-byte RX chain; dropped", pair.label,
                            length - kNetHeaderSize, guest_bytes);
        pair.rx_chains.front().filled = 0;
        counters_.rx_dropped.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      pair.frame_active = true;
    }

    // The part of the frame that overflowed into the bounce buffer goes into further chains
    // (held ones the read did not cover first, then new ones).
    bool waiting = false;
    while (pair.overflow_copied < pair.overflow) {
      if (pair.frame_chains == pair.rx_chains.size()) {
        auto chain = rx->pop();
        if (!chain) {
          if (pair.rx_chains.size() >= rx->size()) {
            // Every descriptor of the ring is already holding this frame: it can never fit.
            pair.guest_log.warn("{}: {}-byte frame larger than the whole RX ring; dropped", pair.label,
                                pair.frame_length - kNetHeaderSize);
            for (HeldChain& held : pair.rx_chains) held.filled = 0;
            pair.frame_active = false;
            counters_.rx_dropped.fetch_add(1, std::memory_order_relaxed);
            break;
          }
          if (wait_for_buffers()) continue;
          waiting = true;
          break;
        }
        if (chain->malformed() || chain->readable_len() != 0 || chain->writable_len() < kNetHeaderSize) {
          pair.guest_log.warn("{}: RX chain {} unusable; returned empty", pair.label, chain->head_index());
          rx->add_used(std::move(*chain), 0);
          pair.used_rx = true;
          continue;
        }
        HeldChain entry{std::move(*chain), 0, 0};
        entry.capacity = std::min<uint64_t>(entry.chain.writable_len(), kNetHeaderSize + kMaxFrameSize);
        pair.rx_chains.push_back(std::move(entry));
      }
      HeldChain& next = pair.rx_chains[pair.frame_chains];
      const uint64_t take = std::min(next.capacity, pair.overflow - pair.overflow_copied);
      const size_t copied = next.chain.write_at(
          0, std::span<const uint8_t>(pair.bounce.data() + pair.overflow_copied, static_cast<size_t>(take)));
      next.filled = copied;
      pair.overflow_copied += copied;
      ++pair.frame_chains;
      if (copied == 0) {
        // write_at failed on a checked buffer: give up on the frame.
        for (HeldChain& held : pair.rx_chains) held.filled = 0;
        pair.frame_active = false;
        counters_.rx_dropped.fetch_add(1, std::memory_order_relaxed);
        break;
      }
    }
    if (waiting) break;
    if (!pair.frame_active) continue;

    const uint64_t payload = pair.frame_length - kNetHeaderSize;
    {
      std::lock_guard lock(limiter_mutex_);
      if (!rx_limiter_.unlimited() && !rx_limiter_.try_take(payload)) {
        arm_timer(pair.rx_timer.get(), rx_limiter_.wait_time(payload));
        pair.rx_throttled = true;
        set_tap_polling(pair, false);
        break;
      }
    }
    deliver_frame(pair);
  }
  // The budget ran out with frames possibly still in the tap: nothing else would wake us
  // (the guest's notifications are off while we have buffers), so watch the tap, which is
  // level-triggered and readable while frames remain.
  if (budget == 0 && !pair.rx_throttled) set_tap_polling(pair, true);
}

void VirtioNet::deliver_frame(Pair& pair) {
  // §5.1.6.4: num_buffers counts the chains the frame occupies (1 without MRG_RXBUF). The
  // tap leaves the field alone, so it is always written here.
  const uint16_t num_buffers = static_cast<uint16_t>(pair.frame_chains);
  const uint8_t field[2] = {static_cast<uint8_t>(num_buffers), static_cast<uint8_t>(num_buffers >> 8)};
  pair.rx_chains.front().chain.write_at(kHeaderNumBuffersOffset, field);
  for (size_t i = 0; i < pair.frame_chains; ++i) {
    HeldChain held = std::move(pair.rx_chains.front());
    pair.rx_chains.pop_front();
    pair.rx->add_used(std::move(held.chain), static_cast<uint32_t>(held.filled));
  }
  for (HeldChain& held : pair.rx_chains) held.filled = 0;
  pair.frame_active = false;
  pair.frame_chains = 0;
  pair.used_rx = true;
  counters_.rx_packets.fetch_add(1, std::memory_order_relaxed);
  counters_.rx_bytes.fetch_add(pair.frame_length - kNetHeaderSize, std::memory_order_relaxed);
}

void VirtioNet::process_tx(Pair& pair) {
  Queue* tx = pair.tx;
  if (tx == nullptr || pair.tx_throttled) return;
  int budget = kTxBudget;
  while (true) {
    tx->set_notification(false);
    while (budget > 0) {
      std::optional<DescriptorChain> chain;
      if (pair.tx_held) {
        chain = std::move(pair.tx_held);
        pair.tx_held.reset();
      } else {
        chain = tx->pop();
      }
      if (!chain) break;
      --budget;
      // §5.1.6.2: a TX chain is header + frame, all device-readable.
      if (chain->malformed() || chain->writable_len() != 0 || chain->readable_len() < kNetHeaderSize ||
          chain->readable_len() > kNetHeaderSize + kMaxFrameSize) {
        pair.guest_log.warn("{}: TX chain {} dropped: {}", pair.label, chain->head_index(),
                            chain->malformed() ? chain->error()
                                               : fmt::format("{} readable, {} writable bytes", chain->readable_len(),
                                                             chain->writable_len()));
        counters_.tx_dropped.fetch_add(1, std::memory_order_relaxed);
        tx->add_used(std::move(*chain), 0);
        pair.used_tx = true;
        continue;
      }
      const uint64_t payload = chain->readable_len() - kNetHeaderSize;
      {
        std::lock_guard lock(limiter_mutex_);
        if (!tx_limiter_.unlimited() && !tx_limiter_.try_take(payload)) {
          arm_timer(pair.tx_timer.get(), tx_limiter_.wait_time(payload));
          pair.tx_held = std::move(chain);
          pair.tx_throttled = true;
          break;
        }
      }
      transmit(pair, std::move(*chain));
    }
    if (pair.tx_throttled) break;  // the timer resumes; kicks meanwhile are not needed
    if (budget == 0) {
      // Let RX and the other fds of this loop run; come back through our own eventfd.
      wake(pair.tx_notify.get());
      break;
    }
    // Notifications back on, then one more look (§2.7.10: the driver may have added a chain
    // just before it saw them on).
    tx->set_notification(true);
    if (!tx->has_available()) break;
  }
}

void VirtioNet::transmit(Pair& pair, DescriptorChain chain) {
  const uint64_t payload = chain.readable_len() - kNetHeaderSize;
  pair.iov.clear();
  auto bytes = append_iovecs(memory_, chain.readable(), chain.readable_len(), pair.iov);
  if (!bytes || *bytes != chain.readable_len()) {
    pair.guest_log.warn("{}: TX chain {} dropped: more than {} buffers", pair.label, chain.head_index(), kMaxIovecs);
    counters_.tx_dropped.fetch_add(1, std::memory_order_relaxed);
  } else {
    ssize_t n;
    do {
      n = backend_->write_frame(pair.index, pair.iov.data(), static_cast<int>(pair.iov.size()));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      pair.guest_log.warn("{}: writing a {}-byte frame to the tap: {}", pair.label, payload, std::strerror(errno));
      counters_.tx_dropped.fetch_add(1, std::memory_order_relaxed);
    } else {
      counters_.tx_packets.fetch_add(1, std::memory_order_relaxed);
      counters_.tx_bytes.fetch_add(payload, std::memory_order_relaxed);
    }
  }
  pair.tx->add_used(std::move(chain), 0);
  pair.used_tx = true;
}

void VirtioNet::on_ctrl() {
  drain_fd(ctrl_notify_.get());
  Queue* ctrl = ctrl_;
  if (ctrl == nullptr) return;
  bool used = false;
  while (auto chain = ctrl->pop()) {
    used = true;
    if (chain->malformed() || chain->writable_len() == 0) {
      ctrl->add_used(std::move(*chain), 0);
      continue;
    }
    const uint8_t ack = handle_ctrl(*chain);
    // §5.1.6.5: the ack byte is the device-writable part of the command.
    const size_t written = chain->write_at(0, std::span<const uint8_t>(&ack, 1));
    ctrl->add_used(std::move(*chain), static_cast<uint32_t>(written));
  }
  const bool check = std::exchange(ctrl_check_, false);
  if ((used || check) && ctrl->needs_notification()) interrupt_->signal_used_queue(ctrl_queue_index());
}

uint8_t VirtioNet::handle_ctrl(const DescriptorChain& chain) {
  uint8_t head[2] = {};
  if (chain.read_at(0, head) != sizeof(head)) return kCtrlErr;
  const uint8_t command_class = head[0];
  const uint8_t command = head[1];
  auto data_byte = [&chain](uint64_t offset) -> std::optional<uint8_t> {
    uint8_t value = 0;
    if (chain.read_at(2 + offset, std::span<uint8_t>(&value, 1)) != 1) return std::nullopt;
    return value;
  };
  switch (command_class) {
    case kCtrlClassRx:
      // §5.1.6.5.1: PROMISC/ALLMULTI carry one byte (on/off). Every frame the tap gives is
      // delivered anyway, so both are acknowledged without filtering.
      if (!has_feature(acked_, kFeatureCtrlRx)) return kCtrlErr;
      if ((command == kCtrlRxPromisc || command == kCtrlRxAllmulti) && data_byte(0)) return kCtrlOk;
      return kCtrlErr;
    case kCtrlClassMac:
      // §5.1.6.5.2: the MAC filter table comes with CTRL_RX; skiff does not filter (the
      // guest's stack drops what is not for it), so the table is accepted as given.
      if (has_feature(acked_, kFeatureCtrlRx) && command == kCtrlMacTableSet) return kCtrlOk;
      return kCtrlErr;
    case kCtrlClassMq: {
      // §5.1.6.5.5: VQ_PAIRS_SET with le16 virtqueue_pairs in 1..max_virtqueue_pairs.
      if (!has_feature(acked_, kFeatureMq) || command != kCtrlMqVqPairsSet) return kCtrlErr;
      auto low = data_byte(0);
      auto high = data_byte(1);
      if (!low || !high) return kCtrlErr;
      const uint16_t wanted = static_cast<uint16_t>(*low | (*high << 8));
      if (wanted < 1 || wanted > pairs_) {
        pair_state_.front()->guest_log.warn("{}: VQ_PAIRS_SET {} refused (1..{})", id_, wanted, pairs_);
        return kCtrlErr;
      }
      active_pairs_.store(wanted);
      // Each worker attaches or detaches its own tap queue when it wakes.
      for (auto& pair : pair_state_) {
        if (pair->index != 0 && pair->rx != nullptr) wake(pair->rx_notify.get());
      }
      return kCtrlOk;
    }
    default:
      return kCtrlErr;
  }
}

// ---- State ------------------------------------------------------------------------------------

namespace {
constexpr const char* kNetStateKind = "virtio-net";
constexpr uint32_t kNetStateVersion = 1;
}  // namespace

Result<void> VirtioNet::pause() {
  std::lock_guard lock(mutex_);
  if (workers_.empty() || paused_) return {};
  // Joins each worker after its current handler: a handler answers (or keeps) every chain
  // it pops before it returns, and the workers never take mutex_.
  for (auto& worker : workers_) worker->stop();
  for (auto& pair : pair_state_) release_held_chains(*pair);
  paused_ = true;
  return {};
}

void VirtioNet::release_held_chains(Pair& pair) {
  if (pair.rx != nullptr) {
    if (pair.frame_active) {
      if (pair.overflow_copied >= pair.overflow) {
        // Wholly in the guest's buffers, waiting only for the RX limiter: delivered now (the
        // limiter is not charged), which is what the guest would have seen a moment later.
        deliver_frame(pair);
      } else {
        // Part of it is still in the bounce buffer, waiting for buffers the guest has not
        // posted: dropped, as a NIC drops a frame it has no room for.
        pair.guest_log.warn("{}: {}-byte frame waiting for RX buffers dropped by a pause", pair.label,
                            pair.frame_length - kNetHeaderSize);
        counters_.rx_dropped.fetch_add(1, std::memory_order_relaxed);
        for (HeldChain& held : pair.rx_chains) held.filled = 0;
        pair.frame_active = false;
        pair.frame_chains = 0;
      }
    }
    // Buffers waiting for a frame were popped in ring order: give them back newest first, so
    // the ring holds them as the driver posted them. One that cannot go back (a chain
    // returned in between, e.g. an unusable one) is returned empty, as reset() does.
    while (!pair.rx_chains.empty()) {
      DescriptorChain& chain = pair.rx_chains.back().chain;
      if (!pair.rx->undo_pop(chain)) break;
      pair.rx_chains.pop_back();
    }
    while (!pair.rx_chains.empty()) {
      pair.rx->add_used(std::move(pair.rx_chains.front().chain), 0);
      pair.rx_chains.pop_front();
      pair.used_rx = true;
    }
  }
  if (pair.tx_held) {
    // Popped last (nothing is popped while it waits): back to the ring. If that ever fails
    // it is sent now without charging the limiter.
    DescriptorChain chain = std::move(*pair.tx_held);
    pair.tx_held.reset();
    if (pair.tx != nullptr && !pair.tx->undo_pop(chain)) transmit(pair, std::move(chain));
  }
  // The limiter's pauses end here; the workers ask the limiters again after resume().
  pair.rx_throttled = pair.tx_throttled = false;
  itimerspec disarm{};
  for (const UniqueFd* timer : {&pair.rx_timer, &pair.tx_timer}) {
    if (!timer->valid()) continue;
    ::timerfd_settime(timer->get(), 0, &disarm, nullptr);
    drain_fd(timer->get());
  }
  if (pair.tap_poll.valid()) set_tap_polling(pair, false);
  // Whatever was used here gets its interrupt from the worker's first pass after resume()
  // (or on the device restored from this state): the transport may hold its lock now.
  pair.used_rx = pair.used_tx = true;
}

Result<void> VirtioNet::resume() {
  std::lock_guard lock(mutex_);
  if (!paused_) return {};
  ctrl_check_ = true;
  for (auto& worker : workers_) {
    if (auto started = worker->start(); !started) return started;
  }
  paused_ = false;
  // Buffers posted while paused, frames that waited in the tap, pending interrupts.
  for (auto& pair : pair_state_) {
    if (pair->rx != nullptr) wake(pair->rx_notify.get());
    if (pair->tx != nullptr) wake(pair->tx_notify.get());
  }
  if (ctrl_ != nullptr) wake(ctrl_notify_.get());
  return {};
}

Result<state::StateBlob> VirtioNet::save_state() const {
  const NetCounters c = counters();
  state::StateBlob blob(kNetStateKind, kNetStateVersion);
  blob.put("active_queue_pairs", active_pairs_.load())
      .put("rx_bytes", c.rx_bytes)
      .put("rx_packets", c.rx_packets)
      .put("rx_dropped", c.rx_dropped)
      .put("tx_bytes", c.tx_bytes)
      .put("tx_packets", c.tx_packets)
      .put("tx_dropped", c.tx_dropped);
  return blob;
}

Result<void> VirtioNet::restore_state(const state::StateBlob& blob) {
  using state::read_field;
  std::lock_guard lock(mutex_);
  if (!workers_.empty()) return internal_error(fmt::format("{}: restore_state() after activate()", id_));
  if (auto expected = blob.expect(kNetStateKind, kNetStateVersion); !expected) return expected;
  uint16_t active_pairs = 0;
  NetCounters c;
  for (auto read : {read_field(blob, "active_queue_pairs", active_pairs, pairs_), read_field(blob, "rx_bytes", c.rx_bytes),
                    read_field(blob, "rx_packets", c.rx_packets), read_field(blob, "rx_dropped", c.rx_dropped),
                    read_field(blob, "tx_bytes", c.tx_bytes), read_field(blob, "tx_packets", c.tx_packets),
                    read_field(blob, "tx_dropped", c.tx_dropped)}) {
    if (!read) return read;
  }
  // §5.1.6.5.5: virtqueue_pairs is between 1 and max_virtqueue_pairs (this spec's queues).
  if (active_pairs < 1) {
    return config_error(fmt::format("state of virtio-net for {}: active_queue_pairs 0 (at least 1)", id_));
  }
  active_pairs_.store(active_pairs);
  counters_.rx_bytes.store(c.rx_bytes);
  counters_.rx_packets.store(c.rx_packets);
  counters_.rx_dropped.store(c.rx_dropped);
  counters_.tx_bytes.store(c.tx_bytes);
  counters_.tx_packets.store(c.tx_packets);
  counters_.tx_dropped.store(c.tx_dropped);
  return {};
}

}  // namespace skiff::virtio::net
