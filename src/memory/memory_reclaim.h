// SPDX-License-Identifier: Apache-2.0
// Giving guest RAM back to the host, and taking it back, in 4 KiB guest pages: what the
// virtio-balloon (inflate, deflate, free page reporting) asks of the VMM.
//
// How a page is released depends on what backs its region (found from the region's fd):
//   - anonymous private memory (fd -1): madvise(MADV_DONTNEED). The next guest access
//     faults in a zero page. With transparent hugepages the kernel splits a huge page that
//     is partly given back; its memory is freed when the split completes.
//   - a shared file that is not hugetlbfs (the shared memfd, tmpfs): fallocate(PUNCH_HOLE |
//     KEEP_SIZE) at the region's fd_offset, the file-level MADV_REMOVE: the page leaves the
//     page cache and every mapping of it, so memory shared with other processes is freed too.
//   - hugetlbfs (2 MiB or 1 GiB pages): the kernel frees only whole huge pages. A
//     HugePageBitmap records which 4 KiB pages of each huge page the guest gave back; when
//     the last one arrives the whole huge page is punched out of the file, which returns it
//     to the hugetlb pool (HugePages_Free rises). A huge page given back only in part stays
//     resident. Taking a page back (deflate) clears its bit; if its huge page had been
//     released it is allocated again at once (fallocate), so a short pool is reported here
//     rather than when the guest touches the page.
//
// Free page reports are different from inflated pages: the guest reuses reported pages
// without telling the host. So discard_free() never records pages in the bitmap (a stale
// bit could later complete a huge page the guest is using); on hugetlbfs it releases only
// the huge pages the report covers entirely.
//
// Every range is checked against guest RAM: pages outside every region (past the end of
// RAM, in the 32-bit MMIO hole) are ignored and counted; the arithmetic cannot overflow.
// Ranges need not be 4 KiB aligned: only the pages they cover completely are affected.
//
// Thread-safe: one mutex serialises every call (the syscalls included, so a discard and a
// reuse of the same huge page cannot interleave).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "memory/guest_memory.h"
#include "skiff/error.h"
#include "state/state_blob.h"

namespace skiff {

// The unit of the balloon interface: 4 KiB whatever the host's or the backing's page size
// (virtio 1.2 §5.5.6: VIRTIO_BALLOON_PFN_SHIFT is 12).
inline constexpr uint64_t kReclaimPageShift = 12;
inline constexpr uint64_t kReclaimPageSize = uint64_t{1} << kReclaimPageShift;

// Which 4 KiB pages of each huge page have been given back, and which huge pages have been
// released to the host. Pure bookkeeping (no syscalls), keyed by huge page number; only
// huge pages with at least one page given back take memory.
class HugePageBitmap {
 public:
  explicit HugePageBitmap(uint64_t pages_per_huge_page);

  struct GiveBack {
    uint64_t newly_given_back = 0;  // pages whose bit was clear before
    bool complete = false;  // every page is given back and the huge page is not released yet
  };
  // Marks pages [first, first + count) of huge page `huge` as given back.
  // Requires first + count <= pages_per_huge_page().
  GiveBack give_back(uint64_t huge, uint64_t first, uint64_t count);

  struct TakeBack {
    uint64_t taken_back = 0;  // pages whose bit was set before
    bool was_released = false;  // the huge page had been released: the caller allocates it
  };
  // Clears pages [first, first + count) of huge page `huge`; a huge page that was released
  // is no longer (its remaining given-back pages are resident again).
  TakeBack take_back(uint64_t huge, uint64_t first, uint64_t count);

  // The caller released huge page `huge` (only valid when it is complete).
  void mark_released(uint64_t huge);
  bool released(uint64_t huge) const;
  uint64_t given_back(uint64_t huge) const;
  // Huge pages with some but not all of their pages given back.
  uint64_t partial_count() const;
  // Huge pages released to the host now.
  uint64_t released_count() const;
  uint64_t pages_per_huge_page() const { return pages_per_huge_; }
  // Forgets everything (the guest reset: its balloon is empty again).
  void clear() { entries_.clear(); }

  // State: kind "hugepage-bitmap", version 1: pages_per_huge_page and, for each huge page
  // with pages given back (by huge page number), how many, whether it was released, and the
  // bits of the partial ones.
  state::StateBlob save_state() const;
  // Replaces this bitmap's contents with a save_state() blob of a bitmap of the same huge
  // page size over `huge_pages` huge pages. Every entry is checked (numbers in range and
  // increasing, counts matching the bits, released only when complete); on error nothing
  // changes.
  Result<void> restore_state(const state::StateBlob& blob, uint64_t huge_pages);

 private:
  struct Entry {
    std::vector<uint64_t> bits;  // empty while every page is given back (the common case)
    uint64_t given_back = 0;
    bool released = false;
  };
  void materialize(Entry& entry) const;

