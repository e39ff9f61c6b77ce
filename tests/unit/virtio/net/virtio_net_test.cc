// SPDX-License-Identifier: Apache-2.0
#include "virtio/net/virtio_net.h"

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cstring>
#include <string>
#include <thread>

#include "state/state_blob.h"
#include "unit/virtio/net/net_test_fakes.h"
#include "virtio/net/mac.h"
#include "virtio/net/net_constants.h"
#include "virtio/net/tap.h"

namespace skiff::virtio::net {
namespace {

using testing::NetQueues;
using testing::PostedChain;
using testing::RecordingInterrupt;
using testing::SocketPairBackend;
using testing::UsedElement;
using testing::wait_until;

constexpr uint64_t kBaseFeatures = feature_mask(kFeatureVersion1) | feature_mask(kFeatureRingIndirectDesc) |
                                   feature_mask(kFeatureMac) | feature_mask(kFeatureStatus) |
                                   feature_mask(kFeatureCtrlVq) | feature_mask(kFeatureCtrlRx);

std::vector<uint8_t> pattern(size_t len, uint8_t seed = 1) {
  std::vector<uint8_t> out(len);
  for (size_t i = 0; i < len; ++i) out[i] = static_cast<uint8_t>(seed + i * 7);
  return out;
}

std::vector<uint8_t> header_bytes(uint8_t flags = 0, uint8_t gso = 0) {
  std::vector<uint8_t> header(kNetHeaderSize, 0);
  header[0] = flags;
  header[1] = gso;
  return header;
}

class VirtioNetTest : public ::testing::Test {
 protected:
  // Builds the device over socketpairs; `features` are what the driver acks.
  void start(uint64_t features, uint16_t pairs = 1, uint16_t queue_size = 16,
             std::function<void(NetSpec&)> tweak = {}) {
    NetSpec spec;
    spec.id = "net0";
    spec.queues = pairs;
    spec.queue_size = queue_size;
    if (tweak) tweak(spec);
    std::vector<uint16_t> sizes(2 * pairs, queue_size);
    sizes.push_back(VirtioNet::kCtrlQueueSize);
    queues_ = std::make_unique<NetQueues>(sizes);
    auto backend = std::make_unique<SocketPairBackend>(pairs);
    backend_ = backend.get();
    auto net = VirtioNet::create_with_backend(spec, "vm", std::move(backend), queues_->memory());
    ASSERT_TRUE(net) << net.error().message();
    net_ = *net;
    ASSERT_EQ(net_->check_features(features), "");
    queues_->activate(features);
    interrupt_ = std::make_shared<RecordingInterrupt>();
    auto activated = net_->activate(features, queues_->pointers(), interrupt_);
    ASSERT_TRUE(activated) << activated.error().message();
  }

  void TearDown() override {
    if (net_) net_->reset();
    net_.reset();
  }

  // Waits until queue `q` has published `count` more used elements and returns them.
  std::vector<UsedElement> wait_used(size_t q, size_t count) {
    std::vector<UsedElement> all;
    wait_until([&] {
      auto more = queues_->take_used(q);
      all.insert(all.end(), more.begin(), more.end());
      return all.size() >= count;
    });
    return all;
  }

  // Posts an RX chain of writable buffers and kicks, as a driver does after refilling.
  PostedChain post_rx(size_t q, std::vector<uint32_t> writable) {
    PostedChain chain = queues_->post(q, {}, std::move(writable));
    net_->notify_queue(static_cast<uint16_t>(q));
    return chain;
  }

  uint16_t num_buffers(const PostedChain& chain) {
    auto bytes = queues_->read(chain.writable[0].addr + kHeaderNumBuffersOffset, 2);
    return static_cast<uint16_t>(bytes[0] | (bytes[1] << 8));
  }

  std::unique_ptr<NetQueues> queues_;
  SocketPairBackend* backend_ = nullptr;
  std::shared_ptr<VirtioNet> net_;
  std::shared_ptr<RecordingInterrupt> interrupt_;
};

// ---- TX -----------------------------------------------------------------------------------

TEST_F(VirtioNetTest, TxWritesHeaderAndFrameByteForByte) {
  start(kBaseFeatures);
  auto header = header_bytes(kHeaderFlagNeedsCsum);
  auto part1 = pattern(40, 3);
  auto part2 = pattern(1000, 9);
  queues_->post(1, {header, part1, part2}, {});
  net_->notify_queue(1);
  auto frame = backend_->receive_frame(0);
  ASSERT_TRUE(frame);
  std::vector<uint8_t> expected = header;
  expected.insert(expected.end(), part1.begin(), part1.end());
  expected.insert(expected.end(), part2.begin(), part2.end());
  EXPECT_EQ(*frame, expected);
  auto used = wait_used(1, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 0u);
  EXPECT_TRUE(wait_until([&] { return net_->counters().tx_packets == 1; }));
  EXPECT_EQ(net_->counters().tx_bytes, 1040u);
  EXPECT_EQ(net_->counters().tx_dropped, 0u);
  EXPECT_GE(interrupt_->used_signals(1), 1);
}

TEST_F(VirtioNetTest, TxMalformedChainsAreDroppedCountedAndReturned) {
  start(kBaseFeatures);
  queues_->post(1, {header_bytes(), pattern(60)}, {16});  // writable part
  queues_->post(1, {pattern(8)}, {});                      // shorter than the header
  // Longer than header + 64 KiB + Ethernet/VLAN.
  queues_->post(1, {header_bytes(), pattern(kMaxFrameSize + 1)}, {});
  queues_->post(1, {header_bytes(), pattern(60, 5)}, {});  // a good one after them
  net_->notify_queue(1);
  auto used = wait_used(1, 4);
  ASSERT_EQ(used.size(), 4u);
  for (const auto& element : used) EXPECT_EQ(element.len, 0u);
  auto frame = backend_->receive_frame(0);
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->size(), kNetHeaderSize + 60);
  EXPECT_FALSE(backend_->receive_frame(0, std::chrono::milliseconds(50)));
  auto counters = net_->counters();
  EXPECT_EQ(counters.tx_dropped, 3u);
  EXPECT_EQ(counters.tx_packets, 1u);
}

TEST_F(VirtioNetTest, TxAcceptsLargestFrame) {
  start(kBaseFeatures);
  queues_->post(1, {header_bytes(), pattern(kMaxFrameSize)}, {});
  net_->notify_queue(1);
  auto frame = backend_->receive_frame(0);
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->size(), kNetHeaderSize + kMaxFrameSize);
}

