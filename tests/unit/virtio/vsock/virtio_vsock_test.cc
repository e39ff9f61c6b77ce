// SPDX-License-Identifier: Apache-2.0
// VirtioVsock over three queue fakes and real Unix sockets: the device thread, the queues'
// use of guest buffers, configuration space, reset and the state seam.
#include "virtio/vsock/virtio_vsock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "unit/config/spec_test_util.h"
#include "unit/virtio/virtqueue_fake.h"
#include "unit/virtio/vsock/vsock_test_util.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio::vsock {
namespace {

using namespace testing;  // NOLINT: the vsock test helpers
using virtio::testing::kFakeDefaultFeatures;
using virtio::testing::VirtqueueFake;

class CountingInterrupt : public VirtioInterrupt {
 public:
  void signal_used_queue(uint16_t queue) override { ++used[queue]; }
  void signal_config_change() override {}
  void signal_needs_reset() override { ++needs_reset; }
  std::atomic<int> used[3] = {0, 0, 0};
  std::atomic<int> needs_reset{0};
};

bool wait_for(const std::function<bool()>& condition) {
  for (int i = 0; i < 2000; ++i) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

class VirtioVsockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_path_ = dir_.path() / "vm.vsock";
    auto device = VirtioVsock::create(kGuestCid, socket_path_);
    ASSERT_TRUE(device) << device.error().message();
    device_ = *device;
  }
  void TearDown() override { device_->reset(); }

  void activate() {
    ASSERT_TRUE(device_->activate(kFakeDefaultFeatures, {&rx_.queue(), &tx_.queue(), &events_.queue()}, interrupt_));
  }
  // Posts `count` receive buffers of `size` bytes.
  void post_rx(int count, uint32_t size = kHeaderSize + 4096) {
    for (int i = 0; i < count; ++i) rx_heads_.push_back(rx_.chain().writable(size).add());
    device_->notify_queue(VirtioVsock::kRxQueue);
  }
  void transmit(const PacketHeader& header, std::string_view payload = {}) {
    auto bytes = encode_header(header);
    tx_.chain().readable(bytes).readable(payload).add();
    device_->notify_queue(VirtioVsock::kTxQueue);
  }
  // The next packet the device put in a receive buffer (waits up to 2 s).
  std::optional<std::pair<PacketHeader, std::string>> receive() {
    if (!wait_for([&] { return rx_.used_idx() > rx_seen_; })) return std::nullopt;
    auto used = rx_.used_elem(rx_seen_ % rx_.size());
    ++rx_seen_;
    for (const auto& chain : rx_heads_) {
      if (chain.head != used.id) continue;
      auto bytes = rx_.read(chain.writable[0].addr, used.len);
      EXPECT_GE(bytes.size(), kHeaderSize);
      PacketHeader header = decode_header(std::span<const uint8_t, kHeaderSize>(bytes.data(), kHeaderSize));
      return std::pair{header, std::string(bytes.begin() + kHeaderSize, bytes.end())};
    }
    ADD_FAILURE() << "used id " << used.id << " is no posted buffer";
    return std::nullopt;
  }

  skiff::testing_util::TempDir dir_;
  std::filesystem::path socket_path_;
  std::shared_ptr<VirtioVsock> device_;
  std::shared_ptr<CountingInterrupt> interrupt_ = std::make_shared<CountingInterrupt>();
  VirtqueueFake rx_{64, kFakeDefaultFeatures, 1 << 20};
  VirtqueueFake tx_{64, kFakeDefaultFeatures, 1 << 20};
  VirtqueueFake events_{8};
  std::vector<virtio::testing::FakeChain> rx_heads_;
  uint16_t rx_seen_ = 0;
};

