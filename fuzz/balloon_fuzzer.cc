// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for what virtio-balloon reads from the guest:
//   - the statistics buffer (src/virtio/balloon/balloon_stats.cc: parse_balloon_stats,
//     named_stats), checked against a model (last value per tag wins);
//   - HugePageBitmap (src/memory/memory_reclaim.cc) under arbitrary give_back / take_back /
//     mark_released sequences, checked against a plain bitset model;
//   - MemoryReclaimer::discard/reuse/discard_free and discard_pfns/reuse_pfns on a guest RAM
//     of three real mappings (anonymous, a shared memfd, and anonymous at the top of the
//     32-bit PFN range). Every page is filled with a pattern first; afterwards exactly the
//     pages the model says were given back read zero and every other page still holds its
//     pattern, so a discard that strays outside its range (or outside RAM) is caught.
//
// Input layout (fuzz/corpus/make_balloon_corpus.py writes seeds in this format):
//   u8 stats length (bytes, up to 255), the stats buffer
//   u16 pages per huge page (1 + n % 600), u8 bitmap op count, each: u8 op (% 3: give_back,
//       take_back, mark_released), u8 huge page (% 4), u16 first, u16 count
//   u8 reclaimer op count (% 48), each: u8 op (% 6: discard, reuse, discard_free,
//       discard_pfns, reuse_pfns, forget_given_back), then for ranges a gpa and a length,
//       for PFN lists u8 n (% 64) and n page numbers. An address or page number is u8 base
//       (% 4: region A, B, C, or raw) and an i32 delta (raw: u64 / u32 as is); a length is
//       u8 (bit 0: u64 raw, else u16 pages * 4 KiB + u16 bytes).

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "fuzz_support.h"
#include "memory/memory_reclaim.h"
#include "virtio/balloon/balloon_constants.h"
#include "virtio/balloon/balloon_stats.h"