// ---- RX -----------------------------------------------------------------------------------

TEST_F(VirtioNetTest, RxWithoutMergeableBuffersFillsOneChain) {
  start(kBaseFeatures);
  auto chain = post_rx(0, {kNetHeaderSize, 1514});  // header and data apart
  auto header = std::array<uint8_t, kNetHeaderSize>{kHeaderFlagDataValid, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x55, 0x55};
  auto payload = pattern(300);
  backend_->send_frame(0, payload, header);
  auto used = wait_used(0, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, chain.head);
  EXPECT_EQ(used[0].len, kNetHeaderSize + 300);
  auto got_header = queues_->read(chain.writable[0].addr, kNetHeaderSize);
  EXPECT_EQ(got_header[0], kHeaderFlagDataValid);
  EXPECT_EQ(num_buffers(chain), 1);  // §5.1.6.4: 1 without MRG_RXBUF, whatever the tap wrote
  EXPECT_EQ(queues_->read(chain.writable[1].addr, 300), payload);
  EXPECT_TRUE(wait_until([&] { return net_->counters().rx_packets == 1; }));
  EXPECT_EQ(net_->counters().rx_bytes, 300u);
  EXPECT_GE(interrupt_->used_signals(0), 1);
}

TEST_F(VirtioNetTest, RxMergeableFrameSpansThreeChains) {
  start(kBaseFeatures | feature_mask(kFeatureMrgRxbuf));
  std::vector<PostedChain> chains;
  for (int i = 0; i < 4; ++i) chains.push_back(post_rx(0, {512}));
  auto payload = pattern(1200, 11);  // 12 + 1200 = 512 + 512 + 188
  backend_->send_frame(0, payload);
  auto used = wait_used(0, 3);
  ASSERT_EQ(used.size(), 3u);
  EXPECT_EQ(used[0], (UsedElement{chains[0].head, 512}));
  EXPECT_EQ(used[1], (UsedElement{chains[1].head, 512}));
  EXPECT_EQ(used[2], (UsedElement{chains[2].head, 188}));
  EXPECT_EQ(num_buffers(chains[0]), 3);
  std::vector<uint8_t> got = queues_->read(chains[0].writable[0].addr + kNetHeaderSize, 500);
  auto second = queues_->read(chains[1].writable[0].addr, 512);
  auto third = queues_->read(chains[2].writable[0].addr, 188);
  got.insert(got.end(), second.begin(), second.end());
  got.insert(got.end(), third.begin(), third.end());
  EXPECT_EQ(got, payload);

  // The fourth chain, untouched, takes the next frame alone.
  backend_->send_frame(0, pattern(100, 2));
  used = wait_used(0, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0], (UsedElement{chains[3].head, kNetHeaderSize + 100}));
  EXPECT_EQ(num_buffers(chains[3]), 1);
}

TEST_F(VirtioNetTest, RxMergeableFrameWaitsForMoreBuffersInsteadOfDropping) {
  start(kBaseFeatures | feature_mask(kFeatureMrgRxbuf));
  auto first = post_rx(0, {256});
  auto payload = pattern(700, 4);
  backend_->send_frame(0, payload);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(queues_->take_used(0).empty());  // frame half placed, waiting
  auto second = post_rx(0, {256});
  auto third = post_rx(0, {256});
  net_->notify_queue(0);
  auto used = wait_used(0, 3);
  ASSERT_EQ(used.size(), 3u);
  EXPECT_EQ(used[0], (UsedElement{first.head, 256}));
  EXPECT_EQ(used[1], (UsedElement{second.head, 256}));
  EXPECT_EQ(used[2], (UsedElement{third.head, 200}));
  EXPECT_EQ(num_buffers(first), 3);
  auto tail = queues_->read(third.writable[0].addr, 200);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), payload.end() - 200));
  EXPECT_EQ(net_->counters().rx_dropped, 0u);
}

TEST_F(VirtioNetTest, RxChainTooShortDropsFrameAndKeepsChain) {
  start(kBaseFeatures);
  auto chain = post_rx(0, {64});
  backend_->send_frame(0, pattern(200));
  EXPECT_TRUE(wait_until([&] { return net_->counters().rx_dropped == 1; }));
  EXPECT_TRUE(queues_->take_used(0).empty());
  // The chain serves the next frame that fits.
  backend_->send_frame(0, pattern(40, 8));
  auto used = wait_used(0, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0], (UsedElement{chain.head, kNetHeaderSize + 40}));
  EXPECT_EQ(queues_->read(chain.writable[0].addr + kNetHeaderSize, 40), pattern(40, 8));
  EXPECT_EQ(net_->counters().rx_packets, 1u);
}

TEST_F(VirtioNetTest, RxChainSmallerThanHeaderIsReturnedEmpty) {
  start(kBaseFeatures);
  auto tiny = post_rx(0, {4});
  auto with_readable = queues_->post(0, {pattern(4)}, {256});
  net_->notify_queue(0);
  auto used = wait_used(0, 2);
  ASSERT_EQ(used.size(), 2u);
  EXPECT_EQ(used[0], (UsedElement{tiny.head, 0}));
  EXPECT_EQ(used[1], (UsedElement{with_readable.head, 0}));
}

TEST_F(VirtioNetTest, RxMergeableFrameLargerThanWholeRingIsDropped) {
  start(kBaseFeatures | feature_mask(kFeatureMrgRxbuf), 1, 4);
  for (int i = 0; i < 4; ++i) post_rx(0, {64});
  backend_->send_frame(0, pattern(1000));
  EXPECT_TRUE(wait_until([&] { return net_->counters().rx_dropped == 1; }));
  // The chains survive for a frame that fits.
  backend_->send_frame(0, pattern(100, 6));
  auto used = wait_used(0, 2);
  ASSERT_EQ(used.size(), 2u);
  EXPECT_EQ(used[0].len + used[1].len, kNetHeaderSize + 100);
}

