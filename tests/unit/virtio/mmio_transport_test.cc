// SPDX-License-Identifier: Apache-2.0
#include "virtio/transport/mmio_transport.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "unit/legacy/fake_irq_line.h"
#include "unit/virtio/transport_fakes.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {
namespace {

using testing::FakeRegistrar;
using RecordingDevice = testing::RecordingDevice;

constexpr uint64_t kBase = 0xf0000000;

class MmioTransportTest : public ::testing::Test {
 protected:
  MmioTransportTest() : ram_(1 << 20, 0) {
    GuestRegion region{0, ram_.size(), ram_.data()};
    memory_ = GuestMemory::from_host_buffers(std::span(&region, 1));
    transport_ = MmioTransport::create(device_, memory_, kBase, irq_, registrar_, "virtio-mmio test");
  }
  uint32_t read32(uint64_t offset) {
    uint32_t value = 0;
    transport_->read(offset, std::span(reinterpret_cast<uint8_t*>(&value), 4));
    return value;
  }
  void write32(uint64_t offset, uint32_t value) {
    transport_->write(offset, std::span(reinterpret_cast<const uint8_t*>(&value), 4));
  }
  // The driver's side of §4.2.3.1 (device initialisation) for queue 0 only.
  void initialise(uint64_t driver_features_low, uint32_t driver_features_high) {
    write32(kMmioStatus, kStatusAcknowledge);
    write32(kMmioStatus, kStatusAcknowledge | kStatusDriver);
    write32(kMmioDriverFeaturesSel, 0);
    write32(kMmioDriverFeatures, static_cast<uint32_t>(driver_features_low));
    write32(kMmioDriverFeaturesSel, 1);
    write32(kMmioDriverFeatures, driver_features_high);
    write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    write32(kMmioQueueSel, 0);
    write32(kMmioQueueNum, 16);
    write32(kMmioQueueDescLow, 0x1000);
    write32(kMmioQueueDescHigh, 0);
    write32(kMmioQueueDriverLow, 0x2000);
    write32(kMmioQueueDeviceLow, 0x3000);
    write32(kMmioQueueReady, 1);
  }

