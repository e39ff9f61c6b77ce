// SPDX-License-Identifier: Apache-2.0
#include "memory/memory_reclaim.h"

#include <gtest/gtest.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/hugepage_pool_lock.h"
#include "state/state_blob.h"

namespace skiff {
namespace {

constexpr uint64_t kPage = kReclaimPageSize;
constexpr uint64_t kHuge2M = 2ull << 20;
constexpr uint64_t kPagesPer2M = kHuge2M / kPage;

// Which of `pages` pages starting at `host` are resident.
std::vector<bool> resident(const uint8_t* host, uint64_t pages) {
  std::vector<unsigned char> vec(pages);
  // SAFETY: `host` is the start of a mapping at least `pages` pages long owned by the test.
  EXPECT_EQ(mincore(const_cast<uint8_t*>(host), pages * kPage, vec.data()), 0) << std::strerror(errno);
  std::vector<bool> out(pages);
  for (uint64_t i = 0; i < pages; ++i) out[i] = (vec[i] & 1) != 0;
  return out;
}

uint64_t resident_count(const uint8_t* host, uint64_t pages) {
  uint64_t count = 0;
  for (bool r : resident(host, pages)) count += r ? 1 : 0;
  return count;
}

void touch(uint8_t* host, uint64_t pages) {
  for (uint64_t i = 0; i < pages; ++i) host[i * kPage] = static_cast<uint8_t>(i + 1);
}

// An mmap'd mapping released in the destructor.
struct Mapping {
  Mapping(uint64_t bytes, int flags, int fd = -1) : size(bytes) {
    // SAFETY: a fresh mapping owned by this object, unmapped in the destructor.
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, fd, 0);
    host = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~Mapping() {
    if (host != nullptr) munmap(host, size);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  uint8_t* host = nullptr;
  uint64_t size = 0;
};

// ---- HugePageBitmap: pure bookkeeping ---------------------------------------------------------

TEST(HugePageBitmapTest, CompletesOnlyWhenEveryPageIsGivenBack) {
  HugePageBitmap bitmap(kPagesPer2M);
  auto first = bitmap.give_back(7, 0, 511);
  EXPECT_EQ(first.newly_given_back, 511u);
  EXPECT_FALSE(first.complete);
  EXPECT_EQ(bitmap.partial_count(), 1u);
  auto last = bitmap.give_back(7, 511, 1);
  EXPECT_EQ(last.newly_given_back, 1u);
  EXPECT_TRUE(last.complete);
  bitmap.mark_released(7);
  EXPECT_TRUE(bitmap.released(7));
  EXPECT_EQ(bitmap.partial_count(), 0u);
  EXPECT_EQ(bitmap.released_count(), 1u);
  // Giving back again what is already released does nothing.
  auto again = bitmap.give_back(7, 3, 10);
  EXPECT_EQ(again.newly_given_back, 0u);
  EXPECT_FALSE(again.complete);
}

TEST(HugePageBitmapTest, DuplicatesCountOnce) {
  HugePageBitmap bitmap(kPagesPer2M);
  EXPECT_EQ(bitmap.give_back(0, 5, 1).newly_given_back, 1u);
  EXPECT_EQ(bitmap.give_back(0, 5, 1).newly_given_back, 0u);
  EXPECT_EQ(bitmap.give_back(0, 4, 3).newly_given_back, 2u);
  EXPECT_EQ(bitmap.given_back(0), 3u);
  EXPECT_EQ(bitmap.given_back(1), 0u);
}

TEST(HugePageBitmapTest, TakeBackOfReleasedPageAsksForAllocation) {
  HugePageBitmap bitmap(kPagesPer2M);
  ASSERT_TRUE(bitmap.give_back(2, 0, kPagesPer2M).complete);  // whole page at once
  bitmap.mark_released(2);
  auto taken = bitmap.take_back(2, 100, 1);
  EXPECT_EQ(taken.taken_back, 1u);
  EXPECT_TRUE(taken.was_released);
  EXPECT_FALSE(bitmap.released(2));
  EXPECT_EQ(bitmap.given_back(2), kPagesPer2M - 1);
  EXPECT_EQ(bitmap.partial_count(), 1u);
  // Taking back a page not given back changes nothing.
  auto nothing = bitmap.take_back(2, 100, 1);
  EXPECT_EQ(nothing.taken_back, 0u);
  EXPECT_FALSE(nothing.was_released);
  // Inflate again: complete again, released again.
  EXPECT_TRUE(bitmap.give_back(2, 100, 1).complete);
}

TEST(HugePageBitmapTest, EmptyEntriesAreDroppedAndRangesClamped) {
  HugePageBitmap bitmap(kPagesPer2M);
  bitmap.give_back(1, 510, 100);  // clamped to the huge page's last two pages
  EXPECT_EQ(bitmap.given_back(1), 2u);
  EXPECT_EQ(bitmap.take_back(1, 0, kPagesPer2M).taken_back, 2u);
  EXPECT_EQ(bitmap.partial_count(), 0u);
  EXPECT_EQ(bitmap.give_back(1, kPagesPer2M, 1).newly_given_back, 0u);  // past the end
  EXPECT_EQ(bitmap.partial_count(), 0u);
  bitmap.give_back(3, 0, 1);
  bitmap.mark_released(3);  // not complete: refused
  EXPECT_FALSE(bitmap.released(3));
  bitmap.clear();
  EXPECT_EQ(bitmap.given_back(3), 0u);
}

TEST(HugePageBitmapTest, OneGigabytePages) {
  constexpr uint64_t kPagesPer1G = (1ull << 30) / kPage;
  HugePageBitmap bitmap(kPagesPer1G);
  EXPECT_FALSE(bitmap.give_back(0, 0, kPagesPer1G - 1).complete);
  EXPECT_TRUE(bitmap.give_back(0, kPagesPer1G - 1, 1).complete);
}

// ---- HugePageBitmap state ---------------------------------------------------------------------

state::StateBlob round_trip(const state::StateBlob& blob) {
  auto decoded = state::StateBlob::decode(blob.encode());
  EXPECT_TRUE(decoded) << (decoded ? "" : decoded.error().message());
  return decoded ? *decoded : state::StateBlob("broken", 1);
}

// Partial, complete-and-released and complete-not-released huge pages.
HugePageBitmap sample_bitmap() {
  HugePageBitmap bitmap(kPagesPer2M);
  bitmap.give_back(3, 7, 100);
  bitmap.give_back(5, 0, kPagesPer2M);
  bitmap.mark_released(5);
  bitmap.give_back(9, 0, kPagesPer2M - 1);
  bitmap.give_back(9, kPagesPer2M - 1, 1);
  return bitmap;
}

TEST(HugePageBitmapStateTest, RestoredBitmapBehavesTheSame) {
  HugePageBitmap original = sample_bitmap();
  HugePageBitmap restored(kPagesPer2M);
  auto ok = restored.restore_state(round_trip(original.save_state()), 16);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(restored.save_state(), original.save_state());
  for (uint64_t huge : {3, 5, 9}) {
    EXPECT_EQ(restored.given_back(huge), original.given_back(huge)) << huge;
    EXPECT_EQ(restored.released(huge), original.released(huge)) << huge;
  }
  EXPECT_EQ(restored.partial_count(), 1u);
  EXPECT_EQ(restored.released_count(), 1u);
  // The same next steps give the same answers: completing the partial one, taking a page
  // of the released one back.
  for (HugePageBitmap* bitmap : {&original, &restored}) {
    EXPECT_EQ(bitmap->give_back(3, 0, 7).newly_given_back, 7u);
    EXPECT_FALSE(bitmap->give_back(3, 200, 5).complete);
    EXPECT_TRUE(bitmap->take_back(5, 1, 1).was_released);
    EXPECT_TRUE(bitmap->give_back(9, 0, 1).complete) << "complete and not released yet";
  }
  EXPECT_EQ(restored.save_state(), original.save_state());
}

TEST(HugePageBitmapStateTest, BadBlobsAreRefusedAndChangeNothing) {
  const state::StateBlob good = sample_bitmap().save_state();
  auto expect_refused = [](const state::StateBlob& blob, uint64_t huge_pages, const std::string& what) {
    HugePageBitmap bitmap(kPagesPer2M);
    bitmap.give_back(1, 0, 1);
    auto result = bitmap.restore_state(blob, huge_pages);
    ASSERT_FALSE(result) << blob.describe();
    EXPECT_NE(result.error().message().find(what), std::string::npos) << result.error().message();
    EXPECT_EQ(bitmap.given_back(1), 1u) << "changed by a refused blob";
  };
  expect_refused(state::StateBlob("virtqueue", 1), 16, "hugepage-bitmap");
  expect_refused(good, 9, "\"huge\"");  // huge page 9 beyond a region of 9 huge pages
  expect_refused(state::StateBlob(good).put("pages_per_huge_page", 262144), 16, "pages_per_huge_page");
  expect_refused(state::StateBlob(good).put_u64s("huge", std::vector<uint64_t>{5, 3, 9}), 16, "strictly increasing");
  expect_refused(state::StateBlob(good).put_u64s("given_back", std::vector<uint64_t>{99, 512, 512}), 16,
                 "do not describe");
  expect_refused(state::StateBlob(good).put_u64s("given_back", std::vector<uint64_t>{0, 512, 512}), 16,
                 "no page given back");
  expect_refused(state::StateBlob(good).put_u64s("given_back", std::vector<uint64_t>{100, 513, 512}), 16,
                 "\"given_back\"");
  expect_refused(state::StateBlob(good).put_u64s("released", std::vector<uint64_t>{1, 1, 0}), 16,
                 "released with only 100");
  expect_refused(state::StateBlob(good).put_u64s("released", std::vector<uint64_t>{0, 2, 0}), 16, "\"released\"");
  expect_refused(state::StateBlob(good).put_u64s("released", std::vector<uint64_t>{0, 1}), 16, "differ in length");
  expect_refused(state::StateBlob(good).put_u64s("bits", std::vector<uint64_t>{}), 16, "fewer bit words");
  std::vector<uint64_t> extra = good.u64s("bits", 100).value();
  extra.push_back(0);
  expect_refused(state::StateBlob(good).put_u64s("bits", extra), 16, "more bit words");
}

// ---- Anonymous memory -------------------------------------------------------------------------

// Two anonymous regions with a hole between them, like RAM around the 32-bit MMIO hole:
// low [0, 64 pages), high [kHighBase, +16 pages).
class AnonymousReclaimTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kLowPages = 64;
  static constexpr uint64_t kHighPages = 16;
  static constexpr uint64_t kHighBase = 0x100000;  // page 256