TEST_F(VirtioNetTest, RxStopsReadingWithoutBuffersAndResumesOnKick) {
  start(kBaseFeatures);
  backend_->send_frame(0, pattern(100, 1));
  backend_->send_frame(0, pattern(100, 2));
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  auto cpu_us = [](const rusage& usage) {
    return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000 + usage.ru_utime.tv_usec +
           usage.ru_stime.tv_usec;
  };
  EXPECT_LT(cpu_us(after) - cpu_us(before), 100000) << "the worker spins without RX buffers";
  EXPECT_EQ(backend_->reads.load(), 0u);
  // Nothing was read, so nothing was dropped: both frames still wait in the "tap".
  int pending = 0;
  ASSERT_EQ(::ioctl(backend_->queue_fd(0), FIONREAD, &pending), 0);
  EXPECT_GT(pending, 0);
  EXPECT_EQ(net_->counters().rx_dropped, 0u);

  auto first = post_rx(0, {1526});
  net_->notify_queue(0);
  auto used = wait_used(0, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0], (UsedElement{first.head, kNetHeaderSize + 100}));
  EXPECT_EQ(queues_->read(first.writable[0].addr + kNetHeaderSize, 100), pattern(100, 1));
  auto second = post_rx(0, {1526});
  net_->notify_queue(0);
  used = wait_used(0, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(queues_->read(second.writable[0].addr + kNetHeaderSize, 100), pattern(100, 2));
  EXPECT_EQ(net_->counters().rx_dropped, 0u);
}

TEST_F(VirtioNetTest, RxBuffersPostedBeforeFramesAreFilledWhenFramesArrive) {
  start(kBaseFeatures);
  std::vector<PostedChain> chains;
  for (int i = 0; i < 8; ++i) chains.push_back(post_rx(0, {1526}));
  net_->notify_queue(0);
  for (int i = 0; i < 8; ++i) backend_->send_frame(0, pattern(60 + i, static_cast<uint8_t>(i)));
  auto used = wait_used(0, 8);
  ASSERT_EQ(used.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(used[i], (UsedElement{chains[i].head, kNetHeaderSize + 60 + i}));
    EXPECT_EQ(queues_->read(chains[i].writable[0].addr + kNetHeaderSize, 60 + i),
              pattern(60 + i, static_cast<uint8_t>(i)));
  }
}

// More frames waiting than one pass reads (kRxBudget = 64): the rest must not wait for a
// notification the guest will not send (its notifications are off while it has buffers).
TEST_F(VirtioNetTest, RxBacklogLongerThanOnePassIsAllDelivered) {
  start(kBaseFeatures, 1, 128);
  constexpr int kFrames = 100;
  for (int i = 0; i < kFrames; ++i) backend_->send_frame(0, pattern(60, static_cast<uint8_t>(i)));
  std::vector<PostedChain> chains;
  // All buffers first, one notification: the device then finds 100 frames and 100 buffers.
  for (int i = 0; i < kFrames; ++i) chains.push_back(queues_->post(0, {}, {1526}));
  net_->notify_queue(0);
  auto used = wait_used(0, kFrames);
  ASSERT_EQ(used.size(), static_cast<size_t>(kFrames));
  EXPECT_EQ(queues_->read(chains[kFrames - 1].writable[0].addr + kNetHeaderSize, 60),
            pattern(60, static_cast<uint8_t>(kFrames - 1)));
  EXPECT_EQ(net_->counters().rx_dropped, 0u);
}

// ---- Features, configuration ----------------------------------------------------------------

TEST(VirtioNetFeatures, OfferedFeaturesFollowSpecAndTap) {
  NetQueues queues({16, 16, 64});
  NetSpec spec;
  spec.id = "n";
  auto net = VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(1, 0x0f),
                                            queues.memory());
  ASSERT_TRUE(net);
  uint64_t features = (*net)->device_features();
  for (unsigned bit : {kFeatureVersion1, kFeatureRingIndirectDesc, kFeatureRingEventIdx, kFeatureMac,
                       kFeatureStatus, kFeatureMrgRxbuf, kFeatureCtrlVq, kFeatureCtrlRx, kFeatureCsum,
                       kFeatureGuestCsum, kFeatureHostTso4, kFeatureHostTso6, kFeatureGuestTso4,
                       kFeatureGuestTso6, kFeatureHostEcn, kFeatureGuestEcn}) {
    EXPECT_TRUE(has_feature(features, bit)) << bit;
  }
  EXPECT_FALSE(has_feature(features, kFeatureMq));
  EXPECT_FALSE(has_feature(features, kFeatureMtu));
  EXPECT_FALSE(has_feature(features, kFeatureRingPacked));
  EXPECT_EQ((*net)->check_features(features), "") << "everything offered is consistent";

  // Offloads off: no checksum/TSO features.
  spec.offloads = false;
  net = VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(1, 0x0f), queues.memory());
  ASSERT_TRUE(net);
  features = (*net)->device_features();
  EXPECT_FALSE(has_feature(features, kFeatureCsum));
  EXPECT_FALSE(has_feature(features, kFeatureGuestTso4));

  // A tap with checksum offload only: no TSO/ECN.
  spec.offloads = true;
  net = VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(1, TUN_F_CSUM),
                                       queues.memory());
  ASSERT_TRUE(net);
  features = (*net)->device_features();
  EXPECT_TRUE(has_feature(features, kFeatureCsum));
  EXPECT_TRUE(has_feature(features, kFeatureGuestCsum));
  EXPECT_FALSE(has_feature(features, kFeatureHostTso4));
  EXPECT_FALSE(has_feature(features, kFeatureGuestEcn));

  // MQ and MTU when asked for.
  spec.queues = 2;
  spec.mtu = 9000;
  net = VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(2), queues.memory());
  ASSERT_TRUE(net);
  EXPECT_TRUE(has_feature((*net)->device_features(), kFeatureMq));
  EXPECT_TRUE(has_feature((*net)->device_features(), kFeatureMtu));
  EXPECT_EQ((*net)->queue_max_sizes(), (std::vector<uint16_t>{256, 256, 256, 256, 64}));
  EXPECT_EQ((*net)->ctrl_queue_index(), 4);
  // The control queue sits after both pairs, where a driver without MQ would not look.
  const uint64_t base = feature_mask(kFeatureVersion1);
  EXPECT_NE((*net)->check_features(base | feature_mask(kFeatureCtrlVq)).find("needs VIRTIO_NET_F_MQ"),
            std::string::npos);
  EXPECT_EQ((*net)->check_features(base | feature_mask(kFeatureCtrlVq) | feature_mask(kFeatureMq)), "");
  EXPECT_EQ((*net)->check_features(base), "");
}