  std::vector<uint8_t> ram_;
  GuestMemory memory_;
  std::shared_ptr<RecordingDevice> device_ = std::make_shared<RecordingDevice>(kDeviceIdEntropy);
  std::shared_ptr<skiff::testing::FakeIrqLine> irq_ = std::make_shared<skiff::testing::FakeIrqLine>();
  std::shared_ptr<FakeRegistrar> registrar_ = std::make_shared<FakeRegistrar>();
  std::shared_ptr<MmioTransport> transport_;
};

TEST_F(MmioTransportTest, IdentityRegisters) {
  EXPECT_EQ(read32(kMmioMagicValue), 0x74726976u);
  EXPECT_EQ(read32(kMmioVersion), 2u);
  EXPECT_EQ(read32(kMmioDeviceId), kDeviceIdEntropy);
  EXPECT_EQ(read32(kMmioVendorId), kSkiffVendorId);
  EXPECT_EQ(read32(kMmioShmLenLow), 0xffffffffu);
}

TEST_F(MmioTransportTest, FeatureWordsBySelect) {
  write32(kMmioDeviceFeaturesSel, 0);
  EXPECT_EQ(read32(kMmioDeviceFeatures), 1u << kFeatureRingEventIdx);
  write32(kMmioDeviceFeaturesSel, 1);
  EXPECT_EQ(read32(kMmioDeviceFeatures), 1u);  // VERSION_1 is bit 32
  write32(kMmioDeviceFeaturesSel, 7);
  EXPECT_EQ(read32(kMmioDeviceFeatures), 0u);
}

TEST_F(MmioTransportTest, QueueSizesAndMissingQueues) {
  write32(kMmioQueueSel, 1);
  EXPECT_EQ(read32(kMmioQueueNumMax), 16u);
  write32(kMmioQueueSel, 2);
  EXPECT_EQ(read32(kMmioQueueNumMax), 0u);  // no such queue
  write32(kMmioQueueReady, 1);              // ignored, no crash
  EXPECT_EQ(read32(kMmioQueueReady), 0u);
}

TEST_F(MmioTransportTest, DriverOkActivatesWithTheQueueConfiguration) {
  initialise(0, 1);
  write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_EQ(device_->activations, 1);
  EXPECT_EQ(device_->acked, feature_mask(kFeatureVersion1));
  ASSERT_EQ(device_->active_queues.size(), 2u);
  Queue* queue = device_->active_queues[0];
  EXPECT_TRUE(queue->active());
  EXPECT_EQ(queue->size(), 16u);
  EXPECT_EQ(queue->desc_table_address(), 0x1000u);
  EXPECT_EQ(queue->avail_ring_address(), 0x2000u);
  EXPECT_EQ(queue->used_ring_address(), 0x3000u);
  EXPECT_FALSE(device_->active_queues[1]->active());
  EXPECT_EQ(read32(kMmioStatus) & kStatusDriverOk, kStatusDriverOk);
  // Queue 0's eventfd went to KVM, matching the queue index at QueueNotify.
  ASSERT_EQ(registrar_->added.size(), 1u);
  EXPECT_EQ(registrar_->added[0], (FakeRegistrar::Entry{42, kBase + kMmioQueueNotify, 4, 0}));
}

TEST_F(MmioTransportTest, FeaturesWithoutVersion1AreRefused) {
  initialise(0, 0);
  EXPECT_EQ(read32(kMmioStatus) & kStatusFeaturesOk, 0u);
  write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(device_->activations, 0);
}

TEST_F(MmioTransportTest, QueueConfigIsFrozenWhileReady) {
  initialise(0, 1);
  write32(kMmioQueueNum, 8);
  write32(kMmioQueueDescLow, 0x9000);
  write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(device_->active_queues[0]->size(), 16u);
  EXPECT_EQ(device_->active_queues[0]->desc_table_address(), 0x1000u);
}

TEST_F(MmioTransportTest, QueueSizeAboveMaximumIsIgnored) {
  initialise(0, 1);
  write32(kMmioQueueReady, 0);
  write32(kMmioQueueNum, 128);      // queue 0's maximum is 64
  write32(kMmioQueueNum, 0x10000);  // does not even fit 16 bits
  write32(kMmioQueueReady, 1);
  write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_EQ(device_->activations, 1);
  EXPECT_EQ(device_->active_queues[0]->size(), 16u);  // the last valid size written stands
}

TEST_F(MmioTransportTest, ActivationOfBadRingsSetsNeedsReset) {
  initialise(0, 1);
  write32(kMmioQueueReady, 0);
  write32(kMmioQueueDescLow, 0xfff00000);  // outside the 1 MiB of RAM
  write32(kMmioQueueReady, 1);
  write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(device_->activations, 0);
  EXPECT_NE(read32(kMmioStatus) & kStatusNeedsReset, 0u);
}

TEST_F(MmioTransportTest, DeviceActivationFailureSetsNeedsReset) {
  device_->fail_activation = true;
  initialise(0, 1);
  write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_NE(read32(kMmioStatus) & kStatusNeedsReset, 0u);
  EXPECT_NE(read32(kMmioInterruptStatus) & kInterruptConfigChange, 0u);
}

TEST_F(MmioTransportTest, InterruptStatusAndAcknowledge) {
  initialise(0, 1);
  write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_TRUE(device_->interrupt);
  size_t pulses_before = irq_->levels().size();
  device_->interrupt->signal_used_queue(0);
  EXPECT_EQ(read32(kMmioInterruptStatus), kInterruptUsedBuffer);
  EXPECT_GT(irq_->levels().size(), pulses_before);
  EXPECT_FALSE(irq_->level());  // a pulse: the line ends low
  device_->interrupt->signal_config_change();
  EXPECT_EQ(read32(kMmioInterruptStatus), kInterruptUsedBuffer | kInterruptConfigChange);
  write32(kMmioInterruptAck, kInterruptUsedBuffer);
  EXPECT_EQ(read32(kMmioInterruptStatus), kInterruptConfigChange);
}

TEST_F(MmioTransportTest, NotifyWithoutIoeventfdReachesTheDevice) {
  write32(kMmioQueueNotify, 1);
  write32(kMmioQueueNotify, 9);  // no such queue: dropped
  EXPECT_EQ(device_->notified, std::vector<uint16_t>{1});
}

TEST_F(MmioTransportTest, ResetStopsTheDeviceAndUnregisters) {
  initialise(0, 1);
  write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  int resets_before = device_->resets;
  write32(kMmioStatus, 0);
  EXPECT_EQ(device_->resets, resets_before + 1);
  EXPECT_EQ(read32(kMmioStatus), 0u);
  EXPECT_EQ(read32(kMmioInterruptStatus), 0u);
  EXPECT_EQ(registrar_->removed, registrar_->added);
  write32(kMmioQueueSel, 0);
  EXPECT_EQ(read32(kMmioQueueReady), 0u);
}

TEST_F(MmioTransportTest, NarrowRegisterAccessesAreIgnoredButConfigTakesAnyWidth) {
  uint8_t byte = 0xaa;
  transport_->read(kMmioMagicValue, std::span(&byte, 1));
  EXPECT_EQ(byte, 0);
  transport_->write(kMmioStatus, std::span<const uint8_t>(&byte, 1));
  EXPECT_EQ(read32(kMmioStatus), 0u);
  uint8_t config[3] = {};
  transport_->read(kMmioConfig + 2, config);
  EXPECT_EQ(config[0], 3);
  EXPECT_EQ(config[2], 5);
  const uint8_t value = 0x77;
  transport_->write(kMmioConfig + 7, std::span(&value, 1));
  EXPECT_EQ(device_->config[7], 0x77);
  transport_->read(kMmioConfig + 100, config);  // beyond the config space: zeros
  EXPECT_EQ(config[0], 0);
}

}  // namespace
}  // namespace skiff::virtio

namespace skiff::virtio {
namespace {

TEST_F(MmioTransportTest, BrokenDriverOnTheDeviceThreadSetsNeedsReset) {
  // The avail index jumps more than the queue size: the queue's fatal-error handler (run
  // where the device pops, here this thread) must put the device into NEEDS_RESET.
  initialise(0, 1);
  write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_EQ(device_->activations, 1);
  Queue* queue = device_->active_queues[0];
  const uint16_t jump = 100;  // queue size 16
  std::memcpy(ram_.data() + 0x2000 + 2, &jump, sizeof(jump));  // avail->idx
  EXPECT_FALSE(queue->pop());
  EXPECT_TRUE(queue->broken());
  EXPECT_NE(read32(kMmioStatus) & kStatusNeedsReset, 0u);
  EXPECT_NE(read32(kMmioInterruptStatus) & kInterruptConfigChange, 0u);
}

}  // namespace
}  // namespace skiff::virtio
