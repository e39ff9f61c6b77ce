// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for virtio-net (src/virtio/net/virtio_net.cc, mac.cc): a VirtioNet over a
// fake NetBackend serves RX, TX and control-queue chains that the input describes, with the
// features (MRG_RXBUF, MQ, CTRL_RX, offloads...) and frames the input chooses. The header
// handling, the RX merging and bounce-buffer path, chains too short or malformed, and the
// control commands are only reachable through the device's workers, so the target runs
// them: it activates the device, waits until the workers are idle (bounded), resets it
// (which joins the workers and returns every held chain) and checks the rings.
//
// Input layout (fuzz/corpus/make_net_corpus.py writes seeds in this format):
//   u8 shape: bit 0 two queue pairs, bits 1-3 queue size 4 << (n % 4), bit 4 spec mtu,
//             bit 5 offloads, bit 6 RX rate limit, bit 7 TX rate limit
//   u16 spec mtu   u8 backend offloads (TUN_F_* bits)   u16 backend mtu
//   u64 driver features (masked with the device's, VERSION_1 always set)
//   u8 chain count (% 24), each: u8 queue index (% queue count), then a chain as
//      read_chain() in fuzz_support.h reads it
//   u8 frame count (% 8), each: u8 queue pair, u16 length, u8 claimed extra length (the
//      tap reports the full length of a truncated frame), then the frame bytes
//   u8 vm name length + name, u8 NIC id length + id (generate_mac), u64 features for
//      check_features(), u8 config offset, u8 config length
// Invariants: every iovec the device hands the backend lies in guest RAM (the RX bounce
// buffer excepted), TX frames are header + at most kMaxFrameSize bytes, every chain the
// device popped went back to the used ring exactly once, and generated MACs are locally
// administered unicast.

#include <linux/if_tun.h>
#include <sys/eventfd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "fuzz_support.h"
#include "virtio/net/mac.h"
#include "virtio/net/net_constants.h"
#include "virtio/net/tap.h"
#include "virtio/net/virtio_net.h"

namespace {

using namespace skiff::virtio;
using namespace skiff::virtio::net;
using skiff::fuzz::check;
using skiff::fuzz::FuzzReader;

constexpr uint64_t kRamBase = 0x100000;
constexpr uint64_t kRamSize = 0x100000;
// VirtioNet's RX bounce buffer: 2 * (header + kMaxFrameSize), always the last RX iovec.
constexpr size_t kBounceSize = 2 * (kNetHeaderSize + kMaxFrameSize);

std::atomic<uint64_t> activity{0};

struct Frame {
  std::vector<uint8_t> bytes;
  size_t claimed = 0;  // what read_frame returns (>= bytes.size())
};

// A backend whose frames come from the input. Its queue fds are eventfds that never become
// readable: the device only polls them, frames are handed out by read_frame().
class FuzzBackend : public NetBackend {
 public:
  FuzzBackend(size_t queues, unsigned offloads, uint32_t mtu, const skiff::fuzz::FuzzRam& ram)
      : offloads_(offloads), mtu_(mtu), ram_(ram), frames_(queues) {
    for (size_t i = 0; i < queues; ++i) fds_.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  }
  void add_frame(size_t queue, Frame frame) { frames_[queue].push_back(std::move(frame)); }

  std::string name() const override { return "fuzz-tap"; }
  size_t queue_count() const override { return fds_.size(); }
  int queue_fd(size_t queue) const override { return fds_[queue].get(); }

  ssize_t read_frame(size_t queue, const iovec* iov, int count) override {
    activity.fetch_add(1);
    check(count >= 1 && iov[count - 1].iov_len == kBounceSize);
    for (int i = 0; i + 1 < count; ++i) check(ram_.host_range_inside(iov[i].iov_base, iov[i].iov_len));
    std::lock_guard lock(mutex_);
    if (frames_[queue].empty()) {
      errno = EAGAIN;
      return -1;
    }
    Frame frame = std::move(frames_[queue].front());
    frames_[queue].pop_front();
    size_t copied = 0;
    for (int i = 0; i < count && copied < frame.bytes.size(); ++i) {
      const size_t n = std::min(iov[i].iov_len, frame.bytes.size() - copied);
      std::memcpy(iov[i].iov_base, frame.bytes.data() + copied, n);
      copied += n;
    }
    return static_cast<ssize_t>(frame.claimed);
  }