TEST(VirtioNetFeatures, CheckFeaturesRefusesBrokenDependencies) {
  NetQueues queues({16, 16, 64});
  NetSpec spec;
  spec.id = "n";
  auto net = VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(1), queues.memory());
  ASSERT_TRUE(net);
  auto check = [&](std::initializer_list<unsigned> bits) {
    uint64_t features = feature_mask(kFeatureVersion1);
    for (unsigned bit : bits) features |= feature_mask(bit);
    return (*net)->check_features(features);
  };
  EXPECT_NE(check({kFeatureGuestTso4}), "");
  EXPECT_NE(check({kFeatureGuestTso6}), "");
  EXPECT_NE(check({kFeatureHostTso4}), "");
  EXPECT_NE(check({kFeatureHostTso6}), "");
  EXPECT_NE(check({kFeatureGuestCsum, kFeatureGuestEcn}), "");
  EXPECT_NE(check({kFeatureCsum, kFeatureHostEcn}), "");
  EXPECT_NE(check({kFeatureMq}), "");
  EXPECT_NE(check({kFeatureCtrlRx}), "");
  EXPECT_NE(check({kFeatureMq}).find("CTRL_VQ"), std::string::npos);
  EXPECT_NE(check({kFeatureGuestTso4}).find("GUEST_CSUM"), std::string::npos);

  EXPECT_EQ(check({}), "");
  EXPECT_EQ(check({kFeatureGuestCsum, kFeatureGuestTso4, kFeatureGuestEcn}), "");
  EXPECT_EQ(check({kFeatureCsum, kFeatureHostTso6, kFeatureHostEcn}), "");
  EXPECT_EQ(check({kFeatureCtrlVq, kFeatureMq, kFeatureCtrlRx}), "");
}

TEST(VirtioNetFeatures, OffloadFlagMapping) {
  auto flags = [](std::initializer_list<unsigned> bits) {
    uint64_t features = 0;
    for (unsigned bit : bits) features |= feature_mask(bit);
    return tun_offload_flags(features);
  };
  EXPECT_EQ(flags({}), 0u);
  EXPECT_EQ(flags({kFeatureGuestCsum}), unsigned{TUN_F_CSUM});
  EXPECT_EQ(flags({kFeatureGuestCsum, kFeatureGuestTso4}), unsigned{TUN_F_CSUM | TUN_F_TSO4});
  EXPECT_EQ(flags({kFeatureGuestCsum, kFeatureGuestTso6}), unsigned{TUN_F_CSUM | TUN_F_TSO6});
  EXPECT_EQ(flags({kFeatureGuestCsum, kFeatureGuestTso4, kFeatureGuestTso6, kFeatureGuestEcn}),
            unsigned{TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN});
  // Host-side (TX) offloads need no tap flag; guest TSO without GUEST_CSUM maps to nothing.
  EXPECT_EQ(flags({kFeatureCsum, kFeatureHostTso4, kFeatureHostTso6, kFeatureHostEcn}), 0u);
  EXPECT_EQ(flags({kFeatureGuestTso4}), 0u);
  EXPECT_EQ(flags({kFeatureGuestCsum, kFeatureGuestEcn}), unsigned{TUN_F_CSUM});
}

TEST_F(VirtioNetTest, ActivationAppliesTheAckedOffloads) {
  start(kBaseFeatures | feature_mask(kFeatureGuestCsum) | feature_mask(kFeatureGuestTso4) |
        feature_mask(kFeatureCsum) | feature_mask(kFeatureHostTso4));
  EXPECT_EQ(backend_->offloads.load(), unsigned{TUN_F_CSUM | TUN_F_TSO4});
}

TEST(VirtioNetConfig, ConfigSpaceIsReadOnly) {
  NetQueues queues({16, 16, 16, 16, 64});
  NetSpec spec;
  spec.id = "n";
  spec.queues = 2;
  spec.mtu = 9000;
  spec.mac = MacAddress{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  auto net = VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(2), queues.memory());
  ASSERT_TRUE(net);
  ASSERT_EQ((*net)->config_size(), 12u);
  std::vector<uint8_t> config(12);
  (*net)->read_config(0, config);
  EXPECT_EQ(config, (std::vector<uint8_t>{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 2, 0, 0x28, 0x23}));
  const uint8_t junk[4] = {9, 9, 9, 9};
  (*net)->write_config(0, junk);
  std::vector<uint8_t> again(12);
  (*net)->read_config(0, again);
  EXPECT_EQ(again, config);
  std::vector<uint8_t> past(4, 0xff);
  (*net)->read_config(10, past);
  EXPECT_EQ(past, (std::vector<uint8_t>{0x28, 0x23, 0, 0}));
}

TEST(VirtioNetConfig, GeneratedMacWhenSpecHasNone) {
  NetQueues queues({16, 16, 64});
  NetSpec spec;
  spec.id = "net7";
  auto net = VirtioNet::create_with_backend(spec, "myvm", std::make_unique<SocketPairBackend>(1), queues.memory());
  ASSERT_TRUE(net);
  EXPECT_EQ((*net)->mac(), generate_mac("myvm", "net7"));
}

TEST(VirtioNetConfig, BadSpecValuesAreRefused) {
  NetQueues queues({16, 16, 64});
  NetSpec spec;
  spec.id = "n";
  spec.mtu = 67;
  auto net = VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(1), queues.memory());
  ASSERT_FALSE(net);
  EXPECT_NE(net.error().message().find("mtu 67 out of range"), std::string::npos) << net.error().message();
  spec.mtu = 65536;
  EXPECT_FALSE(VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(1), queues.memory()));
  spec.mtu.reset();
  spec.queue_size = 100;
  net = VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(1), queues.memory());
  ASSERT_FALSE(net);
  EXPECT_NE(net.error().message().find("power of two"), std::string::npos);
}

// ---- Control queue --------------------------------------------------------------------------

