// SPDX-License-Identifier: Apache-2.0
#include "vmm/balloon_status.h"

#include "virtio/balloon/balloon_stats.h"

namespace skiff {

BalloonStatus balloon_status(const virtio::balloon::VirtioBalloon& balloon) {
  BalloonStatus status;
  status.target_pages = balloon.target_pages();
  status.actual_pages = balloon.actual_pages();
  const virtio::balloon::BalloonCounters counters = balloon.counters();
  status.bytes_released = counters.reclaim.bytes_released;
  status.huge_pages_released = counters.reclaim.huge_pages_released;
  status.partial_huge_pages = counters.reclaim.partial_huge_pages;
  status.out_of_range_pages = counters.reclaim.out_of_range_pages;
  if (auto stats = balloon.latest_stats()) {
    status.guest_stats = virtio::balloon::named_stats(*stats);
    status.stats_received_at = stats->received_at;
    status.stats_sets = stats->sequence;
  }
  return status;
}

}  // namespace skiff