  void SetUp() override {
    ASSERT_NE(low_.host, nullptr);
    ASSERT_NE(high_.host, nullptr);
    GuestRegion regions[] = {{0, low_.size, low_.host}, {kHighBase, high_.size, high_.host}};
    memory_ = GuestMemory::from_host_buffers(regions);
    auto reclaimer = MemoryReclaimer::create(memory_);
    ASSERT_TRUE(reclaimer) << reclaimer.error().message();
    reclaimer_ = std::move(*reclaimer);
    touch(low_.host, kLowPages);
    touch(high_.host, kHighPages);
  }

  Mapping low_{kLowPages * kPage, MAP_PRIVATE | MAP_ANONYMOUS};
  Mapping high_{kHighPages * kPage, MAP_PRIVATE | MAP_ANONYMOUS};
  GuestMemory memory_;
  std::unique_ptr<MemoryReclaimer> reclaimer_;
};

TEST_F(AnonymousReclaimTest, StateCarriesTheCountersOnly) {
  const uint32_t pfns[] = {1, 2, 3, 1000};
  reclaimer_->discard_pfns(pfns);
  auto saved = round_trip(reclaimer_->save_state());
  auto fresh = MemoryReclaimer::create(memory_);
  ASSERT_TRUE(fresh);
  auto ok = (*fresh)->restore_state(saved);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ((*fresh)->counters(), reclaimer_->counters());
  EXPECT_EQ((*fresh)->counters().pages_discarded, 3u);
  EXPECT_EQ((*fresh)->counters().out_of_range_pages, 1u);
  // A hugetlbfs region this RAM does not have, or a missing counter, is refused.
  state::StateBlob region("hugetlb-region", 1);
  region.put("first_page", 0).put_blob("bitmap", HugePageBitmap(kPagesPer2M).save_state());
  EXPECT_FALSE((*fresh)->restore_state(state::StateBlob(saved).put_blobs("hugetlb_regions", std::vector{region})));
  state::StateBlob missing("memory-reclaimer", 1);
  missing.put("pages_discarded", 1);
  EXPECT_FALSE((*fresh)->restore_state(missing));
  EXPECT_EQ((*fresh)->counters().pages_discarded, 3u);
}

TEST_F(AnonymousReclaimTest, DiscardReleasesTouchedPages) {
  EXPECT_EQ(reclaimer_->backing_at(0), MemoryReclaimer::Backing::kAnonymous);
  ASSERT_EQ(resident_count(low_.host, kLowPages), kLowPages);
  const uint32_t pfns[] = {3, 4, 5, 10};
  EXPECT_EQ(reclaimer_->discard_pfns(pfns), (ReclaimOutcome{4, 0}));
  auto after = resident(low_.host, kLowPages);
  for (uint64_t i = 0; i < kLowPages; ++i) {
    bool released = i == 3 || i == 4 || i == 5 || i == 10;
    EXPECT_EQ(after[i], !released) << "page " << i;
  }
  EXPECT_EQ(low_.host[3 * kPage], 0) << "a released anonymous page reads back as zero";
  auto counters = reclaimer_->counters();
  EXPECT_EQ(counters.pages_discarded, 4u);
  EXPECT_EQ(counters.bytes_released, 4 * kPage);
  EXPECT_EQ(counters.failures, 0u);
}

TEST_F(AnonymousReclaimTest, PfnsAtTheEdgesOfRam) {
  const uint32_t last_low = kLowPages - 1;
  const uint32_t first_past_low = kLowPages;          // in the hole
  const uint32_t in_hole = 200;
  const uint32_t first_high = kHighBase / kPage;
  const uint32_t last_high = first_high + kHighPages - 1;
  const uint32_t first_past_high = first_high + kHighPages;
  const uint32_t largest = std::numeric_limits<uint32_t>::max();
  const uint32_t pfns[] = {0, last_low, first_past_low, in_hole, first_high, last_high, first_past_high, largest};
  EXPECT_EQ(reclaimer_->discard_pfns(pfns), (ReclaimOutcome{4, 4}));
  auto low = resident(low_.host, kLowPages);
  EXPECT_FALSE(low[0]);
  EXPECT_FALSE(low[last_low]);
  EXPECT_TRUE(low[1]);
  auto high = resident(high_.host, kHighPages);
  EXPECT_FALSE(high[0]);
  EXPECT_FALSE(high[kHighPages - 1]);
  EXPECT_TRUE(high[1]);
  EXPECT_EQ(reclaimer_->counters().out_of_range_pages, 4u);
}

TEST_F(AnonymousReclaimTest, DuplicatePfnsAreHarmless) {
  const uint32_t pfns[] = {7, 7, 7, 8, 7, 8};
  EXPECT_EQ(reclaimer_->discard_pfns(pfns), (ReclaimOutcome{2, 0}));
  EXPECT_EQ(reclaimer_->counters().bytes_released, 2 * kPage);
  EXPECT_EQ(resident_count(low_.host, kLowPages), kLowPages - 2);
}

TEST_F(AnonymousReclaimTest, RangesAcrossTheHoleAndOverflow) {
  // The last 2 low pages, the hole (192 pages) and the first 2 high pages.
  EXPECT_EQ(reclaimer_->discard((kLowPages - 2) * kPage, kHighBase + 2 * kPage - (kLowPages - 2) * kPage),
            (ReclaimOutcome{4, kHighBase / kPage - kLowPages}));
  EXPECT_EQ(resident_count(low_.host, kLowPages), kLowPages - 2);
  EXPECT_EQ(resident_count(high_.host, kHighPages), kHighPages - 2);
  // A range that wraps around the address space touches nothing and cannot overflow.
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  auto wrapped = reclaimer_->discard(max - kPage + 1, 4 * kPage);
  EXPECT_EQ(wrapped.pages, 0u);
  EXPECT_EQ(reclaimer_->discard(0, max).pages, kLowPages + kHighPages);
  EXPECT_EQ(reclaimer_->discard(5, 0), (ReclaimOutcome{}));
}

TEST_F(AnonymousReclaimTest, UnalignedRangesOnlyTouchWholePages) {
  // [page 1 + 1 byte, page 4 + 1 byte) covers pages 2 and 3 completely.
  EXPECT_EQ(reclaimer_->discard(kPage + 1, 3 * kPage), (ReclaimOutcome{2, 0}));
  auto r = resident(low_.host, 6);
  EXPECT_TRUE(r[1]);
  EXPECT_FALSE(r[2]);
  EXPECT_FALSE(r[3]);
  EXPECT_TRUE(r[4]);
  EXPECT_EQ(reclaimer_->discard(kPage + 1, kPage).pages, 0u);  // no whole page inside
}

TEST_F(AnonymousReclaimTest, InflateDeflateInflate) {
  const uint32_t pfns[] = {20, 21, 22};
  reclaimer_->discard_pfns(pfns);
  EXPECT_EQ(resident_count(low_.host + 20 * kPage, 3), 0u);
  EXPECT_EQ(reclaimer_->reuse_pfns(pfns), (ReclaimOutcome{3, 0}));
  low_.host[21 * kPage] = 0x5a;  // the guest uses the page again
  EXPECT_EQ(low_.host[21 * kPage], 0x5a);
  EXPECT_EQ(resident_count(low_.host + 20 * kPage, 3), 1u);
  reclaimer_->discard_pfns(pfns);
  EXPECT_EQ(resident_count(low_.host + 20 * kPage, 3), 0u);
  auto counters = reclaimer_->counters();
  EXPECT_EQ(counters.pages_discarded, 6u);
  EXPECT_EQ(counters.pages_reused, 3u);
}

TEST_F(AnonymousReclaimTest, FreePageReportsReleasePages) {
  EXPECT_EQ(reclaimer_->discard_free(32 * kPage, 8 * kPage), (ReclaimOutcome{8, 0}));
  EXPECT_EQ(resident_count(low_.host + 32 * kPage, 8), 0u);
  EXPECT_EQ(reclaimer_->counters().pages_reported_free, 8u);
}

TEST(MemoryReclaimerCreateTest, RefusesUnalignedRegions) {
  std::vector<uint8_t> heap(3 * kPage);
  uint8_t* unaligned = heap.data() + ((reinterpret_cast<uintptr_t>(heap.data()) % kPage) == kPage - 1 ? 2 : 1);
  GuestRegion region{0, kPage, unaligned};
  GuestMemory memory = GuestMemory::from_host_buffers(std::span(&region, 1));
  auto reclaimer = MemoryReclaimer::create(memory);
  ASSERT_FALSE(reclaimer);
  EXPECT_NE(reclaimer.error().message().find("not 4 KiB aligned"), std::string::npos) << reclaimer.error().message();
}

// ---- Shared memfd -----------------------------------------------------------------------------

uint64_t allocated_bytes(int fd) {
  struct stat st {};
  EXPECT_EQ(fstat(fd, &st), 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

TEST(SharedMemfdReclaimTest, PunchesHolesInTheFile) {
  constexpr uint64_t kPages = 32;
  int fd = static_cast<int>(syscall(SYS_memfd_create, "reclaim-test", MFD_CLOEXEC));
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(ftruncate(fd, kPages * kPage), 0);
  {
    Mapping map(kPages * kPage, MAP_SHARED, fd);
    ASSERT_NE(map.host, nullptr);
    touch(map.host, kPages);
    ASSERT_EQ(allocated_bytes(fd), kPages * kPage);
    GuestRegion region{0x200000, kPages * kPage, map.host, fd, 0};
    GuestMemory memory = GuestMemory::from_host_buffers(std::span(&region, 1));
    auto reclaimer = MemoryReclaimer::create(memory);
    ASSERT_TRUE(reclaimer) << reclaimer.error().message();
    EXPECT_EQ((*reclaimer)->backing_at(0x200000), MemoryReclaimer::Backing::kSharedFile);
    const uint32_t pfns[] = {0x200, 0x201, 0x210, 0x21f};
    EXPECT_EQ((*reclaimer)->discard_pfns(pfns), (ReclaimOutcome{4, 0}));
    EXPECT_EQ(allocated_bytes(fd), (kPages - 4) * kPage);
    EXPECT_EQ(resident_count(map.host, 2), 0u) << "punching a hole unmaps the pages too";
    EXPECT_EQ((*reclaimer)->reuse_pfns(pfns).pages, 4u);
    map.host[0] = 1;
    EXPECT_EQ(allocated_bytes(fd), (kPages - 3) * kPage);
    // A hole reads back as zero (and shmem allocates a page for it).
    EXPECT_EQ(map.host[0x10 * kPage], 0);
  }
  close(fd);
}

// ---- Hugetlbfs (2 MiB) ------------------------------------------------------------------------

// Reserves a few 2 MiB pages for the test (as root) and gives them back afterwards.
class HugetlbReclaimTest : public ::testing::Test {
 protected:
  // First member: held from before SetUp() until after TearDown().
  testing_support::HugepagePoolLock pool_lock_;
  static constexpr uint64_t kHugePages = 3;
  static constexpr const char* kPoolFile = "/proc/sys/vm/nr_hugepages";

  void SetUp() override {
    auto pool = read_hugepage_pool(kHuge2M);
    if (!pool) GTEST_SKIP() << "no 2 MiB hugetlb pool: " << pool.error().message();
    old_total_ = pool->total;
    if (pool->available() < kHugePages) {
      std::ofstream out(kPoolFile);
      out << pool->total + kHugePages - pool->available();
      out.close();
      changed_pool_ = true;
      pool = read_hugepage_pool(kHuge2M);
      if (!out || !pool || pool->available() < kHugePages) {
        GTEST_SKIP() << "cannot reserve " << kHugePages << " free 2 MiB hugepages (need root and free memory; "
                     << "pool has " << (pool ? pool->available() : 0) << ")";
      }
    }
    fd_ = static_cast<int>(syscall(SYS_memfd_create, "reclaim-hugetlb-test", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB));
    if (fd_ < 0) GTEST_SKIP() << "memfd_create(MFD_HUGETLB): " << std::strerror(errno);
    ASSERT_EQ(ftruncate(fd_, kHugePages * kHuge2M), 0) << std::strerror(errno);
    map_ = std::make_unique<Mapping>(kHugePages * kHuge2M, MAP_SHARED, fd_);
    ASSERT_NE(map_->host, nullptr) << std::strerror(errno);
    for (uint64_t i = 0; i < kHugePages; ++i) map_->host[i * kHuge2M] = 1;  // allocate every huge page
    GuestRegion region{kBase, kHugePages * kHuge2M, map_->host, fd_, 0};
    memory_ = GuestMemory::from_host_buffers(std::span(&region, 1));
    auto reclaimer = MemoryReclaimer::create(memory_);
    ASSERT_TRUE(reclaimer) << reclaimer.error().message();
    reclaimer_ = std::move(*reclaimer);
  }

  void TearDown() override {
    reclaimer_.reset();
    memory_ = GuestMemory();
    map_.reset();
    if (fd_ >= 0) close(fd_);
    if (changed_pool_) {
      std::ofstream out(kPoolFile);
      out << old_total_;
    }
  }

  static uint64_t free_huge_pages() {
    auto pool = read_hugepage_pool(kHuge2M);
    return pool ? pool->free : 0;
  }
  // 4 KiB page numbers of huge page `huge`, pages [first, first + count).
  static std::vector<uint32_t> pfns(uint64_t huge, uint64_t first, uint64_t count) {
    std::vector<uint32_t> out;
    for (uint64_t i = first; i < first + count; ++i) {
      out.push_back(static_cast<uint32_t>((kBase + huge * kHuge2M) / kPage + i));
    }
    return out;
  }

  static constexpr uint64_t kBase = 0x40000000;  // 1 GiB
  uint64_t old_total_ = 0;
  bool changed_pool_ = false;
  int fd_ = -1;
  std::unique_ptr<Mapping> map_;
  GuestMemory memory_;
  std::unique_ptr<MemoryReclaimer> reclaimer_;
};

TEST_F(HugetlbReclaimTest, PartialHugePageStaysWholeOneGoesBackToThePool) {
  EXPECT_EQ(reclaimer_->backing_at(kBase), MemoryReclaimer::Backing::kHugetlb);
  const uint64_t free_before = free_huge_pages();
  // All but one 4 KiB page of huge page 0: nothing can go back yet.
  EXPECT_EQ(reclaimer_->discard_pfns(pfns(0, 0, kPagesPer2M - 1)).pages, kPagesPer2M - 1);
  EXPECT_EQ(free_huge_pages(), free_before);
  auto partial = reclaimer_->counters();
  EXPECT_EQ(partial.partial_huge_pages, 1u);
  EXPECT_EQ(partial.huge_pages_released, 0u);
  EXPECT_EQ(partial.bytes_released, 0u);
  // The last one completes it: the huge page returns to the pool.
  EXPECT_EQ(reclaimer_->discard_pfns(pfns(0, kPagesPer2M - 1, 1)).pages, 1u);
  EXPECT_EQ(free_huge_pages(), free_before + 1);
  auto whole = reclaimer_->counters();
  EXPECT_EQ(whole.partial_huge_pages, 0u);
  EXPECT_EQ(whole.huge_pages_released, 1u);
  EXPECT_EQ(whole.bytes_released, kHuge2M);
  // Huge page 1 given back in part stays resident.
  reclaimer_->discard_pfns(pfns(1, 7, 100));
  EXPECT_EQ(free_huge_pages(), free_before + 1);
  EXPECT_EQ(reclaimer_->counters().partial_huge_pages, 1u);
}

TEST_F(HugetlbReclaimTest, InflateDeflateInflate) {
  const uint64_t free_before = free_huge_pages();
  auto all = pfns(2, 0, kPagesPer2M);
  reclaimer_->discard_pfns(all);
  EXPECT_EQ(free_huge_pages(), free_before + 1);
  // Deflating one page brings the whole huge page back, usable at once.
  const uint32_t one[] = {all[10]};
  EXPECT_EQ(reclaimer_->reuse_pfns(one).pages, 1u);
  EXPECT_EQ(free_huge_pages(), free_before);
  EXPECT_EQ(reclaimer_->counters().huge_pages_repopulated, 1u);
  map_->host[2 * kHuge2M + 10 * kPage] = 0x77;
  EXPECT_EQ(map_->host[2 * kHuge2M + 10 * kPage], 0x77);
  // Inflating that page again completes the huge page again.
  reclaimer_->discard_pfns(one);
  EXPECT_EQ(free_huge_pages(), free_before + 1);
  EXPECT_EQ(reclaimer_->counters().huge_pages_released, 2u);
  EXPECT_EQ(reclaimer_->counters().failures, 0u);
}

TEST_F(HugetlbReclaimTest, FreePageReportsReleaseOnlyCoveredHugePages) {
  const uint64_t free_before = free_huge_pages();
  // Half a huge page reported free: nothing, and nothing remembered.
  reclaimer_->discard_free(kBase, kHuge2M / 2);
  EXPECT_EQ(free_huge_pages(), free_before);
  EXPECT_EQ(reclaimer_->counters().partial_huge_pages, 0u);
  // Balloon pages of the other half do not complete it with the stale report.
  reclaimer_->discard_pfns(pfns(0, kPagesPer2M / 2, kPagesPer2M / 2));
  EXPECT_EQ(free_huge_pages(), free_before);
  // A report covering a whole huge page releases it.
  reclaimer_->discard_free(kBase + kHuge2M - kPage, kHuge2M + 2 * kPage);
  EXPECT_EQ(free_huge_pages(), free_before + 1);
}

TEST_F(HugetlbReclaimTest, StateCarriesPartialHugePagesToANewReclaimer) {
  const uint64_t free_before = free_huge_pages();
  reclaimer_->discard_pfns(pfns(0, 0, kPagesPer2M - 1));
  reclaimer_->discard_pfns(pfns(1, 0, kPagesPer2M));  // released
  EXPECT_EQ(free_huge_pages(), free_before + 1);
  auto saved = round_trip(reclaimer_->save_state());
  // A reclaimer built afresh over the same RAM (as a restored VM's would be) knows nothing
  // until it is restored.
  auto fresh = MemoryReclaimer::create(memory_);
  ASSERT_TRUE(fresh);
  auto ok = (*fresh)->restore_state(saved);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ((*fresh)->counters(), reclaimer_->counters());
  EXPECT_EQ((*fresh)->counters().partial_huge_pages, 1u);
  // The last page of huge page 0 completes it on the restored reclaimer: back to the pool.
  (*fresh)->discard_pfns(pfns(0, kPagesPer2M - 1, 1));
  EXPECT_EQ(free_huge_pages(), free_before + 2);
  // Deflating a page of the released huge page 1 allocates it again.
  const auto one = pfns(1, 3, 1);
  (*fresh)->reuse_pfns(one);
  EXPECT_EQ((*fresh)->counters().huge_pages_repopulated, 1u);
  EXPECT_EQ(free_huge_pages(), free_before + 1);
}

TEST_F(HugetlbReclaimTest, ForgetAfterResetDropsPartialState) {
  reclaimer_->discard_pfns(pfns(0, 0, kPagesPer2M - 1));
  EXPECT_EQ(reclaimer_->counters().partial_huge_pages, 1u);
  reclaimer_->forget_given_back();
  EXPECT_EQ(reclaimer_->counters().partial_huge_pages, 0u);
  const uint64_t free_before = free_huge_pages();
  reclaimer_->discard_pfns(pfns(0, kPagesPer2M - 1, 1));  // the new guest's single page
  EXPECT_EQ(free_huge_pages(), free_before);
}

}  // namespace
}  // namespace skiff
