// SPDX-License-Identifier: Apache-2.0
// Numbers from the virtio 1.2 specification (virtio-v1.2-cs01) shared by the virtqueue,
// the status machine, the transports and the devices. Only the modern (non-legacy)
// interface is implemented: every field is little-endian.
#pragma once

#include <cstdint>

namespace skiff::virtio {

// ---- Device status field (spec 2.1) --------------------------------------------------------
inline constexpr uint8_t kStatusAcknowledge = 1;   // the guest found the device
inline constexpr uint8_t kStatusDriver = 2;        // the guest knows how to drive it
inline constexpr uint8_t kStatusDriverOk = 4;      // the driver is set up and ready
inline constexpr uint8_t kStatusFeaturesOk = 8;    // feature negotiation is complete
inline constexpr uint8_t kStatusNeedsReset = 64;   // DEVICE_NEEDS_RESET, set by the device only
inline constexpr uint8_t kStatusFailed = 128;      // the driver gave up on the device

// ---- Reserved (transport/ring) feature bits (spec 6) --------------------------------------
// Feature bits are numbered 0..63; these are bit numbers, use feature_mask() for masks.
inline constexpr unsigned kFeatureNotifyOnEmpty = 24;     // legacy only
inline constexpr unsigned kFeatureAnyLayout = 27;         // legacy only
inline constexpr unsigned kFeatureRingIndirectDesc = 28;  // VIRTIO_F_INDIRECT_DESC (2.7.5.3)
inline constexpr unsigned kFeatureRingEventIdx = 29;      // VIRTIO_F_EVENT_IDX (2.7.7, 2.7.10)
inline constexpr unsigned kFeatureVersion1 = 32;          // VIRTIO_F_VERSION_1: modern device
inline constexpr unsigned kFeatureAccessPlatform = 33;    // VIRTIO_F_ACCESS_PLATFORM (IOMMU)
inline constexpr unsigned kFeatureRingPacked = 34;        // VIRTIO_F_RING_PACKED (not supported)
inline constexpr unsigned kFeatureInOrder = 35;           // VIRTIO_F_IN_ORDER
inline constexpr unsigned kFeatureOrderPlatform = 36;     // VIRTIO_F_ORDER_PLATFORM
inline constexpr unsigned kFeatureSrIov = 37;             // VIRTIO_F_SR_IOV
inline constexpr unsigned kFeatureNotificationData = 38;  // VIRTIO_F_NOTIFICATION_DATA
inline constexpr unsigned kFeatureNotifConfigData = 39;   // VIRTIO_F_NOTIF_CONFIG_DATA
inline constexpr unsigned kFeatureRingReset = 40;         // VIRTIO_F_RING_RESET

constexpr uint64_t feature_mask(unsigned bit) { return uint64_t{1} << bit; }
constexpr bool has_feature(uint64_t features, unsigned bit) {
  return (features & feature_mask(bit)) != 0;
}

// ---- Device IDs (spec 5, "Device Types") ---------------------------------------------------
inline constexpr uint32_t kDeviceIdNet = 1;
inline constexpr uint32_t kDeviceIdBlock = 2;
inline constexpr uint32_t kDeviceIdConsole = 3;
inline constexpr uint32_t kDeviceIdEntropy = 4;
inline constexpr uint32_t kDeviceIdBalloon = 5;  // traditional memory balloon
inline constexpr uint32_t kDeviceIdScsi = 8;
inline constexpr uint32_t kDeviceId9p = 9;
inline constexpr uint32_t kDeviceIdGpu = 16;
inline constexpr uint32_t kDeviceIdInput = 18;
inline constexpr uint32_t kDeviceIdVsock = 19;
inline constexpr uint32_t kDeviceIdCrypto = 20;
inline constexpr uint32_t kDeviceIdIommu = 23;
inline constexpr uint32_t kDeviceIdMemory = 24;
inline constexpr uint32_t kDeviceIdFs = 26;
inline constexpr uint32_t kDeviceIdPmem = 27;

// ---- Split virtqueue layout (spec 2.7) -----------------------------------------------------
// The maximum queue size: the largest power of two a 16-bit index can tell apart from an
// empty ring (2.7 and 2.7.13).
inline constexpr uint32_t kMaxQueueSize = 32768;

// Descriptor flags (2.7.5).
inline constexpr uint16_t kDescFlagNext = 1;      // VIRTQ_DESC_F_NEXT
inline constexpr uint16_t kDescFlagWrite = 2;     // VIRTQ_DESC_F_WRITE: device-writable
inline constexpr uint16_t kDescFlagIndirect = 4;  // VIRTQ_DESC_F_INDIRECT (2.7.5.3)

// Available ring flags (2.7.7): the driver does not want used-buffer notifications.
inline constexpr uint16_t kAvailFlagNoInterrupt = 1;  // VIRTQ_AVAIL_F_NO_INTERRUPT
// Used ring flags (2.7.10): the device does not want available-buffer notifications.
inline constexpr uint16_t kUsedFlagNoNotify = 1;  // VIRTQ_USED_F_NO_NOTIFY

// Sizes and minimum alignments of the three parts (table in 2.7).
inline constexpr uint64_t kDescriptorSize = 16;      // struct virtq_desc
inline constexpr uint64_t kUsedElementSize = 8;      // struct virtq_used_elem
inline constexpr uint64_t kDescTableAlignment = 16;
inline constexpr uint64_t kAvailRingAlignment = 2;
inline constexpr uint64_t kUsedRingAlignment = 4;

constexpr uint64_t desc_table_size(uint64_t queue_size) { return kDescriptorSize * queue_size; }
// flags, idx, ring[queue_size], used_event
constexpr uint64_t avail_ring_size(uint64_t queue_size) { return 6 + 2 * queue_size; }
// flags, idx, ring[queue_size], avail_event
constexpr uint64_t used_ring_size(uint64_t queue_size) {
  return 6 + kUsedElementSize * queue_size;
}

// Device-specific interrupt status bits of the ISR (4.1.4.5 / 4.2.2 InterruptStatus), shared
// by the PCI ISR capability and the MMIO InterruptStatus register.
inline constexpr uint32_t kInterruptUsedBuffer = 1;
inline constexpr uint32_t kInterruptConfigChange = 2;

}  // namespace skiff::virtio
