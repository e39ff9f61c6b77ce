// SPDX-License-Identifier: Apache-2.0
// Fakes for the virtio-net device tests:
//   - SocketPairBackend: a NetBackend whose queue fds are socketpair(AF_UNIX, SOCK_SEQPACKET)
//     ends; the test holds the peers and reads/writes whole frames (header included) the way
//     the kernel side of a tap would;
//   - NetQueues: the driver side of several split virtqueues in one guest RAM (a device
//     reads all its queues' buffers through one GuestMemory);
//   - RecordingInterrupt: counts used-buffer notifications.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "memory/guest_memory.h"
#include "virtio/core/queue.h"
#include "virtio/core/virtio_constants.h"
#include "virtio/core/virtio_device.h"
#include "virtio/net/net_backend.h"
#include "virtio/net/net_constants.h"

namespace skiff::virtio::net::testing {

// Polls `done` every millisecond for up to `timeout`.
inline bool wait_until(const std::function<bool()>& done,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return done();
}

class SocketPairBackend : public NetBackend {
 public:
  explicit SocketPairBackend(size_t queues, unsigned supported_offloads = 0x0f, uint32_t mtu = 1500)
      : supported_(supported_offloads), mtu_(mtu), enabled_(queues, true) {
    for (size_t i = 0; i < queues; ++i) {
      int fds[2];
      EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
      device_.emplace_back(fds[0]);
      peer_.emplace_back(fds[1]);
    }
  }

  std::string name() const override { return "fake-tap"; }
  size_t queue_count() const override { return device_.size(); }
  int queue_fd(size_t queue) const override { return device_[queue].get(); }
  ssize_t read_frame(size_t queue, const iovec* iov, int count) override {
    reads.fetch_add(1);
    return NetBackend::read_frame(queue, iov, count);
  }
  unsigned supported_offloads() const override { return supported_; }
  Result<void> set_offloads(unsigned tun_flags) override {
    offloads.store(tun_flags);
    return {};
  }
  Result<void> set_queue_enabled(size_t queue, bool enabled) override {
    std::lock_guard lock(mutex_);
    enabled_[queue] = enabled;
    return {};
  }
  uint32_t mtu() const override { return mtu_; }