TEST_F(VirtioVsockTest, IdentityAndConfigSpace) {
  EXPECT_EQ(device_->device_type(), kDeviceIdVsock);
  EXPECT_EQ(device_->queue_max_sizes().size(), 3u);
  EXPECT_TRUE(has_feature(device_->device_features(), kFeatureVersion1));
  EXPECT_FALSE(has_feature(device_->device_features(), 1));  // no SEQPACKET
  EXPECT_EQ(device_->config_size(), 8u);
  uint8_t config[8];
  std::fill(std::begin(config), std::end(config), 0xff);
  device_->read_config(0, config);
  EXPECT_EQ(config[0], kGuestCid);
  for (int i = 1; i < 8; ++i) EXPECT_EQ(config[i], 0) << i;
  uint8_t write[4] = {9, 9, 9, 9};
  device_->write_config(0, write);  // read-only
  device_->read_config(0, std::span(config, 4));
  EXPECT_EQ(config[0], kGuestCid);
  for (uint16_t q = 0; q < 3; ++q) EXPECT_TRUE(device_->queue_notify_fd(q));
  EXPECT_FALSE(device_->queue_notify_fd(3));
  EXPECT_TRUE(std::filesystem::exists(socket_path_));
}

TEST_F(VirtioVsockTest, ASecondDeviceOnTheSameSocketIsRefused) {
  auto second = VirtioVsock::create(4, socket_path_);
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("in use"), std::string::npos) << second.error().message();
}

TEST_F(VirtioVsockTest, SocketIsRemovedWithTheDevice) {
  device_.reset();
  EXPECT_FALSE(std::filesystem::exists(socket_path_));
  device_ = *VirtioVsock::create(kGuestCid, socket_path_);  // for TearDown
}

TEST_F(VirtioVsockTest, HostConnectionRoundTripThroughTheQueues) {
  UniqueFd early = connect_to(socket_path_);  // before the driver is ready: waits in the backlog
  write_all(early.get(), "CONNECT 52\n");
  activate();
  post_rx(8);
  auto request = receive();
  ASSERT_TRUE(request);
  EXPECT_EQ(request->first.op, kOpRequest);
  EXPECT_EQ(request->first.dst_port, 52u);
  transmit(guest_packet(kOpResponse, 52, request->first.src_port));
  EXPECT_EQ(read_some(early.get(), 3), "OK ");
  read_some(early.get(), fmt::format("{}\n", request->first.src_port).size());
  write_all(early.get(), "to the guest");
  auto data = receive();
  ASSERT_TRUE(data);
  EXPECT_EQ(data->first.op, kOpRw);
  EXPECT_EQ(data->second, "to the guest");
  transmit(guest_packet(kOpRw, 52, request->first.src_port, 12), "to the host!");
  EXPECT_EQ(read_some(early.get(), 12), "to the host!");
  EXPECT_TRUE(wait_for([&] { return tx_.used_idx() == 2; }));
  EXPECT_EQ(tx_.used_elem(0).len, 0u);  // transmitted buffers come back with length 0
  EXPECT_GE(interrupt_->used[VirtioVsock::kRxQueue].load(), 1);
  EXPECT_GE(interrupt_->used[VirtioVsock::kTxQueue].load(), 1);
  auto stats = device_->stats();
  EXPECT_EQ(stats.host_connections, 1u);
  EXPECT_EQ(stats.bytes_to_guest, 12u);
  EXPECT_EQ(stats.bytes_to_host, 12u);
}

TEST_F(VirtioVsockTest, GuestConnectionWaitsForReceiveBuffersThenCompletes) {
  UniqueFd listener = listen_at(socket_path_.string() + "_1234");
  activate();
  transmit(guest_packet(kOpRequest, 999, 1234));
  UniqueFd program = accept_from(listener.get());
  ASSERT_TRUE(program.valid());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(rx_.used_idx(), 0);  // no buffers yet: the RESPONSE waits
  post_rx(1);
  auto response = receive();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->first.op, kOpResponse);
}

TEST_F(VirtioVsockTest, MalformedChainsAreReturnedAndCounted) {
  activate();
  tx_.chain().readable("short").add();  // no room for a header
  device_->notify_queue(VirtioVsock::kTxQueue);
  EXPECT_TRUE(wait_for([&] { return tx_.used_idx() == 1; }));
  EXPECT_TRUE(wait_for([&] { return device_->stats().bad_packets == 1; }));
  // A receive buffer too small for a header, when there is something to send.
  rx_heads_.push_back(rx_.chain().writable(8).add());
  post_rx(1);
  transmit(guest_packet(kOpRw, 1, 2, 0));  // unknown connection: an RST for the guest
  ASSERT_TRUE(wait_for([&] { return rx_.used_idx() >= 2; }));
  EXPECT_EQ(rx_.used_elem(0).len, 0u);  // the 8-byte buffer went back empty
  rx_seen_ = 1;
  auto reset = receive();
  ASSERT_TRUE(reset);
  EXPECT_EQ(reset->first.op, kOpRst);
  EXPECT_EQ(interrupt_->needs_reset.load(), 0);
}

