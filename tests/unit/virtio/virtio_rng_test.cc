// SPDX-License-Identifier: Apache-2.0
#include "virtio/rng/virtio_rng.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "state/state_blob.h"
#include "unit/virtio/virtqueue_fake.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {
namespace {

using testing::kFakeDefaultFeatures;

class CountingInterrupt : public VirtioInterrupt {
 public:
  void signal_used_queue(uint16_t) override { ++used; }
  void signal_config_change() override {}
  void signal_needs_reset() override { ++needs_reset; }
  std::atomic<int> used{0};
  std::atomic<int> needs_reset{0};
};

// Waits (bounded) for the device thread to return `count` chains.
bool wait_for_used(testing::VirtqueueFake& fake, uint16_t count) {
  for (int i = 0; i < 2000; ++i) {
    if (fake.used_idx() >= count) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

class VirtioRngTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto rng = VirtioRng::create("rng-test");
    ASSERT_TRUE(rng) << rng.error().message();
    rng_ = *rng;
  }
  std::shared_ptr<VirtioRng> rng_;
  std::shared_ptr<CountingInterrupt> interrupt_ = std::make_shared<CountingInterrupt>();
};

TEST_F(VirtioRngTest, Identity) {
  EXPECT_EQ(rng_->device_type(), kDeviceIdEntropy);
  EXPECT_EQ(rng_->queue_max_sizes(), std::vector<uint16_t>{VirtioRng::kQueueSize});
  EXPECT_TRUE(has_feature(rng_->device_features(), kFeatureVersion1));
  EXPECT_EQ(rng_->config_size(), 0u);
  uint8_t config[4] = {1, 2, 3, 4};
  rng_->read_config(0, config);
  EXPECT_EQ(config[3], 0);
  ASSERT_TRUE(rng_->queue_notify_fd(0));
  EXPECT_FALSE(rng_->queue_notify_fd(1));
}

TEST_F(VirtioRngTest, FillsWritableBuffersAndInterrupts) {
  testing::VirtqueueFake fake;
  auto first = fake.chain().writable(64).add();
  auto second = fake.chain().writable(16).writable(48).add();
  ASSERT_TRUE(rng_->activate(kFakeDefaultFeatures, {&fake.queue()}, interrupt_));
  ASSERT_TRUE(wait_for_used(fake, 2));
  auto used = fake.take_used();
  ASSERT_EQ(used.size(), 2u);
  EXPECT_EQ(used[0], (testing::FakeUsedElement{first.head, 64}));
  EXPECT_EQ(used[1], (testing::FakeUsedElement{second.head, 64}));
  auto bytes = fake.read(first.writable[0].addr, 64);
  EXPECT_TRUE(std::any_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b != 0; }));
  EXPECT_GE(interrupt_->used.load(), 1);
  EXPECT_EQ(rng_->bytes_served(), 128u);
  rng_->reset();
}

TEST_F(VirtioRngTest, LaterNotificationsAreServed) {
  testing::VirtqueueFake fake;
  ASSERT_TRUE(rng_->activate(kFakeDefaultFeatures, {&fake.queue()}, interrupt_));
  fake.chain().writable(32).add();
  rng_->notify_queue(0);
  ASSERT_TRUE(wait_for_used(fake, 1));
  fake.chain().writable(32).indirect().add();
  rng_->notify_queue(0);
  ASSERT_TRUE(wait_for_used(fake, 2));
  EXPECT_EQ(rng_->requests_served(), 2u);
  rng_->reset();
}

TEST_F(VirtioRngTest, ReadOnlyAndMalformedChainsAreReturnedEmpty) {
  testing::VirtqueueFake fake;
  auto read_only = fake.chain().readable("no room to write").add();
  auto bad = fake.chain().writable_at(0xfffffffffffff000ull, 64).add();  // outside RAM
  ASSERT_TRUE(rng_->activate(kFakeDefaultFeatures, {&fake.queue()}, interrupt_));
  ASSERT_TRUE(wait_for_used(fake, 2));
  auto used = fake.take_used();
  ASSERT_EQ(used.size(), 2u);
  EXPECT_EQ(used[0], (testing::FakeUsedElement{read_only.head, 0}));
  EXPECT_EQ(used[1], (testing::FakeUsedElement{bad.head, 0}));
  rng_->reset();
}

TEST_F(VirtioRngTest, HugeRequestIsCapped) {
  testing::VirtqueueFake fake(16, kFakeDefaultFeatures, 1 << 20);
  fake.chain().writable(VirtioRng::kMaxBytesPerRequest + 4096).add();
  ASSERT_TRUE(rng_->activate(kFakeDefaultFeatures, {&fake.queue()}, interrupt_));
  ASSERT_TRUE(wait_for_used(fake, 1));
  EXPECT_EQ(fake.take_used()[0].len, VirtioRng::kMaxBytesPerRequest);
  rng_->reset();
}