  bool queue_enabled(size_t queue) const {
    std::lock_guard lock(mutex_);
    return enabled_[queue];
  }
  // The "kernel" side of queue `queue`.
  int peer(size_t queue) const { return peer_[queue].get(); }
  // Sends header + payload as one frame from the kernel side.
  void send_frame(size_t queue, std::span<const uint8_t> payload, std::array<uint8_t, kNetHeaderSize> header = {}) {
    std::vector<uint8_t> frame(header.begin(), header.end());
    frame.insert(frame.end(), payload.begin(), payload.end());
    ASSERT_EQ(::write(peer(queue), frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  }
  // Receives one frame (header included) from the kernel side, waiting up to `timeout`.
  std::optional<std::vector<uint8_t>> receive_frame(size_t queue,
                                                    std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
    std::vector<uint8_t> buffer(256 * 1024);
    ssize_t n = -1;
    wait_until(
        [&] {
          n = ::read(peer(queue), buffer.data(), buffer.size());
          return n >= 0;
        },
        timeout);
    if (n < 0) return std::nullopt;
    buffer.resize(static_cast<size_t>(n));
    return buffer;
  }

  std::atomic<unsigned> offloads{~0u};
  std::atomic<uint64_t> reads{0};

 private:
  unsigned supported_;
  uint32_t mtu_;
  std::vector<UniqueFd> device_;
  std::vector<UniqueFd> peer_;
  mutable std::mutex mutex_;
  std::vector<bool> enabled_;
};

class RecordingInterrupt : public VirtioInterrupt {
 public:
  void signal_used_queue(uint16_t queue_index) override {
    std::lock_guard lock(mutex_);
    ++used_[queue_index];
  }
  void signal_config_change() override {}
  void signal_needs_reset() override { needs_reset.store(true); }
  int used_signals(uint16_t queue_index) const {
    std::lock_guard lock(mutex_);
    auto it = used_.find(queue_index);
    return it == used_.end() ? 0 : it->second;
  }
  std::atomic<bool> needs_reset{false};

 private:
  mutable std::mutex mutex_;
  std::map<uint16_t, int> used_;
};

struct PostedChain {
  uint16_t head = 0;
  std::vector<GuestBuffer> readable;
  std::vector<GuestBuffer> writable;
};

struct UsedElement {
  uint32_t id = 0;
  uint32_t len = 0;
  bool operator==(const UsedElement&) const = default;
};

// The driver side of `count` split virtqueues laid out in one heap-backed guest RAM.
class NetQueues {
 public:
  static constexpr uint64_t kRamBase = 0x100000;
  static constexpr uint64_t kQueueStride = 0x4000;  // desc +0, avail +0x1000, used +0x2000
  static constexpr uint64_t kDataOffset = 0x40000;

  NetQueues(std::vector<uint16_t> sizes, uint64_t ram_size = 8 << 20) : ram_(ram_size, 0), sizes_(sizes) {
    GuestRegion region{kRamBase, ram_.size(), ram_.data()};
    memory_ = GuestMemory::from_host_buffers(std::span(&region, 1));
    for (size_t i = 0; i < sizes.size(); ++i) {
      EXPECT_LE(sizes[i], 256);
      queues_.push_back(std::make_unique<Queue>(sizes[i], "net test queue"));
      state_.push_back({});
    }
  }

  // A copy of `original`'s guest RAM (as a snapshot carries it) with queues fresh from
  // construction, for restore tests: restore_state() gives them the original's state. The
  // driver-side bookkeeping (next descriptor, avail idx, used entries seen) goes on where the
  // original's is.
  struct CopyOf {
    const NetQueues& original;
  };
  explicit NetQueues(CopyOf copy)
      : ram_(copy.original.ram_),
        sizes_(copy.original.sizes_),
        state_(copy.original.state_),
        next_data_(copy.original.next_data_) {
    GuestRegion region{kRamBase, ram_.size(), ram_.data()};
    memory_ = GuestMemory::from_host_buffers(std::span(&region, 1));
    for (uint16_t size : sizes_) queues_.push_back(std::make_unique<Queue>(size, "net test queue"));
  }

  // Configures and activates queues (all when `which` is empty).
  void activate(uint64_t features, std::vector<size_t> which = {}) {
    if (which.empty()) {
      for (size_t i = 0; i < queues_.size(); ++i) which.push_back(i);
    }
    for (size_t i : which) {
      Queue& queue = *queues_[i];
      queue.set_size(sizes_[i]);
      queue.set_desc_table_address(desc(i));
      queue.set_avail_ring_address(avail(i));
      queue.set_used_ring_address(used(i));
      queue.set_ready(true);
      auto activated = queue.activate(memory_, features);
      EXPECT_TRUE(activated) << (activated ? "" : activated.error().message());
    }
  }

  // The driver's side of a device reset: indexes back to 0, rings cleared.
  void reset_driver() {
    for (size_t q = 0; q < queues_.size(); ++q) {
      state_[q] = {};
      EXPECT_TRUE(memory_.fill(desc(q), 0, kQueueStride));
    }
  }

  const GuestMemory& memory() const { return memory_; }
  Queue& queue(size_t i) { return *queues_[i]; }
  std::vector<Queue*> pointers() {
    std::vector<Queue*> out;
    for (auto& queue : queues_) out.push_back(queue.get());
    return out;
  }

  uint64_t alloc(uint64_t len) {
    next_data_ = (next_data_ + 15) / 16 * 16;
    uint64_t gpa = kRamBase + next_data_;
    next_data_ += len;
    EXPECT_LE(next_data_, ram_.size()) << "test RAM exhausted";
    return gpa;
  }

  // Posts a chain of readable buffers (with these contents) then writable buffers (of these
  // sizes) on queue `q`, publishing it in the available ring.
  PostedChain post(size_t q, std::vector<std::vector<uint8_t>> readable, std::vector<uint32_t> writable) {
    PostedChain chain;
    struct Desc {
      uint64_t addr;
      uint32_t len;
      uint16_t flags;
      uint16_t next;
    };
    std::vector<Desc> descs;
    for (auto& data : readable) {
      uint64_t gpa = alloc(data.size());
      EXPECT_TRUE(memory_.write(gpa, data));
      descs.push_back({gpa, static_cast<uint32_t>(data.size()), 0, 0});
      chain.readable.push_back({gpa, static_cast<uint32_t>(data.size())});
    }
    for (uint32_t len : writable) {
      uint64_t gpa = alloc(len);
      descs.push_back({gpa, len, kDescFlagWrite, 0});
      chain.writable.push_back({gpa, len});
    }
    State& state = state_[q];
    const uint16_t size = sizes_[q];
    chain.head = state.next_desc;
    for (size_t i = 0; i < descs.size(); ++i) {
      uint16_t index = static_cast<uint16_t>((chain.head + i) % size);
      if (i + 1 < descs.size()) {
        descs[i].flags |= kDescFlagNext;
        descs[i].next = static_cast<uint16_t>((index + 1) % size);
      }
      EXPECT_TRUE(memory_.write_obj(desc(q) + kDescriptorSize * index, descs[i]));
    }
    state.next_desc = static_cast<uint16_t>((chain.head + descs.size()) % size);
    EXPECT_TRUE(memory_.write_obj<uint16_t>(avail(q) + 4 + 2 * (state.avail_idx % size), chain.head));
    ++state.avail_idx;
    std::atomic_thread_fence(std::memory_order_release);
    EXPECT_TRUE(memory_.write_obj<uint16_t>(avail(q) + 2, state.avail_idx));
    return chain;
  }

  // Used elements published since the previous call.
  std::vector<UsedElement> take_used(size_t q) {
    auto idx = memory_.read_obj<uint16_t>(used(q) + 2);
    std::atomic_thread_fence(std::memory_order_acquire);
    std::vector<UsedElement> out;
    State& state = state_[q];
    for (; state.last_used != *idx; ++state.last_used) {
      out.push_back(*memory_.read_obj<UsedElement>(used(q) + 4 + kUsedElementSize * (state.last_used % sizes_[q])));
    }
    return out;
  }
  uint16_t used_idx(size_t q) const { return *memory_.read_obj<uint16_t>(used(q) + 2); }

  std::vector<uint8_t> read(uint64_t gpa, uint64_t len) const {
    std::vector<uint8_t> out(len);
    EXPECT_TRUE(memory_.read(gpa, out));
    return out;
  }

 private:
  struct State {
    uint16_t next_desc = 0;
    uint16_t avail_idx = 0;
    uint16_t last_used = 0;
  };
  uint64_t desc(size_t q) const { return kRamBase + kQueueStride * q; }
  uint64_t avail(size_t q) const { return desc(q) + 0x1000; }
  uint64_t used(size_t q) const { return desc(q) + 0x2000; }

  std::vector<uint8_t> ram_;
  std::vector<uint16_t> sizes_;
  GuestMemory memory_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::vector<State> state_;
  uint64_t next_data_ = kDataOffset;
};

}  // namespace skiff::virtio::net::testing
