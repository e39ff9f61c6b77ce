// SPDX-License-Identifier: Apache-2.0
#include "memory/guest_memory.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "common/hugepage_pool_lock.h"

namespace skiff {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// Two heap-backed regions with a hole between them, like RAM around the 32-bit MMIO hole.
class GuestMemoryTest : public ::testing::Test {
 protected:
  GuestMemoryTest() : low_(0x10000, 0), high_(0x2000, 0) {
    GuestRegion regions[] = {{0, low_.size(), low_.data()}, {0x100000, high_.size(), high_.data()}};
    memory_ = GuestMemory::from_host_buffers(regions);
  }
  std::vector<uint8_t> low_;
  std::vector<uint8_t> high_;
  GuestMemory memory_;
};

TEST_F(GuestMemoryTest, ReadWriteRoundTrip) {
  ASSERT_TRUE(memory_.write_obj<uint32_t>(0x100, 0xdeadbeef));
  EXPECT_EQ(*memory_.read_obj<uint32_t>(0x100), 0xdeadbeefu);
  EXPECT_EQ(low_[0x100], 0xef);
  ASSERT_TRUE(memory_.write_obj<uint64_t>(0x101ff8, 7));  // last 8 bytes of the high region
  EXPECT_EQ(*memory_.read_obj<uint64_t>(0x101ff8), 7u);
}

TEST_F(GuestMemoryTest, RangeCrossingRegionEndIsRejected) {
  EXPECT_FALSE(memory_.read_obj<uint32_t>(0xfffe));            // 2 bytes past low end
  EXPECT_FALSE(memory_.write_obj<uint64_t>(0x101ffc, 1));      // 4 bytes past high end
  EXPECT_FALSE(memory_.slice(0x20000, 1));                     // in the hole
  EXPECT_FALSE(memory_.slice(0xffff, 0x100002 - 0xffff));      // spans the hole
}

TEST_F(GuestMemoryTest, OverflowAtTopOfAddressSpaceIsRejected) {
  auto s = memory_.slice(kMax, 2);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("wraps"), std::string::npos);
  EXPECT_FALSE(memory_.slice(0x100, kMax));
  EXPECT_FALSE(memory_.slice(kMax - 1, 1));
  EXPECT_FALSE(memory_.read_cstring(kMax - 2, 16));
  EXPECT_FALSE(checked_end(kMax, 1));
  EXPECT_EQ(*checked_end(kMax - 1, 1), kMax);
}

TEST_F(GuestMemoryTest, EmptyRangesAtEdges) {
  EXPECT_TRUE(memory_.contains(0x10000, 0));   // end of low region
  EXPECT_FALSE(memory_.contains(0x10001, 0));  // in the hole
  EXPECT_TRUE(memory_.contains(0, 0x10000));   // whole low region
  EXPECT_FALSE(memory_.contains(0, 0x10001));
}

TEST_F(GuestMemoryTest, FillAndCString) {
  ASSERT_TRUE(memory_.fill(0x200, 'a', 3));
  ASSERT_TRUE(memory_.write_obj<uint8_t>(0x203, 0));
  EXPECT_EQ(*memory_.read_cstring(0x200, 16), "aaa");
  ASSERT_TRUE(memory_.fill(0x300, 'b', 32));
  EXPECT_FALSE(memory_.read_cstring(0x300, 16));  // not terminated within the limit
  EXPECT_FALSE(memory_.fill(0xfff0, 0, 0x20));
}

TEST_F(GuestMemoryTest, FindRegion) {
  ASSERT_NE(memory_.find_region(0x100fff), nullptr);
  EXPECT_EQ(memory_.find_region(0x100fff)->gpa, 0x100000u);
  EXPECT_EQ(memory_.find_region(0x10000), nullptr);
  EXPECT_EQ(memory_.total_size(), 0x12000u);
}

