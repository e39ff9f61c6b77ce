// SPDX-License-Identifier: Apache-2.0
// The guest memory statistics of virtio-balloon (virtio 1.2 §5.5.6.3) and their parser.
// The buffer comes from the guest: its length is checked, every tag is accepted (tags this
// build does not name are kept in `other`, as newer drivers send more), and a value
// repeated for one tag keeps the last one.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "skiff/error.h"

namespace skiff::virtio::balloon {

struct BalloonStats {
  struct Tagged {
    uint16_t tag = 0;
    uint64_t value = 0;
    bool operator==(const Tagged&) const = default;
  };
  // Each is absent when the driver did not report it. Memory figures are bytes; the others
  // are counts since the guest booted.
  std::optional<uint64_t> swap_in;              // bytes swapped in
  std::optional<uint64_t> swap_out;             // bytes swapped out
  std::optional<uint64_t> major_faults;
  std::optional<uint64_t> minor_faults;
  std::optional<uint64_t> free_memory;          // bytes unused by the guest
  std::optional<uint64_t> total_memory;         // bytes the guest can use
  std::optional<uint64_t> available_memory;     // bytes available for new work without swapping
  std::optional<uint64_t> disk_caches;          // bytes of page cache the guest can drop
  std::optional<uint64_t> hugetlb_allocations;  // successful hugetlb page allocations
  std::optional<uint64_t> hugetlb_failures;     // failed hugetlb page allocations
  std::vector<Tagged> other;                    // tags this build does not name, in order
  // When the device received them (system clock, for the API) and how many sets arrived so
  // far, this one included. Set by the device, not by parse_balloon_stats().
  std::chrono::system_clock::time_point received_at{};
  uint64_t sequence = 0;
  bool operator==(const BalloonStats&) const = default;
};

// The largest stats buffer read: far more tags than any driver sends (Linux 6.x: 16).
inline constexpr uint32_t kMaxStatsEntries = 64;

// Parses a stats buffer: a whole number of 10-byte entries, at least one and at most
// kMaxStatsEntries. Anything else is a guest error naming the length.
Result<BalloonStats> parse_balloon_stats(std::span<const uint8_t> buffer);

// The reported values by name, for the library and the API: the names Linux uses in
// /proc/vmstat style (swap_in, ..., hugetlb_failures) and "tag_<n>" for tags this build
// does not name. Values the driver did not report are left out.
std::map<std::string, uint64_t> named_stats(const BalloonStats& stats);

}  // namespace skiff::virtio::balloon
