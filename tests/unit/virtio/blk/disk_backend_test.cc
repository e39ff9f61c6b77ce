// SPDX-License-Identifier: Apache-2.0
#include "virtio/blk/disk_backend.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>

#include "unit/virtio/blk/blk_test_util.h"

namespace skiff::virtio {
namespace {

using testing::disk_spec;
using testing::pattern;
using testing::TempImage;

TEST(DiskBackend, OpensAFileAndDescribesIt) {
  TempImage image(4 << 20);
  auto backend = DiskBackend::open(disk_spec(image.path()));
  ASSERT_TRUE(backend) << backend.error().message();
  const DiskInfo& info = (*backend)->info();
  EXPECT_EQ(info.capacity, 4u << 20);
  EXPECT_EQ(info.logical_block_size, 512u);
  EXPECT_GE(info.physical_block_size, 512u);
  EXPECT_FALSE(info.block_device);
  EXPECT_FALSE(info.direct);  // files default to writeback
  EXPECT_EQ(info.cache, DiskCache::kWriteback);
  EXPECT_TRUE(info.discard_supported);
  EXPECT_NE((*backend)->label().find(image.path()), std::string::npos);
}

TEST(DiskBackend, CacheDefaultsDependOnTheKindOfDisk) {
  DiskSpec spec = disk_spec("/x");
  EXPECT_EQ(effective_cache(spec, true), DiskCache::kNone);
  EXPECT_EQ(effective_cache(spec, false), DiskCache::kWriteback);
  spec.cache = DiskCache::kUnsafe;
  EXPECT_EQ(effective_cache(spec, true), DiskCache::kUnsafe);
}

TEST(DiskBackend, MissingFileIsAConfigErrorNamingIt) {
  auto backend = DiskBackend::open(disk_spec("/var/tmp/skiff-no-such-image.raw", "boot"));
  ASSERT_FALSE(backend);
  EXPECT_EQ(backend.error().kind(), ErrorKind::kConfig);
  EXPECT_NE(backend.error().message().find("/var/tmp/skiff-no-such-image.raw"), std::string::npos);
  EXPECT_NE(backend.error().message().find("\"boot\""), std::string::npos);
  EXPECT_NE(backend.error().message().find("does not exist"), std::string::npos);
}

TEST(DiskBackend, RefusesSizesThatAreNotWholeSectors) {
  TempImage image(1000);
  auto backend = DiskBackend::open(disk_spec(image.path()));
  ASSERT_FALSE(backend);
  EXPECT_EQ(backend.error().kind(), ErrorKind::kConfig);
  EXPECT_NE(backend.error().message().find("multiple of 512"), std::string::npos);
}

TEST(DiskBackend, RefusesWhatIsNeitherFileNorBlockDevice) {
  auto backend = DiskBackend::open(disk_spec("/dev/null"));
  ASSERT_FALSE(backend);
  EXPECT_EQ(backend.error().kind(), ErrorKind::kConfig);
  EXPECT_NE(backend.error().message().find("not a regular file or block device"), std::string::npos);
}

TEST(DiskBackend, SecondWriterIsRefused) {
  TempImage image(1 << 20);
  auto first = DiskBackend::open(disk_spec(image.path(), "a"));
  ASSERT_TRUE(first) << first.error().message();
  auto second = DiskBackend::open(disk_spec(image.path(), "b"));
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("another process uses this disk"), std::string::npos)
      << second.error().message();
  EXPECT_NE(second.error().message().find(image.path()), std::string::npos);
  // A shared reader is refused too while a writer holds it...
  DiskSpec shared = disk_spec(image.path(), "c");
  shared.read_only = true;
  shared.shared = true;
  EXPECT_FALSE(DiskBackend::open(shared));
  first->reset();
  // ...and once the writer is gone, shared readers coexist.
  auto reader1 = DiskBackend::open(shared);
  ASSERT_TRUE(reader1) << reader1.error().message();
  auto reader2 = DiskBackend::open(shared);
  ASSERT_TRUE(reader2) << reader2.error().message();
  EXPECT_FALSE(DiskBackend::open(disk_spec(image.path(), "d")));
}

TEST(DiskBackend, ReadOnlyOpensWithoutWriteAccess) {
  TempImage image(1 << 20);
  DiskSpec spec = disk_spec(image.path());
  spec.read_only = true;
  auto backend = DiskBackend::open(spec);
  ASSERT_TRUE(backend) << backend.error().message();
  EXPECT_TRUE((*backend)->info().read_only);
  uint8_t byte = 1;
  EXPECT_LT(pwrite((*backend)->fd(), &byte, 1, 0), 0);
  EXPECT_EQ(errno, EBADF);
}

TEST(DiskBackend, DiscardPunchesHoles) {
  TempImage image(1 << 20);
  image.write(0, pattern(1 << 20, 3));
  const uint64_t before = image.allocated_blocks();
  ASSERT_GE(before, (1u << 20) / 512);
  auto backend = DiskBackend::open(disk_spec(image.path()));
  ASSERT_TRUE(backend) << backend.error().message();
  EXPECT_EQ((*backend)->discard(0, 1 << 20), 0);
  EXPECT_LT(image.allocated_blocks(), before);
  EXPECT_EQ(image.read(4096, 512), std::vector<uint8_t>(512, 0));
}

TEST(DiskBackend, WriteZeroesReadsBackZeros) {
  TempImage image(1 << 20);
  const std::vector<uint8_t> original = pattern(1 << 20, 9);
  image.write(0, original);
  auto backend = DiskBackend::open(disk_spec(image.path()));
  ASSERT_TRUE(backend) << backend.error().message();
  EXPECT_EQ((*backend)->write_zeroes(8192, 8192, false), 0);
  EXPECT_EQ(image.read(8192, 8192), std::vector<uint8_t>(8192, 0));
  EXPECT_EQ(image.read(8192 - 512, 512), std::vector<uint8_t>(original.begin() + 8192 - 512, original.begin() + 8192));
  const uint64_t before = image.allocated_blocks();
  EXPECT_EQ((*backend)->write_zeroes(65536, 65536, true), 0);
  EXPECT_EQ(image.read(65536, 65536), std::vector<uint8_t>(65536, 0));
  EXPECT_LT(image.allocated_blocks(), before);  // unmap allowed: the range was deallocated
}

TEST(DiskBackend, Flush) {
  TempImage image(1 << 20);
  auto backend = DiskBackend::open(disk_spec(image.path()));
  ASSERT_TRUE(backend) << backend.error().message();
  EXPECT_EQ((*backend)->flush(), 0);
  DiskSpec unsafe = disk_spec(image.path(), "u");
  unsafe.cache = DiskCache::kUnsafe;
  backend->reset();
  auto unsafe_backend = DiskBackend::open(unsafe);
  ASSERT_TRUE(unsafe_backend);
  EXPECT_EQ((*unsafe_backend)->flush(), 0);
}

TEST(DiskBackend, DirectIoOnAFile) {
  TempImage image(1 << 20);
  DiskSpec spec = disk_spec(image.path());
  spec.cache = DiskCache::kNone;
  auto backend = DiskBackend::open(spec);
  if (!backend && backend.error().sys_errno() == EINVAL) {
    GTEST_SKIP() << "/var/tmp does not support O_DIRECT: " << backend.error().message();
  }
  ASSERT_TRUE(backend) << backend.error().message();
  const DiskInfo& info = (*backend)->info();
  EXPECT_TRUE(info.direct);
  EXPECT_GE(info.logical_block_size, 512u);
  EXPECT_EQ(fcntl((*backend)->fd(), F_GETFL) & O_DIRECT, O_DIRECT);
}

TEST(DiskBackend, LoopDeviceWith4KiBBlocks) {
  testing::LoopDevice loop(8 << 20);
  if (loop.device().empty()) GTEST_SKIP() << loop.why();
  DiskSpec spec = disk_spec(loop.device());
  auto backend = DiskBackend::open(spec);
  ASSERT_TRUE(backend) << backend.error().message();
  const DiskInfo& info = (*backend)->info();
  EXPECT_TRUE(info.block_device);
  EXPECT_TRUE(info.direct);  // cache=none is the default for block devices
  EXPECT_EQ(info.capacity, 8u << 20);
  EXPECT_EQ(info.logical_block_size, 4096u);
  EXPECT_EQ(info.physical_block_size, 4096u);
  // O_EXCL: a second (exclusive) opener is refused with an explanation.
  auto second = DiskBackend::open(disk_spec(loop.device(), "other"));
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("exclusively"), std::string::npos) << second.error().message();
  // Write-zeroes and discard work on the block device.
  EXPECT_EQ((*backend)->write_zeroes(0, 4096, false), 0);
  if (info.discard_supported) {
    EXPECT_EQ((*backend)->discard(4096, 4096), 0);
  }
  EXPECT_EQ((*backend)->flush(), 0);
}

}  // namespace
}  // namespace skiff::virtio