namespace {

using skiff::fuzz::check;
using skiff::fuzz::FuzzReader;
using namespace skiff::virtio::balloon;

constexpr uint64_t kPage = skiff::kReclaimPageSize;

// ---- Statistics ------------------------------------------------------------------------------

void fuzz_stats(FuzzReader& in) {
  const auto buffer = in.bytes(in.u8());
  auto parsed = parse_balloon_stats(buffer);
  const bool well_formed = !buffer.empty() && buffer.size() % kStatEntrySize == 0 &&
                           buffer.size() <= kMaxStatsEntries * kStatEntrySize;
  check(parsed.has_value() == well_formed);
  if (!parsed) {
    check(!parsed.error().message().empty());
    return;
  }
  // The model: the last value of each known tag, every unknown entry in order.
  std::map<uint16_t, uint64_t> known;
  size_t unknown = 0;
  for (size_t at = 0; at < buffer.size(); at += kStatEntrySize) {
    const auto tag = static_cast<uint16_t>(buffer[at] | buffer[at + 1] << 8);
    uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = value << 8 | buffer[at + 2 + i];
    if (tag <= kStatHugetlbFailures) {
      known[tag] = value;
    } else {
      check(unknown < parsed->other.size() && parsed->other[unknown].tag == tag &&
            parsed->other[unknown].value == value);
      ++unknown;
    }
  }
  check(unknown == parsed->other.size());
  const std::optional<uint64_t>* fields[] = {
      &parsed->swap_in,      &parsed->swap_out,         &parsed->major_faults, &parsed->minor_faults,
      &parsed->free_memory,  &parsed->total_memory,     &parsed->available_memory,
      &parsed->disk_caches,  &parsed->hugetlb_allocations, &parsed->hugetlb_failures};
  for (uint16_t tag = 0; tag <= kStatHugetlbFailures; ++tag) {
    auto it = known.find(tag);
    check(fields[tag]->has_value() == (it != known.end()));
    if (it != known.end()) check(**fields[tag] == it->second);
  }
  const auto named = named_stats(*parsed);
  check(named.size() <= known.size() + parsed->other.size());
}

// ---- HugePageBitmap --------------------------------------------------------------------------

struct HugeModel {
  std::vector<bool> bits;
  uint64_t set = 0;
  bool released = false;
  uint64_t count() const { return set; }
};

void fuzz_bitmap(FuzzReader& in) {
  const uint64_t per_huge = 1 + in.u16() % 600;
  skiff::HugePageBitmap bitmap(per_huge);
  std::array<HugeModel, 4> model;
  for (auto& m : model) m.bits.assign(per_huge, false);
  const size_t ops = in.u8();
  for (size_t op_index = 0; op_index < ops; ++op_index) {
    const uint8_t op = in.u8() % 3;
    const uint8_t huge = in.u8() % 4;
    const uint64_t first = in.u16();
    const uint64_t count = in.u16();
    HugeModel& m = model[huge];
    const uint64_t end = first >= per_huge ? first : std::min(per_huge, first + count);
    switch (op) {
      case 0: {
        const auto result = bitmap.give_back(huge, first, count);
        uint64_t fresh = 0;
        for (uint64_t i = first; i < end; ++i) {
          if (!m.bits[i]) ++fresh;
          m.bits[i] = true;
        }
        m.set += fresh;
        check(result.newly_given_back == fresh);
        // Nothing given: no verdict; otherwise "complete" asks the caller to release.
        if (count != 0 && first < per_huge) check(result.complete == (m.count() == per_huge && !m.released));
        break;
      }
      case 1: {
        const auto result = bitmap.take_back(huge, first, count);
        uint64_t taken = 0;
        for (uint64_t i = first; i < end; ++i) {
          if (m.bits[i]) ++taken;
          m.bits[i] = false;
        }
        m.set -= taken;
        check(result.taken_back == taken);
        check(result.was_released == (taken != 0 && m.released));
        if (taken != 0) m.released = false;
        break;
      }
      default:
        bitmap.mark_released(huge);
        if (m.count() == per_huge) m.released = true;
        break;
    }
    uint64_t partial = 0;
    uint64_t released = 0;
    for (uint8_t h = 0; h < 4; ++h) {
      check(bitmap.given_back(h) == model[h].count());
      check(bitmap.released(h) == model[h].released);
      if (model[h].count() != 0 && model[h].count() < per_huge) ++partial;
      if (model[h].released) ++released;
    }
    check(bitmap.partial_count() == partial);
    check(bitmap.released_count() == released);
  }
}

// ---- MemoryReclaimer -------------------------------------------------------------------------

struct Region {
  uint64_t gpa;
  uint64_t pages;
  bool shared;  // a memfd mapping (fallocate PUNCH_HOLE) instead of anonymous memory
  uint8_t* host = nullptr;
  int fd = -1;
};

// A: anonymous at 0; B: a shared memfd at 1 MiB; C: anonymous ending at the last page a le32
// PFN can name (2^32 pages = 16 TiB).
std::array<Region, 3> regions = {{
    {0, 64, false},
    {0x100000, 32, true},
    {(uint64_t{1} << 44) - 16 * kPage, 16, false},
}};
skiff::GuestMemory* memory = nullptr;

void map_regions() {
  std::vector<skiff::GuestRegion> guest;
  for (Region& r : regions) {
    const size_t bytes = r.pages * kPage;
    if (r.shared) {
      r.fd = memfd_create("skiff-fuzz-balloon", MFD_CLOEXEC);
      check(r.fd >= 0 && ftruncate(r.fd, static_cast<off_t>(bytes)) == 0);
    }
    // SAFETY: fresh private/shared mappings owned by the fuzzer for the process lifetime.
    void* host = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, r.shared ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS,
                      r.fd, 0);
    check(host != MAP_FAILED);
    r.host = static_cast<uint8_t*>(host);
    guest.push_back(skiff::GuestRegion{r.gpa, bytes, r.host, r.fd, 0});
  }
  memory = new skiff::GuestMemory(skiff::GuestMemory::from_host_buffers(guest));
}

uint8_t pattern(uint64_t page) { return static_cast<uint8_t>(0x11 + page % 0xee); }

// Guest page numbers (gpa >> 12) inside RAM.
bool in_ram(uint64_t page) {
  for (const Region& r : regions) {
    if (page >= r.gpa / kPage && page - r.gpa / kPage < r.pages) return true;
  }
  return false;
}

uint64_t read_address(FuzzReader& in) {
  const uint8_t base = in.u8() % 4;
  if (base == 3) return in.u64();
  return regions[base].gpa + static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(in.u32())));
}

uint64_t read_length(FuzzReader& in) {
  if (in.u8() & 1) return in.u64();
  const uint64_t pages = in.u16();
  return pages * kPage + in.u16();
}

