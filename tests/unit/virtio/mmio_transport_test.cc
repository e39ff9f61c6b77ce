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

// ---- The device-state seam ------------------------------------------------------------------

namespace skiff::virtio {
namespace {

class MmioTransportStateTest : public MmioTransportTest {
 protected:
  MmioTransportStateTest() {
    transport_ = MmioTransport::create(stateful_, memory_, kBase, irq_, registrar_, "virtio-mmio state test");
  }
  // A second machine: a copy of guest RAM, a fresh device and transport.
  struct Copy {
    std::vector<uint8_t> ram;
    GuestMemory memory;
    std::shared_ptr<RecordingDevice> device = std::make_shared<RecordingDevice>(kDeviceIdEntropy);
    std::shared_ptr<skiff::testing::FakeIrqLine> irq = std::make_shared<skiff::testing::FakeIrqLine>();
    std::shared_ptr<FakeRegistrar> registrar = std::make_shared<FakeRegistrar>();
    std::shared_ptr<MmioTransport> transport;
    uint32_t read32(uint64_t offset) {
      uint32_t value = 0;
      transport->read(offset, std::span(reinterpret_cast<uint8_t*>(&value), 4));
      return value;
    }
    void write32(uint64_t offset, uint32_t value) {
      transport->write(offset, std::span(reinterpret_cast<const uint8_t*>(&value), 4));
    }
  };
  std::unique_ptr<Copy> copy_machine() {
    auto copy = std::make_unique<Copy>();
    copy->ram = ram_;
    GuestRegion region{0, copy->ram.size(), copy->ram.data()};
    copy->memory = GuestMemory::from_host_buffers(std::span(&region, 1));
    copy->transport = MmioTransport::create(copy->device, copy->memory, kBase, copy->irq, copy->registrar, "copy");
    return copy;
  }
  void driver_ok() {
    write32(kMmioStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  }

  std::shared_ptr<RecordingDevice> stateful_ = std::make_shared<RecordingDevice>(kDeviceIdEntropy);
};

TEST_F(MmioTransportStateTest, SaveNeedsAPausedDevice) {
  initialise(0, 1);
  driver_ok();
  auto running = transport_->save_state();
  ASSERT_FALSE(running);
  EXPECT_NE(running.error().message().find("pause() it first"), std::string::npos) << running.error().message();
  ASSERT_TRUE(transport_->pause());
  EXPECT_EQ(stateful_->pauses, 1);
  EXPECT_TRUE(transport_->pause());  // already paused: nothing more
  EXPECT_EQ(stateful_->pauses, 1);
  EXPECT_TRUE(transport_->save_state());
  ASSERT_TRUE(transport_->resume());
  EXPECT_EQ(stateful_->resumes, 1);
  // A device the driver never started has nothing to pause; its state saves as is.
  auto fresh = copy_machine();
  EXPECT_TRUE(fresh->transport->pause());
  EXPECT_EQ(fresh->device->pauses, 0);
  EXPECT_TRUE(fresh->transport->save_state());
}

TEST_F(MmioTransportStateTest, RestoredTransportCarriesOnWhereTheOriginalStopped) {
  initialise(0, 1);
  driver_ok();
  ASSERT_EQ(stateful_->activations, 1);
  stateful_->config[3] = 0x99;  // the guest's write to the device config
  write32(kMmioQueueSel, 1);
  write32(kMmioDeviceFeaturesSel, 1);
  // A used-buffer interrupt the driver has not acknowledged yet, and a configuration change.
  stateful_->interrupt->signal_used_queue(0);
  stateful_->interrupt->signal_config_change();
  const uint32_t generation = read32(kMmioConfigGeneration);
  EXPECT_EQ(generation, 1u);

  ASSERT_TRUE(transport_->pause());
  auto saved = transport_->save_state();
  ASSERT_TRUE(saved) << saved.error().message();
  auto decoded = state::StateBlob::decode(saved->encode());
  ASSERT_TRUE(decoded) << decoded.error().message();

  auto copy = copy_machine();
  auto restored = copy->transport->restore_state(*decoded);
  ASSERT_TRUE(restored) << restored.error().message();
  // Every register reads back as on the original, and the device was restored then activated.
  for (uint64_t reg : {kMmioStatus, kMmioQueueSel, kMmioDeviceFeaturesSel, kMmioDeviceFeatures,
                       kMmioInterruptStatus, kMmioConfigGeneration, kMmioQueueNumMax, kMmioQueueReady}) {
    EXPECT_EQ(copy->read32(reg), read32(reg)) << "register " << reg;
  }
  EXPECT_EQ(copy->read32(kMmioInterruptStatus), kInterruptUsedBuffer | kInterruptConfigChange);
  EXPECT_EQ(copy->device->restores, 1);
  EXPECT_EQ(copy->device->config[3], 0x99);
  ASSERT_EQ(copy->device->activations, 1);
  EXPECT_EQ(copy->device->acked, stateful_->acked);
  ASSERT_EQ(copy->device->active_queues.size(), 2u);
  Queue* queue = copy->device->active_queues[0];
  EXPECT_TRUE(queue->active());
  EXPECT_EQ(queue->size(), 16u);
  EXPECT_EQ(queue->desc_table_address(), 0x1000u);
  EXPECT_FALSE(copy->device->active_queues[1]->active());
  // The pending interrupt was delivered before the snapshot: no new pulse on restore.
  EXPECT_TRUE(copy->irq->levels().empty());
  // Notifications go straight to the device again, as on the original.
  ASSERT_EQ(copy->registrar->added.size(), 1u);
  EXPECT_EQ(copy->registrar->added[0], (FakeRegistrar::Entry{42, kBase + kMmioQueueNotify, 4, 0}));
  // And the restored device's interrupts reach the restored transport.
  write32(kMmioInterruptAck, kInterruptUsedBuffer | kInterruptConfigChange);
  copy->write32(kMmioInterruptAck, kInterruptUsedBuffer);
  copy->device->interrupt->signal_used_queue(0);
  EXPECT_EQ(copy->read32(kMmioInterruptStatus), kInterruptUsedBuffer | kInterruptConfigChange);
  EXPECT_FALSE(copy->irq->levels().empty());
}

TEST_F(MmioTransportStateTest, RestoreOfANeverStartedDeviceActivatesNothing) {
  write32(kMmioStatus, kStatusAcknowledge);
  ASSERT_TRUE(transport_->pause());
  auto saved = transport_->save_state();
  ASSERT_TRUE(saved);
  auto copy = copy_machine();
  ASSERT_TRUE(copy->transport->restore_state(*saved));
  EXPECT_EQ(copy->read32(kMmioStatus), kStatusAcknowledge);
  EXPECT_EQ(copy->device->activations, 0);
  EXPECT_TRUE(copy->registrar->added.empty());
}

TEST_F(MmioTransportStateTest, BadStateIsRefusedAndLeavesTheTransportReset) {
  initialise(0, 1);
  driver_ok();
  ASSERT_TRUE(transport_->pause());
  auto saved = transport_->save_state();
  ASSERT_TRUE(saved);

  auto expect_refused = [&](const state::StateBlob& blob, std::string_view why) {
    auto copy = copy_machine();
    auto r = copy->transport->restore_state(blob);
    ASSERT_FALSE(r) << "accepted: " << blob.describe();
    EXPECT_NE(r.error().message().find(why), std::string::npos) << r.error().message();
    EXPECT_EQ(copy->read32(kMmioStatus), 0u);
    EXPECT_EQ(copy->device->activations, 0);
  };
  state::StateBlob other_transport = *saved;
  other_transport.put_string("transport", "virtio-pci");
  expect_refused(other_transport, "restored into virtio-mmio");
  state::StateBlob other_type = *saved;
  other_type.put("device_type", kDeviceIdBlock);
  expect_refused(other_type, "restored into type");
  state::StateBlob skipped = *saved;
  skipped.put("status", kStatusAcknowledge | kStatusDriverOk);
  expect_refused(skipped, "skips a step");
  state::StateBlob unoffered = *saved;
  unoffered.put("driver_features", ~uint64_t{0});
  expect_refused(unoffered, "did not offer");
  state::StateBlob fewer_queues = *saved;
  fewer_queues.put_blobs("queues", std::vector<state::StateBlob>{});
  expect_refused(fewer_queues, "0 queues where the device has 2");
  state::StateBlob not_active = *saved;
  not_active.put_bool("active", false);
  expect_refused(not_active, "active on an inactive device");
  state::StateBlob interrupt = *saved;
  state::StateBlob registers = *interrupt.blob("registers");
  registers.put("interrupt_status", 0x80);
  interrupt.put_blob("registers", registers);
  expect_refused(interrupt, "interrupt_status");
  state::StateBlob device = *saved;
  device.put_blob("device", state::StateBlob("recording-device", 9));
  expect_refused(device, "newer than this skiff reads");
  expect_refused(state::StateBlob("virtio-transport", 1), "missing");

  // A transport the driver already uses is not a restore target.
  auto copy = copy_machine();
  copy->write32(kMmioStatus, kStatusAcknowledge);
  auto busy = copy->transport->restore_state(*saved);
  ASSERT_FALSE(busy);
  EXPECT_NE(busy.error().message().find("already uses"), std::string::npos) << busy.error().message();
}

}  // namespace
}  // namespace skiff::virtio