class VirtioNetCtrlTest : public VirtioNetTest {
 protected:
  // Sends one control command and returns {used length, ack byte}.
  std::pair<uint32_t, uint8_t> command(std::vector<uint8_t> bytes) {
    const size_t ctrl = net_->ctrl_queue_index();
    auto chain = queues_->post(ctrl, {bytes}, {1});
    net_->notify_queue(static_cast<uint16_t>(ctrl));
    auto used = wait_used(ctrl, 1);
    EXPECT_EQ(used.size(), 1u);
    if (used.empty()) return {0, 0xff};
    EXPECT_EQ(used[0].id, chain.head);
    return {used[0].len, queues_->read(chain.writable[0].addr, 1)[0]};
  }
};

TEST_F(VirtioNetCtrlTest, MqVqPairsSetGoodAndBad) {
  start(kBaseFeatures | feature_mask(kFeatureMq), 2);
  EXPECT_EQ(net_->active_queue_pairs(), 1);
  EXPECT_FALSE(backend_->queue_enabled(1)) << "pair 1 detached until VQ_PAIRS_SET";
  EXPECT_EQ(command({kCtrlClassMq, kCtrlMqVqPairsSet, 2, 0}), std::make_pair(1u, kCtrlOk));
  EXPECT_EQ(net_->active_queue_pairs(), 2);
  EXPECT_TRUE(wait_until([&] { return backend_->queue_enabled(1); }));
  EXPECT_EQ(command({kCtrlClassMq, kCtrlMqVqPairsSet, 0, 0}), std::make_pair(1u, kCtrlErr));
  EXPECT_EQ(command({kCtrlClassMq, kCtrlMqVqPairsSet, 3, 0}), std::make_pair(1u, kCtrlErr));
  EXPECT_EQ(command({kCtrlClassMq, kCtrlMqVqPairsSet, 2}), std::make_pair(1u, kCtrlErr));  // short
  EXPECT_EQ(net_->active_queue_pairs(), 2);
  EXPECT_EQ(command({kCtrlClassMq, kCtrlMqVqPairsSet, 1, 0}), std::make_pair(1u, kCtrlOk));
  EXPECT_EQ(net_->active_queue_pairs(), 1);
  EXPECT_TRUE(wait_until([&] { return !backend_->queue_enabled(1); }));
}

TEST_F(VirtioNetCtrlTest, SecondPairCarriesTrafficAfterVqPairsSet) {
  start(kBaseFeatures | feature_mask(kFeatureMq), 2);
  ASSERT_EQ(command({kCtrlClassMq, kCtrlMqVqPairsSet, 2, 0}).second, kCtrlOk);
  auto chain = post_rx(2, {1526});
  net_->notify_queue(2);
  backend_->send_frame(1, pattern(77));
  auto used = wait_used(2, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0], (UsedElement{chain.head, kNetHeaderSize + 77}));
  queues_->post(3, {header_bytes(), pattern(33)}, {});
  net_->notify_queue(3);
  auto frame = backend_->receive_frame(1);
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->size(), kNetHeaderSize + 33);
}

TEST_F(VirtioNetCtrlTest, MqRefusedWithoutFeature) {
  // One pair: a multiqueue NIC refuses CTRL_VQ without MQ at FEATURES_OK (check_features).
  start(kBaseFeatures, 1);
  EXPECT_EQ(command({kCtrlClassMq, kCtrlMqVqPairsSet, 1, 0}).second, kCtrlErr);
  EXPECT_EQ(net_->active_queue_pairs(), 1);
}

TEST_F(VirtioNetCtrlTest, RxModeCommandsAcknowledged) {
  start(kBaseFeatures);
  EXPECT_EQ(command({kCtrlClassRx, kCtrlRxPromisc, 1}).second, kCtrlOk);
  EXPECT_EQ(command({kCtrlClassRx, kCtrlRxAllmulti, 0}).second, kCtrlOk);
  EXPECT_EQ(command({kCtrlClassRx, kCtrlRxPromisc}).second, kCtrlErr);  // no data byte
  EXPECT_EQ(command({kCtrlClassRx, 7, 1}).second, kCtrlErr);
  EXPECT_EQ(command({kCtrlClassMac, kCtrlMacTableSet, 0, 0, 0, 0, 0, 0, 0, 0}).second, kCtrlOk);
  EXPECT_EQ(command({kCtrlClassMac, kCtrlMacAddrSet, 1, 2, 3, 4, 5, 6}).second, kCtrlErr);
  EXPECT_EQ(command({kCtrlClassAnnounce, 0}).second, kCtrlErr);
  EXPECT_EQ(command({0x42, 0}).second, kCtrlErr);
  EXPECT_EQ(command({kCtrlClassRx}).second, kCtrlErr);  // no command byte
}

TEST_F(VirtioNetCtrlTest, CtrlChainWithoutAckByteReturnedEmpty) {
  start(kBaseFeatures);
  const size_t ctrl = net_->ctrl_queue_index();
  queues_->post(ctrl, {{kCtrlClassRx, kCtrlRxPromisc, 1}}, {});
  net_->notify_queue(static_cast<uint16_t>(ctrl));
  auto used = wait_used(ctrl, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 0u);
}

// ---- Rate limits, reset ---------------------------------------------------------------------