uint32_t read_pfn(FuzzReader& in) {
  const uint8_t base = in.u8() % 4;
  if (base == 3) return in.u32();
  return static_cast<uint32_t>(regions[base].gpa / kPage + static_cast<int16_t>(in.u16()));
}

void fuzz_reclaimer(FuzzReader& in) {
  for (const Region& r : regions) {
    for (uint64_t p = 0; p < r.pages; ++p) std::memset(r.host + p * kPage, pattern(r.gpa / kPage + p), kPage);
  }
  auto created = skiff::MemoryReclaimer::create(*memory);
  check(created.has_value());
  skiff::MemoryReclaimer& reclaimer = **created;
  check(reclaimer.backing_at(regions[1].gpa) == skiff::MemoryReclaimer::Backing::kSharedFile);

  std::set<uint64_t> given_back;  // pages that must read zero now
  uint64_t expect_discarded = 0;
  uint64_t expect_reused = 0;
  uint64_t expect_reported = 0;
  const size_t ops = in.u8() % 48;
  for (size_t op_index = 0; op_index < ops; ++op_index) {
    const uint8_t op = in.u8() % 6;
    if (op <= 2) {
      const uint64_t gpa = read_address(in);
      const uint64_t len = read_length(in);
      // Only the pages [gpa, gpa + len) covers completely.
      const unsigned __int128 end = static_cast<unsigned __int128>(gpa) + len;
      const unsigned __int128 first = (static_cast<unsigned __int128>(gpa) + kPage - 1) / kPage;
      const unsigned __int128 last = end / kPage;  // exclusive
      const skiff::ReclaimOutcome outcome = op == 0   ? reclaimer.discard(gpa, len)
                                            : op == 1 ? reclaimer.reuse(gpa, len)
                                                      : reclaimer.discard_free(gpa, len);
      uint64_t inside = 0;
      if (last > first) {
        for (const Region& r : regions) {
          const unsigned __int128 lo = std::max<unsigned __int128>(first, r.gpa / kPage);
          const unsigned __int128 hi = std::min<unsigned __int128>(last, r.gpa / kPage + r.pages);
          for (unsigned __int128 p = lo; p < hi; ++p) {
            ++inside;
            if (op != 1) given_back.insert(static_cast<uint64_t>(p));
          }
        }
        check(outcome.pages == inside);
        check(outcome.out_of_range == static_cast<uint64_t>(last - first) - inside);
      } else {
        check(outcome == skiff::ReclaimOutcome{});
      }
      (op == 0 ? expect_discarded : op == 1 ? expect_reused : expect_reported) += inside;
    } else if (op <= 4) {
      std::vector<uint32_t> pfns(in.u8() % 64);
      for (uint32_t& pfn : pfns) pfn = read_pfn(in);
      const skiff::ReclaimOutcome outcome = op == 3 ? reclaimer.discard_pfns(pfns) : reclaimer.reuse_pfns(pfns);
      const std::set<uint64_t> unique(pfns.begin(), pfns.end());
      uint64_t inside = 0;
      for (uint64_t page : unique) {
        if (!in_ram(page)) continue;
        ++inside;
        if (op == 3) given_back.insert(page);
      }
      check(outcome.pages == inside && outcome.out_of_range == unique.size() - inside);
      (op == 3 ? expect_discarded : expect_reused) += inside;
    } else {
      reclaimer.forget_given_back();
    }
  }

  const skiff::ReclaimCounters counters = reclaimer.counters();
  check(counters.pages_discarded == expect_discarded);
  check(counters.pages_reused == expect_reused);
  check(counters.pages_reported_free == expect_reported);
  check(counters.failures == 0);
  // Released pages read zero (anonymous: a fresh zero page; memfd: the hole); the others are
  // untouched.
  for (const Region& r : regions) {
    for (uint64_t p = 0; p < r.pages; ++p) {
      const uint64_t page = r.gpa / kPage + p;
      const uint8_t expected = given_back.count(page) ? 0 : pattern(page);
      const uint8_t* bytes = r.host + p * kPage;
      check(bytes[0] == expected && bytes[kPage - 1] == expected && bytes[kPage / 2] == expected);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  skiff::fuzz::quiet_logs_unless_verbose();
  map_regions();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzReader in(data, size);
  fuzz_stats(in);
  fuzz_bitmap(in);
  fuzz_reclaimer(in);
  return 0;
}
