// SPDX-License-Identifier: Apache-2.0
// GuestMemory owns the host mappings that back guest RAM and is the only place that turns
// a guest-physical address into a host pointer. Every access names a range
// [gpa, gpa + len): the range is checked for overflow and must lie inside one region, or
// the call returns an error. Guest-provided addresses and lengths go through here.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "skiff/error.h"

namespace skiff {

enum class MemoryBacking {
  kAnonymous,   // private anonymous mapping
  kMemfd,       // shared memfd (can be handed to other processes)
  kHugetlb2M,   // memfd on hugetlbfs, 2 MiB pages, reserved at mmap time
  kHugetlb1G,   // memfd on hugetlbfs, 1 GiB pages, reserved at mmap time
};

struct MemoryOptions {
  MemoryBacking backing = MemoryBacking::kAnonymous;
  bool transparent_hugepages = false;  // madvise(MADV_HUGEPAGE); anonymous/memfd only
  bool prefault = false;               // populate every page before the guest runs
  bool lock = false;                   // mlock the guest RAM
  std::optional<uint32_t> numa_node;   // bind the RAM to this host node (mbind)
};

// One guest-physical range to back with RAM.
struct RamRange {
  uint64_t gpa = 0;
  uint64_t size = 0;
};

// One contiguous mapping of guest RAM.
struct GuestRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint8_t* host = nullptr;
  int fd = -1;             // memfd behind the mapping, or -1 for anonymous memory
  uint64_t fd_offset = 0;  // offset of this region within fd
  uint64_t end() const { return gpa + size; }
};

class GuestMemory {
 public:
  // Maps the ranges (sorted, non-overlapping, page-aligned; each size a multiple of the
  // backing's page size). Returns a host error naming the pool and the fix when hugetlb
  // pages are short.
  static Result<GuestMemory> create(std::span<const RamRange> ranges, const MemoryOptions& options);

  GuestMemory() = default;
  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&& other) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  const std::vector<GuestRegion>& regions() const { return regions_; }
  uint64_t total_size() const;
  // Page size of the backing (4 KiB, 2 MiB or 1 GiB).
  uint64_t page_size() const { return page_size_; }
  const MemoryOptions& options() const { return options_; }

  // True when [gpa, gpa + len) lies inside one region (len 0 counts when gpa is inside or
  // at the end of one).
  bool contains(uint64_t gpa, uint64_t len) const;

  // Host view of [gpa, gpa + len), which must lie within one region.
  Result<std::span<uint8_t>> slice(uint64_t gpa, uint64_t len) const;

  Result<void> read(uint64_t gpa, std::span<uint8_t> out) const;
  Result<void> write(uint64_t gpa, std::span<const uint8_t> data) const;
  Result<void> fill(uint64_t gpa, uint8_t value, uint64_t len) const;

  template <typename T>
  Result<T> read_obj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    auto r = read(gpa, std::span(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
    if (!r) return std::unexpected(r.error());
    return value;
  }
  template <typename T>
  Result<void> write_obj(uint64_t gpa, const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return write(gpa, std::span(reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
  }

  // Reads a NUL-terminated string of at most max_len bytes (without the NUL).
  Result<std::string> read_cstring(uint64_t gpa, uint64_t max_len) const;

  // The region containing gpa, or nullptr.
  const GuestRegion* find_region(uint64_t gpa) const;

  // Wraps already-mapped host buffers (used by tests and fakes; not owned).
  static GuestMemory from_host_buffers(std::span<const GuestRegion> regions);

 private:
  void release();

  std::vector<GuestRegion> regions_;
  MemoryOptions options_;
  uint64_t page_size_ = 4096;
  bool owned_ = false;
};

// Checks `gpa + len` does not wrap; returns the end address.
std::optional<uint64_t> checked_end(uint64_t gpa, uint64_t len);

// Lays out `memory_bytes` of RAM around the 32-bit MMIO hole: low RAM up to the hole
// start, the rest above 4 GiB.
std::vector<RamRange> split_ram_around_hole(uint64_t memory_bytes, uint64_t hole_start,
                                            uint64_t hole_end);

// Reads the hugetlb pool for `page_size` from sysfs: free pages not already reserved.
struct HugepagePool {
  uint64_t page_size = 0;
  uint64_t total = 0;
  uint64_t free = 0;
  uint64_t reserved = 0;
  uint64_t available() const { return free > reserved ? free - reserved : 0; }
};
Result<HugepagePool> read_hugepage_pool(uint64_t page_size);

}  // namespace skiff