TEST(GuestMemorySplit, RamAroundHole) {
  constexpr uint64_t kGiB = 1ull << 30;
  auto small = split_ram_around_hole(512ull << 20, 3 * kGiB, 4 * kGiB);
  ASSERT_EQ(small.size(), 1u);
  EXPECT_EQ(small[0].gpa, 0u);
  EXPECT_EQ(small[0].size, 512ull << 20);
  auto exact = split_ram_around_hole(3 * kGiB, 3 * kGiB, 4 * kGiB);
  ASSERT_EQ(exact.size(), 1u);
  auto big = split_ram_around_hole(6 * kGiB, 3 * kGiB, 4 * kGiB);
  ASSERT_EQ(big.size(), 2u);
  EXPECT_EQ(big[1].gpa, 4 * kGiB);
  EXPECT_EQ(big[1].size, 3 * kGiB);
}

TEST(GuestMemoryCreate, AnonymousMappingIsUsable) {
  RamRange ranges[] = {{0, 2 << 20}, {0x400000, 1 << 20}};
  auto memory = GuestMemory::create(ranges, MemoryOptions{});
  ASSERT_TRUE(memory) << memory.error().message();
  ASSERT_TRUE(memory->write_obj<uint64_t>(0x400000 + 8, 42));
  EXPECT_EQ(*memory->read_obj<uint64_t>(0x400008), 42u);
  EXPECT_EQ(memory->regions().size(), 2u);
}

TEST(GuestMemoryCreate, SharedMemfdHasFileOffsets) {
  RamRange ranges[] = {{0, 1 << 20}, {0x200000, 1 << 20}};
  MemoryOptions options;
  options.backing = MemoryBacking::kMemfd;
  options.prefault = true;
  auto memory = GuestMemory::create(ranges, options);
  ASSERT_TRUE(memory) << memory.error().message();
  ASSERT_GE(memory->regions()[0].fd, 0);
  EXPECT_EQ(memory->regions()[1].fd_offset, 1u << 20);
}

TEST(GuestMemoryCreate, RejectsBadRanges) {
  RamRange unaligned[] = {{0, 1000}};
  auto a = GuestMemory::create(unaligned, MemoryOptions{});
  ASSERT_FALSE(a);
  EXPECT_NE(a.error().message().find("multiple"), std::string::npos);
  RamRange overlapping[] = {{0, 0x2000}, {0x1000, 0x1000}};
  EXPECT_FALSE(GuestMemory::create(overlapping, MemoryOptions{}));
  RamRange wrapping[] = {{kMax & ~0xfffull, 0x2000}};
  EXPECT_FALSE(GuestMemory::create(wrapping, MemoryOptions{}));
  RamRange empty[] = {{0, 0}};
  EXPECT_FALSE(GuestMemory::create(empty, MemoryOptions{}));
}

TEST(GuestMemoryCreate, HugetlbSizeMustBeMultipleOfPage) {
  RamRange ranges[] = {{0, 3 << 20}};  // 3 MiB is not a multiple of 2 MiB
  MemoryOptions options;
  options.backing = MemoryBacking::kHugetlb2M;
  auto memory = GuestMemory::create(ranges, options);
  ASSERT_FALSE(memory);
  EXPECT_EQ(memory.error().kind(), ErrorKind::kConfig);
}

TEST(GuestMemoryCreate, HugetlbShortPoolSaysHowToReserve) {
  testing_support::HugepagePoolLock pool_lock;  // no other test may grow the pool meanwhile
  auto pool = read_hugepage_pool(2 << 20);
  if (!pool) GTEST_SKIP() << "no 2 MiB hugepage pool on this kernel: " << pool.error().message();
  // Ask for more pages than the pool has free (without touching the pool).
  uint64_t pages = pool->available() + 4;
  RamRange ranges[] = {{0, pages * (2ull << 20)}};
  MemoryOptions options;
  options.backing = MemoryBacking::kHugetlb2M;
  auto memory = GuestMemory::create(ranges, options);
  ASSERT_FALSE(memory);
  EXPECT_EQ(memory.error().kind(), ErrorKind::kHost);
  EXPECT_NE(memory.error().message().find(std::to_string(pages)), std::string::npos)
      << memory.error().message();
  EXPECT_NE(memory.error().message().find("nr_hugepages"), std::string::npos);
}

}  // namespace
}  // namespace skiff