  uint64_t pages_per_huge_;
  std::unordered_map<uint64_t, Entry> entries_;
};

// Counters since the reclaimer was created; pages are 4 KiB.
struct ReclaimCounters {
  uint64_t pages_discarded = 0;      // balloon pages taken (inflate) inside RAM, duplicates included
  uint64_t pages_reused = 0;         // balloon pages given back to the guest (deflate) inside RAM
  uint64_t pages_reported_free = 0;  // pages of free page reports inside RAM
  uint64_t bytes_released = 0;       // bytes madvise/fallocate handed back to the host
  uint64_t huge_pages_released = 0;  // whole huge pages punched out of a hugetlb file
  uint64_t huge_pages_repopulated = 0;  // released huge pages allocated again on deflate
  uint64_t partial_huge_pages = 0;   // now: huge pages given back in part (still resident)
  uint64_t out_of_range_pages = 0;   // pages outside guest RAM, ignored
  uint64_t failures = 0;             // madvise/fallocate calls the kernel refused
  bool operator==(const ReclaimCounters&) const = default;
};

// What one call did, in 4 KiB pages.
struct ReclaimOutcome {
  uint64_t pages = 0;         // pages inside guest RAM that were handled
  uint64_t out_of_range = 0;  // pages outside guest RAM, ignored
  bool operator==(const ReclaimOutcome&) const = default;
};

class MemoryReclaimer {
 public:
  // How one region's pages are released.
  enum class Backing { kAnonymous, kSharedFile, kHugetlb };

  // Inspects each region of `memory` (fstatfs on its fd tells hugetlbfs and its page size
  // from other files). Fails when a region is not 4 KiB aligned (or, on hugetlbfs, not
  // aligned to the huge page size) in guest address, size, host address or file offset.
  // `memory` must outlive the reclaimer.
  static Result<std::unique_ptr<MemoryReclaimer>> create(const GuestMemory& memory);
  MemoryReclaimer(const MemoryReclaimer&) = delete;
  MemoryReclaimer& operator=(const MemoryReclaimer&) = delete;

  // Balloon inflate: the guest gives [gpa, gpa + len) to the host.
  ReclaimOutcome discard(uint64_t gpa, uint64_t len);
  // Balloon deflate: the guest takes [gpa, gpa + len) back.
  ReclaimOutcome reuse(uint64_t gpa, uint64_t len);
  // The same for a buffer of 4 KiB page frame numbers (the balloon's PFN arrays): sorted,
  // duplicates dropped and runs of consecutive pages handled with one syscall.
  ReclaimOutcome discard_pfns(std::span<const uint32_t> pfns);
  ReclaimOutcome reuse_pfns(std::span<const uint32_t> pfns);
  // Free page reporting: [gpa, gpa + len) is free in the guest now, which may reuse it at
  // any time without telling the host.
  ReclaimOutcome discard_free(uint64_t gpa, uint64_t len);
  // The guest was reset: forget which pages it had given back. Released pages stay
  // released and fault back in (zero-filled) when the new guest touches them.
  void forget_given_back();

  ReclaimCounters counters() const;

  // State: kind "memory-reclaimer", version 1: the counters and, for each hugetlbfs region,
  // its HugePageBitmap (the host's view of which 4 KiB pages the guest gave back; other
  // backings keep nothing: their pages are released at once). restore_state() expects a
  // reclaimer over the same RAM layout (the same spec) and refuses anything else.
  state::StateBlob save_state() const;
  Result<void> restore_state(const state::StateBlob& blob);

  // The backing of the region holding `gpa`, or nullopt outside RAM (for tests and logs).
  std::optional<Backing> backing_at(uint64_t gpa) const;

 private:
  enum class Op { kDiscard, kReuse, kDiscardFree };
  struct Area {
    uint64_t first_page = 0;  // guest page number (gpa >> 12) of the region's start
    uint64_t page_count = 0;
    GuestRegion region;  // a copy: the host pointer and fd stay valid while the memory lives
    Backing backing = Backing::kAnonymous;
    uint64_t pages_per_huge_page = 1;
    std::unique_ptr<HugePageBitmap> bitmap;  // kHugetlb only
  };

  explicit MemoryReclaimer(std::vector<Area> areas) : areas_(std::move(areas)) {}
  // Applies `op` to guest pages [first_page, end_page); counts what lies outside RAM.
  ReclaimOutcome apply_locked(Op op, uint64_t first_page, uint64_t end_page);
  ReclaimOutcome apply_pfns(Op op, std::span<const uint32_t> pfns);
  ReclaimOutcome apply_range(Op op, uint64_t gpa, uint64_t len);
  // Area pages [first, first + count) (area-relative).
  void apply_to_area_locked(Op op, Area& area, uint64_t first, uint64_t count);
  void apply_hugetlb_locked(Op op, Area& area, uint64_t first, uint64_t count);
  bool release_bytes_locked(const Area& area, uint64_t offset, uint64_t len);
  bool populate_bytes_locked(const Area& area, uint64_t offset, uint64_t len);

  std::vector<Area> areas_;  // sorted by guest address, like GuestMemory's regions
  mutable std::mutex mutex_;
  ReclaimCounters counters_;  // partial_huge_pages is computed in counters()
};

}  // namespace skiff