TEST_F(VirtioNetTest, TxRateLimitDelaysFramesWithoutDroppingThem) {
  start(kBaseFeatures, 1, 32, [](NetSpec& spec) { spec.tx_rate_limit.ops_per_second = 20; });
  for (int i = 0; i < 25; ++i) queues_->post(1, {header_bytes(), pattern(60)}, {});
  net_->notify_queue(1);
  // The bucket starts with one second's worth (20 frames); the other 5 follow at 20/s.
  EXPECT_TRUE(wait_until([&] { return net_->counters().tx_packets >= 20; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_LT(net_->counters().tx_packets, 25u);
  EXPECT_TRUE(wait_until([&] { return net_->counters().tx_packets == 25; }));
  EXPECT_EQ(net_->counters().tx_dropped, 0u);
  EXPECT_EQ(wait_used(1, 25).size(), 25u);
}

TEST_F(VirtioNetTest, RxRateLimitDelaysFrames) {
  start(kBaseFeatures, 1, 32, [](NetSpec& spec) { spec.rx_rate_limit.ops_per_second = 10; });
  for (int i = 0; i < 14; ++i) post_rx(0, {1526});
  net_->notify_queue(0);
  for (int i = 0; i < 14; ++i) backend_->send_frame(0, pattern(50));
  EXPECT_TRUE(wait_until([&] { return net_->counters().rx_packets >= 10; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_LT(net_->counters().rx_packets, 14u);
  EXPECT_TRUE(wait_until([&] { return net_->counters().rx_packets == 14; }));
  EXPECT_EQ(net_->counters().rx_dropped, 0u);
}

TEST_F(VirtioNetTest, ResetReturnsHeldChainsAndAllowsReactivation) {
  const uint64_t features = kBaseFeatures | feature_mask(kFeatureMrgRxbuf);
  start(features);
  post_rx(0, {512});
  post_rx(0, {512});
  net_->notify_queue(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // the worker holds both
  net_->reset();
  EXPECT_EQ(queues_->take_used(0).size(), 2u);

  // The guest re-initialises: same device, same tap, fresh rings.
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < 3; ++i) queues_->queue(i).reset();
    queues_->reset_driver();
    queues_->activate(features);
    ASSERT_TRUE(net_->activate(features, queues_->pointers(), interrupt_));
    queues_->post(1, {header_bytes(), pattern(20, static_cast<uint8_t>(round))}, {});
    net_->notify_queue(1);
    auto frame = backend_->receive_frame(0);
    ASSERT_TRUE(frame);
    EXPECT_EQ(frame->size(), kNetHeaderSize + 20);
    auto chain = post_rx(0, {2048});
    net_->notify_queue(0);
    backend_->send_frame(0, pattern(30));
    auto used = wait_used(0, 1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0], (UsedElement{chain.head, kNetHeaderSize + 30}));
    net_->reset();
  }
}

// ---- State: pause, save, restore -------------------------------------------------------------

state::StateBlob round_trip(const state::StateBlob& blob) {
  auto decoded = state::StateBlob::decode(blob.encode());
  EXPECT_TRUE(decoded) << (decoded ? "" : decoded.error().message());
  return decoded ? *decoded : state::StateBlob("broken", 1);
}

// Used elements of queue `q` of `queues`, waiting until there are `count` new ones.
std::vector<UsedElement> wait_used_on(NetQueues& queues, size_t q, size_t count) {
  std::vector<UsedElement> all;
  wait_until([&] {
    auto more = queues.take_used(q);
    all.insert(all.end(), more.begin(), more.end());
    return all.size() >= count;
  });
  return all;
}

class VirtioNetStateTest : public VirtioNetCtrlTest {
 protected:
  void TearDown() override {
    if (restored_) restored_->reset();
    restored_.reset();
    VirtioNetCtrlTest::TearDown();
  }

  // The snapshot of the paused NIC and its restore: saves every queue and the device
  // (through encode/decode), builds a NIC from the same spec over a fresh backend, restores
  // it and fresh queues over a copy of the guest memory, and activates it with `features`.
  void snapshot_and_restore(uint64_t features, uint16_t pairs = 1) {
    std::vector<state::StateBlob> queue_states;
    for (size_t i = 0; i < 2u * pairs + 1; ++i) queue_states.push_back(round_trip(queues_->queue(i).save_state()));
    auto device_state = net_->save_state();
    ASSERT_TRUE(device_state);
    EXPECT_EQ(device_state->kind(), "virtio-net");
    copy_ = std::make_unique<NetQueues>(NetQueues::CopyOf{*queues_});
    NetSpec spec;
    spec.id = "net0";
    spec.queues = pairs;
    spec.queue_size = 16;
    auto backend = std::make_unique<SocketPairBackend>(pairs);
    restored_backend_ = backend.get();
    auto net = VirtioNet::create_with_backend(spec, "vm", std::move(backend), copy_->memory());
    ASSERT_TRUE(net) << net.error().message();
    restored_ = *net;
    auto restored = restored_->restore_state(round_trip(*device_state));
    ASSERT_TRUE(restored) << restored.error().message();
    // Before activation: once active, the worker may already send what the ring holds.
    counters_at_restore_ = restored_->counters();
    for (size_t i = 0; i < queue_states.size(); ++i) {
      auto queue = copy_->queue(i).restore_state(queue_states[i], copy_->memory(), features);
      ASSERT_TRUE(queue) << queue.error().message();
    }
    restored_interrupt_ = std::make_shared<RecordingInterrupt>();
    auto activated = restored_->activate(features, copy_->pointers(), restored_interrupt_);
    ASSERT_TRUE(activated) << activated.error().message();
  }

  std::unique_ptr<NetQueues> copy_;
  SocketPairBackend* restored_backend_ = nullptr;
  std::shared_ptr<VirtioNet> restored_;
  std::shared_ptr<RecordingInterrupt> restored_interrupt_;
  NetCounters counters_at_restore_;
};

TEST_F(VirtioNetStateTest, RestoredNicContinuesLikeTheResumedOne) {
  // Without EVENT_IDX (NetQueues' driver never moves used_event) every used buffer asks for
  // an interrupt, so both NICs must raise some.
  const uint64_t features = kBaseFeatures;
  start(features);
  // Traffic before the snapshot: one frame each way, and a second RX buffer the worker holds
  // while it waits for a frame.
  queues_->post(1, {header_bytes(), pattern(60, 1)}, {});
  net_->notify_queue(1);
  ASSERT_TRUE(backend_->receive_frame(0));
  ASSERT_EQ(wait_used(1, 1).size(), 1u);
  auto rx1 = post_rx(0, {1526});
  auto rx2 = post_rx(0, {1526});
  backend_->send_frame(0, pattern(100, 5));
  ASSERT_EQ(wait_used(0, 1), (std::vector<UsedElement>{{rx1.head, kNetHeaderSize + 100}}));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // the worker holds rx2
  ASSERT_TRUE(net_->pause());
  EXPECT_EQ(queues_->queue(0).next_avail(), 1u) << "the held RX buffer went back to the ring";
  EXPECT_EQ(queues_->queue(0).next_used(), 1u);

  // While paused: a TX frame, another RX buffer, a frame waiting in the tap.
  queues_->post(1, {header_bytes(), pattern(80, 9)}, {});
  net_->notify_queue(1);
  auto rx3 = post_rx(0, {1526});
  backend_->send_frame(0, pattern(200, 7));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(queues_->take_used(0).empty());
  EXPECT_TRUE(queues_->take_used(1).empty());
  const int rx_signals = interrupt_->used_signals(0);
  const int tx_signals = interrupt_->used_signals(1);

  snapshot_and_restore(features);
  EXPECT_EQ(counters_at_restore_.rx_packets, 1u);
  EXPECT_EQ(counters_at_restore_.tx_packets, 1u);
  restored_backend_->send_frame(0, pattern(200, 7));  // the restored tap gets the same frame
  ASSERT_TRUE(net_->resume());

  // Both send the pending TX frame and receive the waiting frame into rx2, the buffer given
  // back, exactly alike.
  auto frame = backend_->receive_frame(0);
  auto restored_frame = restored_backend_->receive_frame(0);
  ASSERT_TRUE(frame && restored_frame);
  EXPECT_EQ(*restored_frame, *frame);
  const std::vector<UsedElement> expected_rx = {{rx2.head, kNetHeaderSize + 200}};
  EXPECT_EQ(wait_used(0, 1), expected_rx);
  EXPECT_EQ(wait_used_on(*copy_, 0, 1), expected_rx);
  EXPECT_EQ(wait_used(1, 1).size(), 1u);
  EXPECT_EQ(wait_used_on(*copy_, 1, 1).size(), 1u);
  EXPECT_EQ(copy_->read(rx2.writable[0].addr, 1526), queues_->read(rx2.writable[0].addr, 1526));
  EXPECT_EQ(queues_->read(rx2.writable[0].addr + kNetHeaderSize, 200), pattern(200, 7));
  ASSERT_TRUE(wait_until([&] { return net_->counters().rx_packets == 2 && net_->counters().tx_packets == 2; }));
  ASSERT_TRUE(
      wait_until([&] { return restored_->counters().rx_packets == 2 && restored_->counters().tx_packets == 2; }));
  const NetCounters original = net_->counters();
  const NetCounters restored = restored_->counters();
  EXPECT_EQ(restored.rx_bytes, original.rx_bytes);
  EXPECT_EQ(restored.tx_bytes, original.tx_bytes);
  EXPECT_EQ(restored.rx_dropped, original.rx_dropped);
  EXPECT_EQ(restored.tx_dropped, original.tx_dropped);
  EXPECT_TRUE(wait_until([&] { return restored_interrupt_->used_signals(0) >= 1; }));
  EXPECT_TRUE(wait_until([&] { return restored_interrupt_->used_signals(1) >= 1; }));
  EXPECT_TRUE(wait_until([&] { return interrupt_->used_signals(0) > rx_signals; }));
  EXPECT_TRUE(wait_until([&] { return interrupt_->used_signals(1) > tx_signals; }));

  // rx3 takes the next frame on both.
  backend_->send_frame(0, pattern(40, 3));
  restored_backend_->send_frame(0, pattern(40, 3));
  const std::vector<UsedElement> expected_next = {{rx3.head, kNetHeaderSize + 40}};
  EXPECT_EQ(wait_used(0, 1), expected_next);
  EXPECT_EQ(wait_used_on(*copy_, 0, 1), expected_next);
}

TEST_F(VirtioNetStateTest, ActiveQueuePairsAreRestored) {
  const uint64_t features = kBaseFeatures | feature_mask(kFeatureMq);
  start(features, 2);
  ASSERT_EQ(command({kCtrlClassMq, kCtrlMqVqPairsSet, 2, 0}).second, kCtrlOk);
  ASSERT_TRUE(wait_until([&] { return backend_->queue_enabled(1); }));
  ASSERT_TRUE(net_->pause());
  snapshot_and_restore(features, 2);
  EXPECT_EQ(restored_->active_queue_pairs(), 2);
  EXPECT_TRUE(restored_backend_->queue_enabled(1)) << "pair 1 attached at activation";
  // Pair 1 of the restored NIC carries traffic at once.
  auto chain = copy_->post(2, {}, {1526});
  restored_->notify_queue(2);
  restored_backend_->send_frame(1, pattern(77));
  EXPECT_EQ(wait_used_on(*copy_, 2, 1), (std::vector<UsedElement>{{chain.head, kNetHeaderSize + 77}}));
  ASSERT_TRUE(net_->resume());
}

TEST_F(VirtioNetStateTest, FrameWaitingForBuffersIsDroppedByPauseAndItsBuffersGoBack) {
  start(kBaseFeatures | feature_mask(kFeatureMrgRxbuf));
  auto first = post_rx(0, {256});
  backend_->send_frame(0, pattern(700, 4));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // half placed, waiting
  ASSERT_TRUE(net_->pause());
  EXPECT_EQ(net_->counters().rx_dropped, 1u);
  EXPECT_EQ(queues_->queue(0).next_avail(), 0u) << "the partly filled buffer went back unused";
  EXPECT_TRUE(queues_->take_used(0).empty());
  ASSERT_TRUE(net_->resume());
  backend_->send_frame(0, pattern(100, 6));
  EXPECT_EQ(wait_used(0, 1), (std::vector<UsedElement>{{first.head, kNetHeaderSize + 100}}));
  EXPECT_EQ(num_buffers(first), 1);
}

TEST_F(VirtioNetStateTest, TxChainHeldByTheRateLimiterGoesBackToTheRing) {
  start(kBaseFeatures, 1, 16, [](NetSpec& spec) { spec.tx_rate_limit.ops_per_second = 1; });
  queues_->post(1, {header_bytes(), pattern(60, 1)}, {});
  queues_->post(1, {header_bytes(), pattern(60, 2)}, {});
  net_->notify_queue(1);
  ASSERT_TRUE(wait_until([&] { return net_->counters().tx_packets == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the second waits for tokens
  ASSERT_TRUE(net_->pause());
  EXPECT_EQ(queues_->queue(1).next_avail(), 1u);
  EXPECT_EQ(queues_->queue(1).next_used(), 1u);
  ASSERT_TRUE(net_->resume());
  EXPECT_TRUE(wait_until([&] { return net_->counters().tx_packets == 2; }, std::chrono::milliseconds(3000)));
  EXPECT_EQ(wait_used(1, 2).size(), 2u);
  EXPECT_EQ(net_->counters().tx_dropped, 0u);
}

TEST_F(VirtioNetStateTest, PauseIsIdempotentAndResetWorksWhilePaused) {
  start(kBaseFeatures);
  ASSERT_TRUE(net_->pause());
  ASSERT_TRUE(net_->pause());
  queues_->post(1, {header_bytes(), pattern(20)}, {});
  net_->notify_queue(1);  // a vCPU's kick while paused: kept for resume()
  ASSERT_TRUE(net_->resume());
  ASSERT_TRUE(net_->resume());
  ASSERT_TRUE(backend_->receive_frame(0));
  ASSERT_TRUE(net_->pause());
  net_->reset();
}

TEST_F(VirtioNetStateTest, RestoreRefusesBadState) {
  start(kBaseFeatures | feature_mask(kFeatureMq), 2, 16);
  ASSERT_TRUE(net_->pause());
  auto good = net_->save_state();
  ASSERT_TRUE(good);
  NetQueues queues({16, 16, 16, 16, VirtioNet::kCtrlQueueSize});
  NetSpec spec;
  spec.id = "fresh";
  spec.queues = 2;
  spec.queue_size = 16;
  auto fresh = VirtioNet::create_with_backend(spec, "vm", std::make_unique<SocketPairBackend>(2), queues.memory());
  ASSERT_TRUE(fresh);
  EXPECT_FALSE((*fresh)->restore_state(state::StateBlob("virtio-blk", 1)));
  for (uint64_t pairs : {0, 3, 70000}) {
    state::StateBlob bad = *good;
    bad.put("active_queue_pairs", pairs);
    EXPECT_FALSE((*fresh)->restore_state(bad)) << pairs;
  }
  state::StateBlob mistyped = *good;
  mistyped.put_string("tx_bytes", "many");
  auto result = (*fresh)->restore_state(mistyped);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("\"tx_bytes\""), std::string::npos) << result.error().message();
  EXPECT_EQ((*fresh)->active_queue_pairs(), 1);
  // A running NIC is not overwritten.
  ASSERT_TRUE(net_->resume());
  EXPECT_FALSE(net_->restore_state(*good));
  EXPECT_TRUE((*fresh)->restore_state(*good));
}

}  // namespace
}  // namespace skiff::virtio::net

namespace skiff::virtio::net {
namespace {

// The whole path over a real tap in a fresh network namespace: guest TX reaches a packet
// socket on the tap interface byte for byte, and a frame sent on the interface lands in the
// guest's buffers with a valid header.
TEST(VirtioNetTap, FramesCrossARealTap) {
  std::string skip;
  std::thread thread([&skip] {
    if (::unshare(CLONE_NEWNET) != 0) {
      skip = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
      return;
    }
    NetSpec spec;
    spec.id = "net0";
    spec.tap = "sknet0";
    spec.mtu = 1500;
    NetQueues queues({16, 16, VirtioNet::kCtrlQueueSize});
    auto net = VirtioNet::create(spec, "vm", queues.memory());
    if (!net) {
      skip = net.error().message();
      return;
    }
    const uint64_t features = kBaseFeatures | feature_mask(kFeatureMrgRxbuf) | feature_mask(kFeatureGuestCsum);
    queues.activate(features);
    ASSERT_TRUE((*net)->activate(features, queues.pointers(), std::make_shared<RecordingInterrupt>()));

    constexpr uint16_t kEtherType = 0x88b5;  // IEEE local experimental: nothing else sends it
    int sock = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType));
    ASSERT_GE(sock, 0) << std::strerror(errno);
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(kEtherType);
    address.sll_ifindex = static_cast<int>(::if_nametoindex("sknet0"));
    // SAFETY: sockaddr_ll is the AF_PACKET form of sockaddr; bind reads sizeof(address) bytes.
    ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0) << std::strerror(errno);

    std::vector<uint8_t> frame = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    frame.insert(frame.end(), (*net)->mac().begin(), (*net)->mac().end());
    frame.push_back(kEtherType >> 8);
    frame.push_back(kEtherType & 0xff);
    auto payload = pattern(100, 42);
    frame.insert(frame.end(), payload.begin(), payload.end());

    // Guest -> tap.
    queues.post(1, {header_bytes(), frame}, {});
    (*net)->notify_queue(1);
    std::vector<uint8_t> received(2048);
    ssize_t n = -1;
    wait_until([&] {
      n = ::recv(sock, received.data(), received.size(), MSG_DONTWAIT);
      return n >= 0;
    });
    ASSERT_EQ(n, static_cast<ssize_t>(frame.size()));
    received.resize(static_cast<size_t>(n));
    EXPECT_EQ(received, frame);

    // Tap -> guest: sent on the interface, it leaves through the tap fd into the guest.
    std::vector<PostedChain> chains;
    for (int i = 0; i < 8; ++i) chains.push_back(queues.post(0, {}, {2048}));
    (*net)->notify_queue(0);
    std::vector<uint8_t> inbound = {0x02, 0, 0, 0, 0, 1};  // any destination
    inbound.insert(inbound.end(), {0x02, 0, 0, 0, 0, 2});
    inbound.push_back(kEtherType >> 8);
    inbound.push_back(kEtherType & 0xff);
    auto inbound_payload = pattern(300, 7);
    inbound.insert(inbound.end(), inbound_payload.begin(), inbound_payload.end());
    ASSERT_EQ(::send(sock, inbound.data(), inbound.size(), 0), static_cast<ssize_t>(inbound.size()));
    bool found = false;
    std::vector<UsedElement> used;
    wait_until([&] {
      auto more = queues.take_used(0);
      used.insert(used.end(), more.begin(), more.end());
      for (const auto& element : used) {
        for (const auto& chain : chains) {
          if (chain.head != element.id || element.len != kNetHeaderSize + inbound.size()) continue;
          auto bytes = queues.read(chain.writable[0].addr, element.len);
          std::vector<uint8_t> body(bytes.begin() + kNetHeaderSize, bytes.end());
          if (body == inbound) {
            found = true;
            EXPECT_EQ(bytes[kHeaderNumBuffersOffset], 1);  // num_buffers, written by skiff
            EXPECT_EQ(bytes[kHeaderNumBuffersOffset + 1], 0);
          }
        }
      }
      return found;
    });
    EXPECT_TRUE(found) << "frame sent on sknet0 never reached the guest";
    EXPECT_GE((*net)->counters().rx_packets, 1u);
    EXPECT_EQ((*net)->counters().tx_packets, 1u);
    ::close(sock);
    (*net)->reset();
  });
  thread.join();
  if (!skip.empty()) GTEST_SKIP() << skip;
}

}  // namespace
}  // namespace skiff::virtio::net