  ssize_t write_frame(size_t /*queue*/, const iovec* iov, int count) override {
    activity.fetch_add(1);
    size_t total = 0;
    for (int i = 0; i < count; ++i) {
      check(ram_.host_range_inside(iov[i].iov_base, iov[i].iov_len));
      total += iov[i].iov_len;
    }
    // §5.1.6.2: a TX chain is the header plus one frame; longer ones are dropped earlier.
    check(total >= kNetHeaderSize && total <= kNetHeaderSize + kMaxFrameSize);
    return static_cast<ssize_t>(total);
  }

  unsigned supported_offloads() const override { return offloads_; }
  skiff::Result<void> set_offloads(unsigned tun_flags) override {
    check((tun_flags & ~offloads_) == 0);
    return {};
  }
  skiff::Result<void> set_queue_enabled(size_t queue, bool) override {
    check(queue < fds_.size());
    return {};
  }
  uint32_t mtu() const override { return mtu_; }

 private:
  unsigned offloads_;
  uint32_t mtu_;
  const skiff::fuzz::FuzzRam& ram_;
  std::vector<skiff::UniqueFd> fds_;
  std::mutex mutex_;
  std::vector<std::deque<Frame>> frames_;
};

class CountingInterrupt : public VirtioInterrupt {
 public:
  void signal_used_queue(uint16_t) override { activity.fetch_add(1); }
  void signal_config_change() override {}
  void signal_needs_reset() override {}
};

// Waits until the workers have served the TX and control chains and nothing has moved for a
// millisecond, at most 50 ms: the workers never block on the fuzzer, so an idle device is
// one waiting for buffers or frames.
void wait_idle(std::vector<skiff::fuzz::DriverRing*> must_complete) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(50);
  uint64_t last = activity.load();
  auto quiet_since = Clock::now();
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    const uint64_t now = activity.load();
    if (now != last) {
      last = now;
      quiet_since = Clock::now();
      continue;
    }
    bool complete = true;
    for (auto* ring : must_complete) complete = complete && ring->used_idx() == ring->published();
    if (complete && Clock::now() - quiet_since >= std::chrono::milliseconds(1)) return;
  }
}

