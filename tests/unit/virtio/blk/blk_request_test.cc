// SPDX-License-Identifier: Apache-2.0
#include "virtio/blk/blk_request.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "unit/virtio/blk/blk_test_util.h"
#include "unit/virtio/virtqueue_fake.h"

namespace skiff::virtio {
namespace {

using testing::blk_header;
using testing::blk_segment;
using testing::concat;
using testing::VirtqueueFake;

constexpr uint64_t kCapacity = 1 << 20;  // 2048 sectors

BlkLimits test_limits() {
  BlkLimits limits;
  limits.capacity = kCapacity;
  limits.alignment = 512;
  limits.discard = true;
  limits.write_zeroes = true;
  limits.seg_max = 8;
  limits.size_max = 64 * 1024;
  limits.max_discard_sectors = 1024;
  limits.max_discard_seg = 4;
  limits.max_write_zeroes_sectors = 1024;
  limits.max_write_zeroes_seg = 4;
  return limits;
}

class BlkRequestTest : public ::testing::Test {
 protected:
  BlkRequest parse(const BlkLimits& limits) {
    auto chain = fake_.queue().pop();
    EXPECT_TRUE(chain.has_value());
    if (!chain) return {};
    BlkRequest request = parse_blk_request(*chain, limits);
    fake_.queue().add_used(std::move(*chain), 0);
    return request;
  }
  BlkRequest parse() { return parse(test_limits()); }

