// SPDX-License-Identifier: Apache-2.0
#include "memory/memory_reclaim.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "state/read_field.h"

namespace skiff {
namespace {

constexpr uint64_t kBitsPerWord = 64;

const char* backing_name(MemoryReclaimer::Backing backing) {
  switch (backing) {
    case MemoryReclaimer::Backing::kAnonymous: return "anonymous";
    case MemoryReclaimer::Backing::kSharedFile: return "shared file";
    case MemoryReclaimer::Backing::kHugetlb: return "hugetlbfs";
  }
  return "?";
}

}  // namespace

// ---- HugePageBitmap -------------------------------------------------------------------------

HugePageBitmap::HugePageBitmap(uint64_t pages_per_huge_page) : pages_per_huge_(std::max<uint64_t>(pages_per_huge_page, 1)) {}

void HugePageBitmap::materialize(Entry& entry) const {
  if (!entry.bits.empty()) return;
  // Entries with nothing given back are erased, so an entry without bits is either new
  // (given_back 0) or complete (every bit set).
  const uint64_t words = (pages_per_huge_ + kBitsPerWord - 1) / kBitsPerWord;
  entry.bits.assign(words, 0);
  if (entry.given_back == pages_per_huge_) {
    for (uint64_t i = 0; i < pages_per_huge_; ++i) entry.bits[i / kBitsPerWord] |= uint64_t{1} << (i % kBitsPerWord);
  }
}

HugePageBitmap::GiveBack HugePageBitmap::give_back(uint64_t huge, uint64_t first, uint64_t count) {
  GiveBack result;
  if (count == 0 || first >= pages_per_huge_) return result;
  count = std::min(count, pages_per_huge_ - first);
  Entry& entry = entries_[huge];
  if (entry.given_back == pages_per_huge_) {
    result.complete = !entry.released;  // duplicates: nothing new, but a failed release may be retried
    return result;
  }
  if (entry.given_back == 0 && count == pages_per_huge_) {
    entry.given_back = pages_per_huge_;  // the whole huge page at once: no bits needed
    entry.bits.clear();
    result.newly_given_back = count;
    result.complete = true;
    return result;
  }
  materialize(entry);
  for (uint64_t i = first; i < first + count; ++i) {
    uint64_t& word = entry.bits[i / kBitsPerWord];
    const uint64_t mask = uint64_t{1} << (i % kBitsPerWord);
    if ((word & mask) == 0) {
      word |= mask;
      ++result.newly_given_back;
    }
  }
  entry.given_back += result.newly_given_back;
  if (entry.given_back == pages_per_huge_) {
    entry.bits = {};  // complete: the bits say nothing the count does not
    result.complete = !entry.released;
  }
  return result;
}

HugePageBitmap::TakeBack HugePageBitmap::take_back(uint64_t huge, uint64_t first, uint64_t count) {
  TakeBack result;
  auto it = entries_.find(huge);
  if (it == entries_.end() || count == 0 || first >= pages_per_huge_) return result;
  count = std::min(count, pages_per_huge_ - first);
  Entry& entry = it->second;
  materialize(entry);
  for (uint64_t i = first; i < first + count; ++i) {
    uint64_t& word = entry.bits[i / kBitsPerWord];
    const uint64_t mask = uint64_t{1} << (i % kBitsPerWord);
    if ((word & mask) != 0) {
      word &= ~mask;
      ++result.taken_back;
    }
  }
  entry.given_back -= result.taken_back;
  if (result.taken_back != 0 && entry.released) {
    result.was_released = true;
    entry.released = false;
  }
  if (entry.given_back == 0) {
    entries_.erase(it);
  } else if (entry.given_back == pages_per_huge_) {
    entry.bits = {};
  }
  return result;
}

void HugePageBitmap::mark_released(uint64_t huge) {
  auto it = entries_.find(huge);
  if (it != entries_.end() && it->second.given_back == pages_per_huge_) it->second.released = true;
}

bool HugePageBitmap::released(uint64_t huge) const {
  auto it = entries_.find(huge);
  return it != entries_.end() && it->second.released;
}

uint64_t HugePageBitmap::given_back(uint64_t huge) const {
  auto it = entries_.find(huge);
  return it == entries_.end() ? 0 : it->second.given_back;
}

uint64_t HugePageBitmap::partial_count() const {
  return static_cast<uint64_t>(std::count_if(entries_.begin(), entries_.end(), [this](const auto& item) {
    return item.second.given_back < pages_per_huge_;
  }));
}

uint64_t HugePageBitmap::released_count() const {
  return static_cast<uint64_t>(
      std::count_if(entries_.begin(), entries_.end(), [](const auto& item) { return item.second.released; }));
}

Result<void> HugePageBitmap::restore_state(const state::StateBlob& blob, uint64_t huge_pages) {
  if (auto expected = blob.expect("hugepage-bitmap", 1); !expected) return expected;
  const auto bad = [](std::string_view what) {
    return config_error(fmt::format("state of hugepage-bitmap: {}", what));
  };
  uint64_t pages_per_huge = 0;
  if (auto r = state::read_field(blob, "pages_per_huge_page", pages_per_huge); !r) return r;
  if (pages_per_huge != pages_per_huge_) {
    return bad(fmt::format("pages_per_huge_page {} differs from this region's {}", pages_per_huge, pages_per_huge_));
  }
  // At most one entry per huge page of the region, and per entry at most one bitmap.
  const uint64_t words = (pages_per_huge_ + kBitsPerWord - 1) / kBitsPerWord;
  const auto huge = blob.u64s("huge", huge_pages, huge_pages == 0 ? 0 : huge_pages - 1);
  if (!huge) return std::unexpected(huge.error());
  const auto given_back = blob.u64s("given_back", huge->size(), pages_per_huge_);
  if (!given_back) return std::unexpected(given_back.error());
  const auto released = blob.u64s("released", huge->size(), 1);
  if (!released) return std::unexpected(released.error());
  const size_t max_words = huge->size() > SIZE_MAX / words ? SIZE_MAX : huge->size() * words;
  const auto bits = blob.u64s("bits", max_words);
  if (!bits) return std::unexpected(bits.error());
  if (given_back->size() != huge->size() || released->size() != huge->size()) {
    return bad("the lists huge, given_back and released differ in length");
  }
  std::unordered_map<uint64_t, Entry> entries;
  size_t next_word = 0;
  for (size_t i = 0; i < huge->size(); ++i) {
    if (i > 0 && (*huge)[i] <= (*huge)[i - 1]) return bad("huge page numbers are not strictly increasing");
    Entry entry;
    entry.given_back = (*given_back)[i];
    entry.released = (*released)[i] == 1;
    // Entries with nothing given back are erased; complete ones keep no bits; only complete
    // huge pages are released.
    if (entry.given_back == 0) return bad(fmt::format("huge page {} with no page given back", (*huge)[i]));
    if (entry.released && entry.given_back != pages_per_huge_) {
      return bad(fmt::format("huge page {} released with only {} pages given back", (*huge)[i], entry.given_back));
    }
    if (entry.given_back < pages_per_huge_) {
      if (bits->size() - next_word < words) return bad("fewer bit words than partial huge pages need");
      entry.bits.assign(bits->begin() + static_cast<ptrdiff_t>(next_word),
                        bits->begin() + static_cast<ptrdiff_t>(next_word + words));
      next_word += words;
      uint64_t count = 0;
      for (uint64_t word : entry.bits) count += static_cast<uint64_t>(std::popcount(word));
      const uint64_t tail = pages_per_huge_ % kBitsPerWord;
      const bool stray = tail != 0 && (entry.bits.back() >> tail) != 0;
      if (count != entry.given_back || stray) {
        return bad(fmt::format("huge page {}: the bits do not describe {} pages given back", (*huge)[i],
                               entry.given_back));
      }
    }
    entries.emplace((*huge)[i], std::move(entry));
  }
  if (next_word != bits->size()) return bad("more bit words than partial huge pages need");
  entries_ = std::move(entries);
  return {};
}

state::StateBlob HugePageBitmap::save_state() const {
  std::vector<uint64_t> huge;
  for (const auto& item : entries_) huge.push_back(item.first);
  std::sort(huge.begin(), huge.end());
  std::vector<uint64_t> given_back;
  std::vector<uint64_t> released;
  std::vector<uint64_t> bits;
  for (uint64_t number : huge) {
    const Entry& entry = entries_.at(number);
    given_back.push_back(entry.given_back);
    released.push_back(entry.released ? 1 : 0);
    if (entry.given_back < pages_per_huge_) bits.insert(bits.end(), entry.bits.begin(), entry.bits.end());
  }
  state::StateBlob blob("hugepage-bitmap", 1);
  blob.put("pages_per_huge_page", pages_per_huge_)
      .put_u64s("huge", huge)
      .put_u64s("given_back", given_back)
      .put_u64s("released", released)
      .put_u64s("bits", bits);
  return blob;
}

// ---- MemoryReclaimer ------------------------------------------------------------------------

Result<std::unique_ptr<MemoryReclaimer>> MemoryReclaimer::create(const GuestMemory& memory) {
  std::vector<Area> areas;
  for (const GuestRegion& region : memory.regions()) {
    const std::string where = fmt::format("guest RAM region [{:#x}, +{:#x})", region.gpa, region.size);
    const uint64_t host = reinterpret_cast<uintptr_t>(region.host);
    if (region.gpa % kReclaimPageSize != 0 || region.size % kReclaimPageSize != 0 || host % kReclaimPageSize != 0 ||
        region.fd_offset % kReclaimPageSize != 0) {
      return internal_error(fmt::format("balloon: {} is not 4 KiB aligned (host {:#x}, file offset {:#x}), so its "
                                        "pages cannot be given back one by one",
                                        where, host, region.fd_offset));
    }
    Area area;
    area.first_page = region.gpa >> kReclaimPageShift;
    area.page_count = region.size >> kReclaimPageShift;
    area.region = region;
    if (region.fd >= 0) {
      struct statfs fs {};
      if (fstatfs(region.fd, &fs) != 0) {
        return std::unexpected(errno_error(fmt::format("balloon: fstatfs on the file behind {}", where), errno));
      }
      if (static_cast<uint64_t>(fs.f_type) == HUGETLBFS_MAGIC) {
        const uint64_t huge = static_cast<uint64_t>(fs.f_bsize);
        if (huge < kReclaimPageSize || !std::has_single_bit(huge)) {
          return internal_error(fmt::format("balloon: {}: hugetlbfs reports page size {}", where, huge));
        }
        if (region.gpa % huge != 0 || region.size % huge != 0 || region.fd_offset % huge != 0) {
          return internal_error(
              fmt::format("balloon: {} is not aligned to its {} KiB huge pages", where, huge >> 10));
        }
        area.backing = Backing::kHugetlb;
        area.pages_per_huge_page = huge >> kReclaimPageShift;
        area.bitmap = std::make_unique<HugePageBitmap>(area.pages_per_huge_page);
      } else {
        area.backing = Backing::kSharedFile;
      }
    }
    spdlog::debug("balloon: {} is {} memory{}", where, backing_name(area.backing),
                  area.backing == Backing::kHugetlb ? fmt::format(" with {} KiB pages", area.pages_per_huge_page * 4)
                                                    : std::string());
    areas.push_back(std::move(area));
  }
  std::sort(areas.begin(), areas.end(), [](const Area& a, const Area& b) { return a.first_page < b.first_page; });
  if (memory.options().lock) {
    spdlog::warn("balloon: guest RAM is locked (machine.lock_memory); the kernel refuses to drop locked "
                 "anonymous pages, so inflating the balloon may not free memory");
  }
  return std::unique_ptr<MemoryReclaimer>(new MemoryReclaimer(std::move(areas)));
}

ReclaimOutcome MemoryReclaimer::discard(uint64_t gpa, uint64_t len) { return apply_range(Op::kDiscard, gpa, len); }
ReclaimOutcome MemoryReclaimer::reuse(uint64_t gpa, uint64_t len) { return apply_range(Op::kReuse, gpa, len); }
ReclaimOutcome MemoryReclaimer::discard_free(uint64_t gpa, uint64_t len) {
  return apply_range(Op::kDiscardFree, gpa, len);
}
ReclaimOutcome MemoryReclaimer::discard_pfns(std::span<const uint32_t> pfns) { return apply_pfns(Op::kDiscard, pfns); }
ReclaimOutcome MemoryReclaimer::reuse_pfns(std::span<const uint32_t> pfns) { return apply_pfns(Op::kReuse, pfns); }

ReclaimOutcome MemoryReclaimer::apply_range(Op op, uint64_t gpa, uint64_t len) {
  // Only pages the range covers completely, computed in page numbers so that nothing
  // overflows even for a range ending at 2^64 or beyond.
  const uint64_t in_page = gpa & (kReclaimPageSize - 1);
  const uint64_t first_page = (gpa >> kReclaimPageShift) + (in_page != 0 ? 1 : 0);
  const uint64_t end_page =
      (gpa >> kReclaimPageShift) + (len >> kReclaimPageShift) + ((in_page + (len & (kReclaimPageSize - 1))) >> kReclaimPageShift);
  if (end_page <= first_page) return {};
  std::lock_guard lock(mutex_);
  return apply_locked(op, first_page, end_page);
}

ReclaimOutcome MemoryReclaimer::apply_pfns(Op op, std::span<const uint32_t> pfns) {
  std::vector<uint64_t> pages(pfns.begin(), pfns.end());
  std::sort(pages.begin(), pages.end());
  pages.erase(std::unique(pages.begin(), pages.end()), pages.end());  // duplicates are harmless
  ReclaimOutcome total;
  std::lock_guard lock(mutex_);
  for (size_t start = 0; start < pages.size();) {
    size_t end = start + 1;
    while (end < pages.size() && pages[end] == pages[end - 1] + 1) ++end;
    ReclaimOutcome run = apply_locked(op, pages[start], pages[end - 1] + 1);
    total.pages += run.pages;
    total.out_of_range += run.out_of_range;
    start = end;
  }
  return total;
}

ReclaimOutcome MemoryReclaimer::apply_locked(Op op, uint64_t first_page, uint64_t end_page) {
  ReclaimOutcome outcome;
  for (Area& area : areas_) {
    const uint64_t low = std::max(first_page, area.first_page);
    const uint64_t high = std::min(end_page, area.first_page + area.page_count);
    if (low >= high) continue;
    apply_to_area_locked(op, area, low - area.first_page, high - low);
    outcome.pages += high - low;
  }
  outcome.out_of_range = (end_page - first_page) - outcome.pages;
  counters_.out_of_range_pages += outcome.out_of_range;
  switch (op) {
    case Op::kDiscard: counters_.pages_discarded += outcome.pages; break;
    case Op::kReuse: counters_.pages_reused += outcome.pages; break;
    case Op::kDiscardFree: counters_.pages_reported_free += outcome.pages; break;
  }
  return outcome;
}

void MemoryReclaimer::apply_to_area_locked(Op op, Area& area, uint64_t first, uint64_t count) {
  if (area.backing == Backing::kHugetlb) {
    apply_hugetlb_locked(op, area, first, count);
    return;
  }
  // Anonymous and ordinary shared memory fault back in zero-filled on the next access, so
  // taking pages back needs nothing from the host.
  if (op == Op::kReuse) return;
  release_bytes_locked(area, first << kReclaimPageShift, count << kReclaimPageShift);
}

void MemoryReclaimer::apply_hugetlb_locked(Op op, Area& area, uint64_t first, uint64_t count) {
  HugePageBitmap& bitmap = *area.bitmap;
  const uint64_t per_huge = area.pages_per_huge_page;
  const uint64_t huge_bytes = per_huge << kReclaimPageShift;
  const uint64_t end = first + count;
  for (uint64_t page = first; page < end;) {
    const uint64_t huge = page / per_huge;
    const uint64_t in_huge = page % per_huge;
    const uint64_t n = std::min(per_huge - in_huge, end - page);
    const uint64_t offset = huge * huge_bytes;
    switch (op) {
      case Op::kDiscard:
        if (bitmap.give_back(huge, in_huge, n).complete && release_bytes_locked(area, offset, huge_bytes)) {
          bitmap.mark_released(huge);
          ++counters_.huge_pages_released;
        }
        break;
      case Op::kDiscardFree:
        // Reported pages are not recorded (the guest reuses them silently); only huge pages
        // the report covers entirely can go.
        if (n == per_huge && !bitmap.released(huge) && release_bytes_locked(area, offset, huge_bytes)) {
          ++counters_.huge_pages_released;
        }
        break;
      case Op::kReuse:
        if (bitmap.take_back(huge, in_huge, n).was_released && populate_bytes_locked(area, offset, huge_bytes)) {
          ++counters_.huge_pages_repopulated;
        }
        break;
    }
    page += n;
  }
}

bool MemoryReclaimer::release_bytes_locked(const Area& area, uint64_t offset, uint64_t len) {
  const GuestRegion& region = area.region;
  int result = 0;
  const char* call = "";
  if (area.backing == Backing::kAnonymous) {
    call = "madvise(MADV_DONTNEED)";
    result = madvise(region.host + offset, len, MADV_DONTNEED);
  } else {
    // The file-level MADV_REMOVE: frees the pages from the file and from every mapping of
    // it; on hugetlbfs the huge page goes back to the pool.
    call = "fallocate(PUNCH_HOLE)";
    result = fallocate(region.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       static_cast<off_t>(region.fd_offset + offset), static_cast<off_t>(len));
  }
  if (result != 0) {
    const int err = errno;
    if (counters_.failures++ % 1000 == 0) {
      spdlog::warn("balloon: {} on guest RAM [{:#x}, +{:#x}) failed: {} ({} failures so far); the memory stays "
                   "resident",
                   call, region.gpa + offset, len, std::strerror(err), counters_.failures);
    }
    return false;
  }
  counters_.bytes_released += len;
  return true;
}

bool MemoryReclaimer::populate_bytes_locked(const Area& area, uint64_t offset, uint64_t len) {
  const GuestRegion& region = area.region;
  if (fallocate(region.fd, 0, static_cast<off_t>(region.fd_offset + offset), static_cast<off_t>(len)) != 0) {
    const int err = errno;
    if (counters_.failures++ % 1000 == 0) {
      spdlog::warn("balloon: allocating the huge page at guest {:#x} again on deflate failed: {}; the guest "
                   "faults when it touches it unless the hugetlb pool has a free page by then "
                   "(see HugePages_Free in /proc/meminfo)",
                   region.gpa + offset, std::strerror(err));
    }
    return false;
  }
  return true;
}

void MemoryReclaimer::forget_given_back() {
  std::lock_guard lock(mutex_);
  for (Area& area : areas_) {
    if (area.bitmap) area.bitmap->clear();
  }
}

ReclaimCounters MemoryReclaimer::counters() const {
  std::lock_guard lock(mutex_);
  ReclaimCounters out = counters_;
  out.partial_huge_pages = 0;
  for (const Area& area : areas_) {
    if (area.bitmap) out.partial_huge_pages += area.bitmap->partial_count();
  }
  return out;
}

std::optional<MemoryReclaimer::Backing> MemoryReclaimer::backing_at(uint64_t gpa) const {
  const uint64_t page = gpa >> kReclaimPageShift;
  for (const Area& area : areas_) {
    if (page >= area.first_page && page - area.first_page < area.page_count) return area.backing;
  }
  return std::nullopt;
}

state::StateBlob MemoryReclaimer::save_state() const {
  std::lock_guard lock(mutex_);
  std::vector<state::StateBlob> hugetlb;
  for (const Area& area : areas_) {
    if (!area.bitmap) continue;
    state::StateBlob region("hugetlb-region", 1);
    region.put("first_page", area.first_page).put_blob("bitmap", area.bitmap->save_state());
    hugetlb.push_back(std::move(region));
  }
  state::StateBlob blob("memory-reclaimer", 1);
  blob.put("pages_discarded", counters_.pages_discarded)
      .put("pages_reused", counters_.pages_reused)
      .put("pages_reported_free", counters_.pages_reported_free)
      .put("bytes_released", counters_.bytes_released)
      .put("huge_pages_released", counters_.huge_pages_released)
      .put("huge_pages_repopulated", counters_.huge_pages_repopulated)
      .put("out_of_range_pages", counters_.out_of_range_pages)
      .put("failures", counters_.failures)
      .put_blobs("hugetlb_regions", hugetlb);
  return blob;
}

Result<void> MemoryReclaimer::restore_state(const state::StateBlob& blob) {
  using state::read_field;
  if (auto expected = blob.expect("memory-reclaimer", 1); !expected) return expected;
  ReclaimCounters counters;
  for (auto read : {read_field(blob, "pages_discarded", counters.pages_discarded),
                    read_field(blob, "pages_reused", counters.pages_reused),
                    read_field(blob, "pages_reported_free", counters.pages_reported_free),
                    read_field(blob, "bytes_released", counters.bytes_released),
                    read_field(blob, "huge_pages_released", counters.huge_pages_released),
                    read_field(blob, "huge_pages_repopulated", counters.huge_pages_repopulated),
                    read_field(blob, "out_of_range_pages", counters.out_of_range_pages),
                    read_field(blob, "failures", counters.failures)}) {
    if (!read) return read;
  }
  std::lock_guard lock(mutex_);
  size_t hugetlb_areas = 0;
  for (const Area& area : areas_) hugetlb_areas += area.bitmap ? 1 : 0;
  auto regions = blob.blobs("hugetlb_regions", hugetlb_areas);
  if (!regions) return std::unexpected(regions.error());
  if (regions->size() != hugetlb_areas) {
    return config_error(fmt::format("state of memory-reclaimer: {} hugetlbfs regions where this guest RAM has {}",
                                    regions->size(), hugetlb_areas));
  }
  // Checked into new bitmaps first, swapped in only when every region is valid.
  std::vector<std::unique_ptr<HugePageBitmap>> bitmaps;
  size_t next = 0;
  for (const Area& area : areas_) {
    if (!area.bitmap) continue;
    const state::StateBlob& region = (*regions)[next++];
    if (auto expected = region.expect("hugetlb-region", 1); !expected) return expected;
    uint64_t first_page = 0;
    if (auto r = read_field(region, "first_page", first_page); !r) return r;
    if (first_page != area.first_page) {
      return config_error(fmt::format("state of memory-reclaimer: hugetlbfs region at page {:#x} where this guest "
                                      "RAM has one at {:#x}",
                                      first_page, area.first_page));
    }
    auto saved = region.blob("bitmap");
    if (!saved) return std::unexpected(saved.error());
    auto bitmap = std::make_unique<HugePageBitmap>(area.pages_per_huge_page);
    if (auto r = bitmap->restore_state(*saved, area.page_count / area.pages_per_huge_page); !r) return r;
    bitmaps.push_back(std::move(bitmap));
  }
  next = 0;
  for (Area& area : areas_) {
    if (area.bitmap) area.bitmap = std::move(bitmaps[next++]);
  }
  counters_ = counters;
  return {};
}

}  // namespace skiff