TEST_F(VirtioRngTest, ResetStopsServingAndCanReactivate) {
  testing::VirtqueueFake fake;
  ASSERT_TRUE(rng_->activate(kFakeDefaultFeatures, {&fake.queue()}, interrupt_));
  rng_->reset();
  fake.chain().writable(8).add();
  rng_->notify_queue(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(fake.used_idx(), 0u) << "served after reset";
  ASSERT_TRUE(rng_->activate(kFakeDefaultFeatures, {&fake.queue()}, interrupt_));
  EXPECT_TRUE(wait_for_used(fake, 1));
  rng_->reset();
}

TEST_F(VirtioRngTest, WrongQueueCountIsRefused) {
  EXPECT_FALSE(rng_->activate(kFakeDefaultFeatures, {}, interrupt_));
}

// ---- State: pause, save, restore -------------------------------------------------------------

state::StateBlob round_trip(const state::StateBlob& blob) {
  auto decoded = state::StateBlob::decode(blob.encode());
  EXPECT_TRUE(decoded) << (decoded ? "" : decoded.error().message());
  return decoded ? *decoded : state::StateBlob("broken", 1);
}

TEST_F(VirtioRngTest, PausedDeviceServesNothingAndResumes) {
  testing::VirtqueueFake fake;
  ASSERT_TRUE(rng_->activate(kFakeDefaultFeatures, {&fake.queue()}, interrupt_));
  ASSERT_TRUE(rng_->pause());
  ASSERT_TRUE(rng_->pause()) << "pausing twice is harmless";
  fake.chain().writable(16).add();
  rng_->notify_queue(0);  // a vCPU's kick: must not block or be lost
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(fake.used_idx(), 0u) << "served while paused";
  EXPECT_EQ(interrupt_->used.load(), 0);
  ASSERT_TRUE(rng_->resume());
  ASSERT_TRUE(rng_->resume()) << "resuming a running device is harmless";
  ASSERT_TRUE(wait_for_used(fake, 1));
  EXPECT_EQ(rng_->requests_served(), 1u);
  // Paused, then reset: nothing left running or held.
  ASSERT_TRUE(rng_->pause());
  rng_->reset();
}

TEST_F(VirtioRngTest, RestoredDeviceContinuesLikeTheResumedOne) {
  testing::VirtqueueFake original(16, kFakeDefaultFeatures | feature_mask(kFeatureRingEventIdx));
  original.chain().writable(64).add();
  original.chain().writable(32).add();
  ASSERT_TRUE(rng_->activate(original.features(), {&original.queue()}, interrupt_));
  ASSERT_TRUE(wait_for_used(original, 2));
  ASSERT_TRUE(rng_->pause());
  // The driver posts more while the device is paused.
  original.chain().writable(100).add();
  original.chain().writable(8).writable(8).indirect().add();
  original.set_used_event(2);  // the driver wants an interrupt for the next used buffer
  rng_->notify_queue(0);
  const int interrupts_before = interrupt_->used.load();

  // Snapshot: the queue, then the device; the guest memory is copied.
  const state::StateBlob queue_state = round_trip(original.queue().save_state());
  auto device_state = rng_->save_state();
  ASSERT_TRUE(device_state);
  EXPECT_EQ(device_state->kind(), "virtio-rng");
  testing::VirtqueueFake copy(testing::VirtqueueFake::CopyOf{original});

  // Restore: a fresh device from the same spec, a fresh queue over the copy.
  auto restored = VirtioRng::create("rng-restored");
  ASSERT_TRUE(restored);
  auto restored_interrupt = std::make_shared<CountingInterrupt>();
  ASSERT_TRUE((*restored)->restore_state(round_trip(*device_state)));
  EXPECT_EQ((*restored)->requests_served(), 2u);
  EXPECT_EQ((*restored)->bytes_served(), 96u);
  ASSERT_TRUE(copy.restore(queue_state));
  ASSERT_TRUE((*restored)->activate(copy.features(), {&copy.queue()}, restored_interrupt));
  ASSERT_TRUE(rng_->resume());

  ASSERT_TRUE(wait_for_used(original, 4));
  ASSERT_TRUE(wait_for_used(copy, 4));
  EXPECT_EQ(copy.take_used(), original.take_used());
  EXPECT_EQ((*restored)->requests_served(), rng_->requests_served());
  EXPECT_EQ((*restored)->bytes_served(), rng_->bytes_served());
  EXPECT_EQ(rng_->bytes_served(), 96u + 100u + 16u);
  EXPECT_EQ(restored_interrupt->used.load(), interrupt_->used.load() - interrupts_before);
  EXPECT_GE(restored_interrupt->used.load(), 1);
  EXPECT_EQ(copy.queue().save_state(), original.queue().save_state());
  (*restored)->reset();
  rng_->reset();
}

TEST_F(VirtioRngTest, RestoreRefusesBadState) {
  EXPECT_FALSE(rng_->restore_state(state::StateBlob("virtio-blk", 1)));
  state::StateBlob newer("virtio-rng", 2);
  newer.put("bytes_served", 0).put("requests_served", 0);
  EXPECT_FALSE(rng_->restore_state(newer));
  state::StateBlob missing("virtio-rng", 1);
  missing.put("bytes_served", 0);
  auto result = rng_->restore_state(missing);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("\"requests_served\" is missing"), std::string::npos);
  state::StateBlob impossible("virtio-rng", 1);
  impossible.put("bytes_served", uint64_t{VirtioRng::kMaxBytesPerRequest} + 1).put("requests_served", 1);
  EXPECT_FALSE(rng_->restore_state(impossible));
  EXPECT_EQ(rng_->bytes_served(), 0u);
  // A running device is not overwritten.
  testing::VirtqueueFake fake;
  ASSERT_TRUE(rng_->activate(kFakeDefaultFeatures, {&fake.queue()}, interrupt_));
  state::StateBlob good("virtio-rng", 1);
  good.put("bytes_served", 1).put("requests_served", 1);
  EXPECT_FALSE(rng_->restore_state(good));
  rng_->reset();
  EXPECT_TRUE(rng_->restore_state(good)) << "after reset it is a fresh device again";
}

}  // namespace
}  // namespace skiff::virtio
