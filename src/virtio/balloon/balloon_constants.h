// SPDX-License-Identifier: Apache-2.0
// Numbers of the traditional memory balloon device (virtio 1.2 §5.5).
#pragma once

#include <cstdint>

namespace skiff::virtio::balloon {

// Feature bits (§5.5.3).
inline constexpr unsigned kFeatureMustTellHost = 0;       // VIRTIO_BALLOON_F_MUST_TELL_HOST
inline constexpr unsigned kFeatureStatsVq = 1;            // VIRTIO_BALLOON_F_STATS_VQ
inline constexpr unsigned kFeatureDeflateOnOom = 2;       // VIRTIO_BALLOON_F_DEFLATE_ON_OOM
inline constexpr unsigned kFeatureFreePageHint = 3;       // VIRTIO_BALLOON_F_FREE_PAGE_HINT
inline constexpr unsigned kFeaturePagePoison = 4;         // VIRTIO_BALLOON_F_PAGE_POISON
inline constexpr unsigned kFeatureFreePageReporting = 5;  // VIRTIO_BALLOON_F_PAGE_REPORTING

// PFNs in the inflate and deflate buffers are 4 KiB page numbers (§5.5.6).
inline constexpr unsigned kPfnShift = 12;  // VIRTIO_BALLOON_PFN_SHIFT

// Configuration layout (§5.5.4): struct virtio_balloon_config, all fields le32.
inline constexpr uint32_t kConfigNumPages = 0;          // the target, written by the device
inline constexpr uint32_t kConfigActual = 4;            // pages in the balloon, written by the driver
inline constexpr uint32_t kConfigFreePageHintCmdId = 8;  // FREE_PAGE_HINT only (not offered)
inline constexpr uint32_t kConfigPoisonVal = 12;        // PAGE_POISON only (not offered)
inline constexpr uint32_t kConfigSize = 16;

// Memory statistics tags (§5.5.6.3): struct virtio_balloon_stat { le16 tag; le64 val; },
// packed, 10 bytes.
inline constexpr uint16_t kStatSwapIn = 0;
inline constexpr uint16_t kStatSwapOut = 1;
inline constexpr uint16_t kStatMajorFaults = 2;
inline constexpr uint16_t kStatMinorFaults = 3;
inline constexpr uint16_t kStatFreeMemory = 4;
inline constexpr uint16_t kStatTotalMemory = 5;
inline constexpr uint16_t kStatAvailableMemory = 6;
inline constexpr uint16_t kStatDiskCaches = 7;
inline constexpr uint16_t kStatHugetlbAllocations = 8;
inline constexpr uint16_t kStatHugetlbFailures = 9;
inline constexpr uint32_t kStatEntrySize = 10;

}  // namespace skiff::virtio::balloon