void fuzz_mac(FuzzReader& in) {
  const std::string vm_name = in.string(64);
  const std::string nic_id = in.string(64);
  const skiff::MacAddress mac = generate_mac(vm_name, nic_id);
  check(is_locally_administered_unicast(mac));
  check(mac == generate_mac(vm_name, nic_id));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  skiff::fuzz::quiet_logs_unless_verbose();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzReader in(data, size);
  const uint8_t shape = in.u8();
  skiff::NetSpec spec;
  spec.id = "fz";
  spec.queues = (shape & 1) ? 2 : 1;
  spec.queue_size = static_cast<uint16_t>(4u << ((shape >> 1) % 4));
  const uint16_t spec_mtu = in.u16();
  if (shape & 0x10) spec.mtu = std::clamp<uint32_t>(spec_mtu, kMinMtu, kMaxMtu);
  spec.offloads = (shape & 0x20) != 0;
  if (shape & 0x40) spec.rx_rate_limit = {.bytes_per_second = 4096, .ops_per_second = 0};
  if (shape & 0x80) spec.tx_rate_limit = {.bytes_per_second = 0, .ops_per_second = 2};
  const unsigned backend_offloads = in.u8() & (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
  const uint32_t backend_mtu = std::clamp<uint32_t>(in.u16(), kMinMtu, 9000);
  const uint64_t driver_features = in.u64();

  skiff::fuzz::FuzzRam ram(kRamBase, kRamSize);
  auto backend = std::make_unique<FuzzBackend>(spec.queues, backend_offloads, backend_mtu, ram);
  FuzzBackend* fake = backend.get();
  auto created = VirtioNet::create_with_backend(spec, "fuzz-vm", std::move(backend), ram.memory());
  check(created.has_value());
  std::shared_ptr<VirtioNet> device = *created;

  // Rings: receiveq/transmitq per pair, then the control queue (§5.1.2).
  std::vector<std::unique_ptr<skiff::fuzz::DriverRing>> rings;
  for (uint16_t i = 0; i < 2 * spec.queues; ++i) {
    rings.push_back(std::make_unique<skiff::fuzz::DriverRing>(ram, spec.queue_size));
  }
  rings.push_back(std::make_unique<skiff::fuzz::DriverRing>(ram, 16));

  uint64_t features = (driver_features & device->device_features()) | feature_mask(kFeatureVersion1);
  // The transport refuses FEATURES_OK for combinations §5.1.3.1 forbids; so does this.
  if (!device->check_features(features).empty()) features &= ~(feature_mask(kFeatureGuestTso4) |
                                                             feature_mask(kFeatureGuestTso6) |
                                                             feature_mask(kFeatureGuestEcn) |
                                                             feature_mask(kFeatureHostTso4) |
                                                             feature_mask(kFeatureHostTso6) |
                                                             feature_mask(kFeatureHostEcn));
  if (!device->check_features(features).empty()) {
    features &= ~(feature_mask(kFeatureCtrlRx) | feature_mask(kFeatureMq));  // without CTRL_VQ
  }
  if (!device->check_features(features).empty()) features &= ~feature_mask(kFeatureCtrlVq);
  check(device->check_features(features).empty());

  std::vector<Queue*> queues;
  for (auto& ring : rings) {
    check(ring->queue().activate(ram.memory(), features).has_value());
    queues.push_back(&ring->queue());
  }

  const size_t chains = in.u8() % 24;
  for (size_t i = 0; i < chains; ++i) {
    const size_t target = in.u8() % rings.size();
    if (!skiff::fuzz::read_chain(in, ram, *rings[target])) break;
  }
  const size_t frames = in.u8() % 8;
  for (size_t i = 0; i < frames; ++i) {
    const size_t pair = in.u8() % spec.queues;
    const uint16_t length = in.u16();
    const uint8_t extra = in.u8();
    auto bytes = in.bytes(length);
    Frame frame{std::vector<uint8_t>(bytes.begin(), bytes.end()), 0};
    frame.bytes.resize(length);
    frame.claimed = frame.bytes.size() + extra;
    fake->add_frame(pair, std::move(frame));
  }

  auto interrupt = std::make_shared<CountingInterrupt>();
  auto activated = device->activate(features, queues, interrupt);
  check(activated.has_value());
  for (uint16_t i = 0; i < rings.size(); ++i) device->notify_queue(i);
  std::vector<skiff::fuzz::DriverRing*> must_complete = {rings.back().get()};
  if (!spec.tx_rate_limit.limited()) {
    for (uint16_t i = 1; i < rings.size() - 1; i += 2) must_complete.push_back(rings[i].get());
  }
  wait_idle(must_complete);
  device->reset();

  // Every chain popped went back exactly once, with a head the driver published.
  for (auto& ring : rings) {
    Queue& queue = ring->queue();
    check(queue.next_used() == static_cast<uint16_t>(queue.stats().chains_popped));
    check(ring->used_idx() == queue.next_used());
    for (uint16_t slot = 0; slot < ring->used_idx(); ++slot) check(ring->used_elem(slot).first < ring->size());
  }
  const NetCounters counters = device->counters();
  check(counters.tx_packets + counters.tx_dropped <= rings.size() * 64);

  fuzz_mac(in);
  (void)device->check_features(in.u64());
  (void)tun_offload_flags(in.u64());
  std::vector<uint8_t> config(in.u8() % 32);
  device->read_config(in.u8(), config);
  return 0;
}