TEST_F(VirtioVsockTest, ResetClosesConnectionsAndKeepsTheSocket) {
  activate();
  post_rx(4);
  UniqueFd client = connect_to(socket_path_);
  write_all(client.get(), "CONNECT 7\n");
  ASSERT_TRUE(receive());
  device_->reset();
  EXPECT_TRUE(sees_eof(client.get()));
  EXPECT_TRUE(std::filesystem::exists(socket_path_));
  UniqueFd again = connect_to(socket_path_);  // still listening
  EXPECT_TRUE(again.valid());
}

TEST_F(VirtioVsockTest, PauseKeepsConnectionsAndResumeServesWhatArrivedMeanwhile) {
  activate();
  post_rx(4);
  UniqueFd client = connect_to(socket_path_);
  write_all(client.get(), "CONNECT 7\n");
  auto request = receive();
  ASSERT_TRUE(request);
  transmit(guest_packet(kOpResponse, 7, request->first.src_port));
  EXPECT_EQ(read_some(client.get(), 3), "OK ");
  ASSERT_TRUE(device_->pause());
  write_all(client.get(), "while paused");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const uint16_t before = rx_.used_idx();
  EXPECT_EQ(before, rx_seen_);
  ASSERT_TRUE(device_->resume());
  read_some(client.get(), fmt::format("{}\n", request->first.src_port).size());
  auto data = receive();
  ASSERT_TRUE(data);
  EXPECT_EQ(data->second, "while paused");
}

TEST_F(VirtioVsockTest, RestoredDeviceTellsTheGuestItsConnectionsAreGone) {
  auto saved = device_->save_state();
  ASSERT_TRUE(saved);
  device_.reset();
  auto restored = VirtioVsock::create(kGuestCid, socket_path_);
  ASSERT_TRUE(restored);
  device_ = *restored;
  ASSERT_TRUE(device_->restore_state(*saved));
  activate();
  EXPECT_EQ(events_.used_idx(), 0);  // no event buffer yet
  auto event = events_.chain().writable(8).add();
  device_->notify_queue(VirtioVsock::kEventQueue);
  ASSERT_TRUE(wait_for([&] { return events_.used_idx() == 1; }));
  EXPECT_EQ(events_.used_elem(0).len, 4u);
  EXPECT_EQ(events_.read(event.writable[0].addr, 4), (std::vector<uint8_t>{0, 0, 0, 0}));
  EXPECT_TRUE(wait_for([&] { return device_->transport_resets() == 1; }));
  EXPECT_GE(interrupt_->used[VirtioVsock::kEventQueue].load(), 1);
}

TEST_F(VirtioVsockTest, StateKeepsTheCountersAndRefusesAnotherCid) {
  activate();
  post_rx(2);
  transmit(guest_packet(kOpRequest, 1, 4321));  // nobody listens: refused
  ASSERT_TRUE(receive());
  device_->reset();
  auto saved = device_->save_state();
  ASSERT_TRUE(saved);
  auto other = VirtioVsock::create(kGuestCid + 1, dir_.path() / "other.vsock");
  ASSERT_TRUE(other);
  auto refused = (*other)->restore_state(*saved);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("guest CID 3"), std::string::npos) << refused.error().message();
  auto same = VirtioVsock::create(kGuestCid, dir_.path() / "same.vsock");
  ASSERT_TRUE(same);
  ASSERT_TRUE((*same)->restore_state(*saved));
  EXPECT_EQ((*same)->stats().refused, 1u);
  EXPECT_EQ((*same)->stats().resets_sent, 1u);
  state::StateBlob wrong("virtio-rng", 1);
  EXPECT_FALSE((*same)->restore_state(wrong));
}

}  // namespace
}  // namespace skiff::virtio::vsock