  VirtqueueFake fake_{16, testing::kFakeDefaultFeatures, 1 << 20};
};

TEST_F(BlkRequestTest, ParsesRead) {
  auto sent = fake_.chain().readable(blk_header(kBlkTypeIn, 8)).writable(1024).writable(1).add();
  BlkRequest request = parse();
  EXPECT_EQ(request.type, BlkRequestType::kIn);
  EXPECT_EQ(request.status, kBlkStatusOk) << request.error;
  EXPECT_TRUE(request.has_status);
  EXPECT_EQ(request.sector, 8u);
  EXPECT_EQ(request.offset(), 8u * 512);
  EXPECT_EQ(request.data_len, 1024u);
  ASSERT_EQ(request.data.size(), 1u);
  EXPECT_EQ(request.data[0], sent.writable[0]);
}

TEST_F(BlkRequestTest, ParsesWriteWithHeaderAndDataInOneBuffer) {
  // Any framing is allowed (§2.6.4): the payload starts 16 bytes into the first buffer.
  auto sent = fake_.chain().readable(concat(blk_header(kBlkTypeOut, 2), std::vector<uint8_t>(512, 0xab)))
                  .writable(1)
                  .add();
  BlkRequest request = parse();
  EXPECT_EQ(request.type, BlkRequestType::kOut);
  EXPECT_EQ(request.status, kBlkStatusOk) << request.error;
  ASSERT_EQ(request.data.size(), 1u);
  EXPECT_EQ(request.data[0].addr, sent.readable[0].addr + 16);
  EXPECT_EQ(request.data[0].len, 512u);
}

TEST_F(BlkRequestTest, StatusIsTheLastByteOfASharedBuffer) {
  auto sent = fake_.chain().readable(blk_header(kBlkTypeIn, 0)).writable(513).add();
  BlkRequest request = parse();
  EXPECT_EQ(request.status, kBlkStatusOk) << request.error;
  EXPECT_EQ(request.data_len, 512u);
  ASSERT_EQ(request.data.size(), 1u);
  EXPECT_EQ(request.data[0], (GuestBuffer{sent.writable[0].addr, 512}));
}

TEST_F(BlkRequestTest, SplitHeaderIsReassembled) {
  auto header = blk_header(kBlkTypeIn, 5);
  fake_.chain()
      .readable(std::span(header.data(), 7))
      .readable(std::span(header.data() + 7, 9))
      .writable(512)
      .writable(1)
      .add();
  BlkRequest request = parse();
  EXPECT_EQ(request.status, kBlkStatusOk) << request.error;
  EXPECT_EQ(request.sector, 5u);
}

TEST_F(BlkRequestTest, MalformedChainHasNoStatus) {
  fake_.chain().readable_at(fake_.ram_end() - 4, 16).writable(1).add();
  BlkRequest request = parse();
  EXPECT_FALSE(request.has_status);
  EXPECT_NE(request.error.find("malformed"), std::string::npos) << request.error;
}

TEST_F(BlkRequestTest, MissingStatusByteHasNoStatus) {
  fake_.chain().readable(blk_header(kBlkTypeFlush, 0)).add();
  BlkRequest request = parse();
  EXPECT_FALSE(request.has_status);
  EXPECT_NE(request.error.find("status"), std::string::npos);
}

TEST_F(BlkRequestTest, ShortHeaderIsIoErr) {
  fake_.chain().readable(std::vector<uint8_t>(15, 0)).writable(1).add();
  BlkRequest request = parse();
  EXPECT_TRUE(request.has_status);
  EXPECT_EQ(request.status, kBlkStatusIoErr);
  EXPECT_NE(request.error.find("header"), std::string::npos);
}

TEST_F(BlkRequestTest, UnknownTypesAreUnsupported) {
  for (uint32_t type : {2u, 3u, kBlkTypeGetLifetime, kBlkTypeSecureErase, 99u, 0xffffffffu}) {
    fake_.chain().readable(blk_header(type, 0)).writable(1).add();
    BlkRequest request = parse();
    EXPECT_EQ(request.type, BlkRequestType::kUnsupported) << type;
    EXPECT_EQ(request.status, kBlkStatusUnsupp) << type;
  }
}

TEST_F(BlkRequestTest, ReadOnlyRefusesWritesButNotReadsOrFlush) {
  BlkLimits limits = test_limits();
  limits.read_only = true;
  fake_.chain().readable(blk_header(kBlkTypeOut, 0)).readable(std::vector<uint8_t>(512, 1)).writable(1).add();
  EXPECT_EQ(parse(limits).status, kBlkStatusIoErr);
  fake_.chain().readable(blk_header(kBlkTypeWriteZeroes, 0)).readable(blk_segment(0, 1, 0)).writable(1).add();
  EXPECT_EQ(parse(limits).status, kBlkStatusIoErr);
  fake_.chain().readable(blk_header(kBlkTypeIn, 0)).writable(512).writable(1).add();
  EXPECT_EQ(parse(limits).status, kBlkStatusOk);
  fake_.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  EXPECT_EQ(parse(limits).status, kBlkStatusOk);
  fake_.chain().readable(blk_header(kBlkTypeGetId, 0)).writable(20).writable(1).add();
  EXPECT_EQ(parse(limits).type, BlkRequestType::kGetId);
}

TEST_F(BlkRequestTest, OutOfRangeSectorsAreIoErr) {
  const uint64_t last = kCapacity / 512 - 1;
  fake_.chain().readable(blk_header(kBlkTypeIn, last)).writable(512).writable(1).add();
  EXPECT_EQ(parse().status, kBlkStatusOk);
  fake_.chain().readable(blk_header(kBlkTypeIn, last)).writable(1024).writable(1).add();
  EXPECT_EQ(parse().status, kBlkStatusIoErr);
  fake_.chain().readable(blk_header(kBlkTypeIn, kCapacity / 512)).writable(512).writable(1).add();
  EXPECT_EQ(parse().status, kBlkStatusIoErr);
  // sector * 512 wraps around 2^64 for these: still refused.
  for (uint64_t sector : {std::numeric_limits<uint64_t>::max(), uint64_t{1} << 55, (uint64_t{1} << 55) + 1}) {
    fake_.chain().readable(blk_header(kBlkTypeOut, sector)).readable(std::vector<uint8_t>(512, 0)).writable(1).add();
    BlkRequest request = parse();
    EXPECT_EQ(request.status, kBlkStatusIoErr) << sector;
    EXPECT_NE(request.error.find("capacity"), std::string::npos) << request.error;
  }
}

TEST_F(BlkRequestTest, DataMustBeWholeSectors) {
  fake_.chain().readable(blk_header(kBlkTypeIn, 0)).writable(100).writable(1).add();
  EXPECT_EQ(parse().status, kBlkStatusIoErr);
  fake_.chain().readable(blk_header(kBlkTypeOut, 0)).readable(std::vector<uint8_t>(513, 0)).writable(1).add();
  EXPECT_EQ(parse().status, kBlkStatusIoErr);
}

TEST_F(BlkRequestTest, LogicalBlockAlignmentIsEnforced) {
  BlkLimits limits = test_limits();
  limits.alignment = 4096;
  fake_.chain().readable(blk_header(kBlkTypeIn, 8)).writable(4096).writable(1).add();
  EXPECT_EQ(parse(limits).status, kBlkStatusOk);
  fake_.chain().readable(blk_header(kBlkTypeIn, 1)).writable(4096).writable(1).add();
  EXPECT_EQ(parse(limits).status, kBlkStatusIoErr);
  fake_.chain().readable(blk_header(kBlkTypeIn, 8)).writable(512).writable(1).add();
  EXPECT_EQ(parse(limits).status, kBlkStatusIoErr);
}

TEST_F(BlkRequestTest, SegmentLimitsAreEnforced) {
  BlkLimits limits = test_limits();
  limits.seg_max = 2;
  fake_.chain().readable(blk_header(kBlkTypeIn, 0)).writable(512).writable(512).writable(512).writable(1).add();
  BlkRequest request = parse(limits);
  EXPECT_EQ(request.status, kBlkStatusIoErr);
  EXPECT_NE(request.error.find("seg_max"), std::string::npos);
  limits.seg_max = 8;
  limits.size_max = 1024;
  fake_.chain().readable(blk_header(kBlkTypeIn, 0)).writable(2048).writable(1).add();
  request = parse(limits);
  EXPECT_EQ(request.status, kBlkStatusIoErr);
  EXPECT_NE(request.error.find("size_max"), std::string::npos);
}

TEST_F(BlkRequestTest, ParsesDiscardSegments) {
  fake_.chain()
      .readable(blk_header(kBlkTypeDiscard, 0))
      .readable(concat(blk_segment(0, 8, 0), blk_segment(100, 16, 0)))
      .writable(1)
      .add();
  BlkRequest request = parse();
  EXPECT_EQ(request.type, BlkRequestType::kDiscard);
  EXPECT_EQ(request.status, kBlkStatusOk) << request.error;
  ASSERT_EQ(request.ranges.size(), 2u);
  EXPECT_EQ(request.ranges[0], (BlkRange{0, 8 * 512, false}));
  EXPECT_EQ(request.ranges[1], (BlkRange{100 * 512, 16 * 512, false}));
}

TEST_F(BlkRequestTest, DiscardErrors) {
  struct Case {
    std::vector<uint8_t> payload;
    uint8_t status;
    const char* why;
  };
  const std::vector<Case> cases = {
      {blk_segment(0, 8, kBlkSegmentFlagUnmap), kBlkStatusUnsupp, "unmap on discard"},
      {blk_segment(0, 8, 2), kBlkStatusUnsupp, "reserved flag"},
      {{}, kBlkStatusIoErr, "no segment"},
      {std::vector<uint8_t>(20, 0), kBlkStatusIoErr, "partial segment"},
      {concat(concat(blk_segment(0, 1, 0), blk_segment(1, 1, 0)),
              concat(concat(blk_segment(2, 1, 0), blk_segment(3, 1, 0)), blk_segment(4, 1, 0))),
       kBlkStatusIoErr, "5 segments > max 4"},
      {blk_segment(0, 1025, 0), kBlkStatusIoErr, "more sectors than max"},
      {blk_segment(2040, 16, 0), kBlkStatusIoErr, "past the end"},
      {blk_segment(std::numeric_limits<uint64_t>::max(), 1, 0), kBlkStatusIoErr, "wrapping sector"},
  };
  for (const Case& c : cases) {
    auto builder = fake_.chain();
    builder.readable(blk_header(kBlkTypeDiscard, 0));
    if (!c.payload.empty()) builder.readable(c.payload);
    builder.writable(1).add();
    EXPECT_EQ(parse().status, c.status) << c.why;
  }
}

TEST_F(BlkRequestTest, DiscardNotOfferedIsUnsupported) {
  BlkLimits limits = test_limits();
  limits.discard = false;
  fake_.chain().readable(blk_header(kBlkTypeDiscard, 0)).readable(blk_segment(0, 8, 0)).writable(1).add();
  EXPECT_EQ(parse(limits).status, kBlkStatusUnsupp);
  limits.write_zeroes = false;
  fake_.chain().readable(blk_header(kBlkTypeWriteZeroes, 0)).readable(blk_segment(0, 8, 0)).writable(1).add();
  EXPECT_EQ(parse(limits).status, kBlkStatusUnsupp);
}

TEST_F(BlkRequestTest, WriteZeroesAcceptsUnmap) {
  fake_.chain()
      .readable(blk_header(kBlkTypeWriteZeroes, 0))
      .readable(blk_segment(16, 8, kBlkSegmentFlagUnmap))
      .writable(1)
      .add();
  BlkRequest request = parse();
  EXPECT_EQ(request.status, kBlkStatusOk) << request.error;
  ASSERT_EQ(request.ranges.size(), 1u);
  EXPECT_EQ(request.ranges[0], (BlkRange{16 * 512, 8 * 512, true}));
  fake_.chain().readable(blk_header(kBlkTypeWriteZeroes, 0)).readable(blk_segment(0, 8, 4)).writable(1).add();
  EXPECT_EQ(parse().status, kBlkStatusUnsupp);
  fake_.chain().readable(blk_header(kBlkTypeWriteZeroes, 0)).readable(blk_segment(0, 2000, 0)).writable(1).add();
  EXPECT_EQ(parse().status, kBlkStatusIoErr);
}

TEST(BlkRequestHelpers, SectorRangeOk) {
  EXPECT_TRUE(sector_range_ok(0, 0, 0));
  EXPECT_TRUE(sector_range_ok(0, 512, 512));
  EXPECT_FALSE(sector_range_ok(0, 513, 512));
  EXPECT_TRUE(sector_range_ok(1, 0, 512));
  EXPECT_FALSE(sector_range_ok(2, 0, 512));
  EXPECT_FALSE(sector_range_ok(1, 1, 512));
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  EXPECT_FALSE(sector_range_ok(max, 512, max));
  EXPECT_FALSE(sector_range_ok(0, max, 1 << 20));
  EXPECT_TRUE(sector_range_ok(max >> 9, 0, max));
}

TEST(BlkRequestHelpers, SliceBuffers) {
  const std::vector<GuestBuffer> buffers = {{0x1000, 16}, {0x2000, 100}, {0x3000, 10}};
  EXPECT_EQ(slice_buffers(buffers, 16, 110),
            (std::vector<GuestBuffer>{{0x2000, 100}, {0x3000, 10}}));
  EXPECT_EQ(slice_buffers(buffers, 10, 10), (std::vector<GuestBuffer>{{0x100a, 6}, {0x2000, 4}}));
  EXPECT_EQ(slice_buffers(buffers, 125, 10), (std::vector<GuestBuffer>{{0x3009, 1}}));
  EXPECT_TRUE(slice_buffers(buffers, 200, 10).empty());
  EXPECT_TRUE(slice_buffers(buffers, 0, 0).empty());
}

}  // namespace
}  // namespace skiff::virtio
