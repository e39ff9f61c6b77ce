// SPDX-License-Identifier: Apache-2.0
#include "virtio/balloon/balloon_stats.h"

#include <fmt/format.h>

#include "virtio/balloon/balloon_constants.h"

namespace skiff::virtio::balloon {
namespace {

uint64_t load_le(std::span<const uint8_t> bytes) {
  uint64_t value = 0;
  for (size_t i = bytes.size(); i > 0; --i) value = (value << 8) | bytes[i - 1];
  return value;
}

}  // namespace

Result<BalloonStats> parse_balloon_stats(std::span<const uint8_t> buffer) {
  if (buffer.empty() || buffer.size() % kStatEntrySize != 0 || buffer.size() > kMaxStatsEntries * kStatEntrySize) {
    return guest_error(fmt::format("balloon: stats buffer of {} bytes is not 1 to {} entries of {} bytes (§5.5.6.3)",
                                   buffer.size(), kMaxStatsEntries, kStatEntrySize));
  }
  BalloonStats stats;
  for (size_t offset = 0; offset < buffer.size(); offset += kStatEntrySize) {
    const auto tag = static_cast<uint16_t>(load_le(buffer.subspan(offset, 2)));
    const uint64_t value = load_le(buffer.subspan(offset + 2, 8));
    std::optional<uint64_t>* field = nullptr;
    switch (tag) {
      case kStatSwapIn: field = &stats.swap_in; break;
      case kStatSwapOut: field = &stats.swap_out; break;
      case kStatMajorFaults: field = &stats.major_faults; break;
      case kStatMinorFaults: field = &stats.minor_faults; break;
      case kStatFreeMemory: field = &stats.free_memory; break;
      case kStatTotalMemory: field = &stats.total_memory; break;
      case kStatAvailableMemory: field = &stats.available_memory; break;
      case kStatDiskCaches: field = &stats.disk_caches; break;
      case kStatHugetlbAllocations: field = &stats.hugetlb_allocations; break;
      case kStatHugetlbFailures: field = &stats.hugetlb_failures; break;
      default: break;
    }
    if (field != nullptr) {
      *field = value;
    } else {
      stats.other.push_back({tag, value});
    }
  }
  return stats;
}

std::map<std::string, uint64_t> named_stats(const BalloonStats& stats) {
  std::map<std::string, uint64_t> named;
  const std::pair<const char*, const std::optional<uint64_t>*> known[] = {
      {"swap_in", &stats.swap_in},
      {"swap_out", &stats.swap_out},
      {"major_faults", &stats.major_faults},
      {"minor_faults", &stats.minor_faults},
      {"free_memory", &stats.free_memory},
      {"total_memory", &stats.total_memory},
      {"available_memory", &stats.available_memory},
      {"disk_caches", &stats.disk_caches},
      {"hugetlb_allocations", &stats.hugetlb_allocations},
      {"hugetlb_failures", &stats.hugetlb_failures},
  };
  for (const auto& [name, value] : known) {
    if (*value) named.emplace(name, **value);
  }
  for (const auto& tagged : stats.other) named.insert_or_assign(fmt::format("tag_{}", tagged.tag), tagged.value);
  return named;
}

}  // namespace skiff::virtio::balloon
