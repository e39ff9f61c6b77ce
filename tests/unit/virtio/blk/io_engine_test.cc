// SPDX-License-Identifier: Apache-2.0
#include "virtio/blk/io_engine.h"

#include <poll.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "unit/virtio/blk/blk_test_util.h"
#include "virtio/blk/uring_engine.h"

namespace skiff::virtio {
namespace {

using testing::disk_spec;
using testing::pattern;
using testing::TempImage;

// Waits for `count` completions, polling the completion fd when the engine has one.
std::vector<IoCompletion> collect(BlockIoEngine& engine, size_t count) {
  std::vector<IoCompletion> out;
  engine.kick();
  for (int i = 0; i < 5000 && out.size() < count; ++i) {
    engine.reap(out);
    if (out.size() >= count) break;
    if (engine.completion_fd() >= 0) {
      pollfd p{engine.completion_fd(), POLLIN, 0};
      poll(&p, 1, 1);
    }
  }
  return out;
}

class EngineTest : public ::testing::TestWithParam<IoEngine> {
 protected:
  void SetUp() override {
    auto backend = DiskBackend::open(disk_spec(image_.path()));
    ASSERT_TRUE(backend) << backend.error().message();
    backend_ = std::move(*backend);
    bool warned = false;
    engine_ = make_engine(backend_, GetParam(), 64, &warned);
    ASSERT_NE(engine_, nullptr);
    if (GetParam() == IoEngine::kIoUring && warned) GTEST_SKIP() << "io_uring is not available here";
    EXPECT_EQ(engine_->name(), GetParam() == IoEngine::kIoUring ? "io_uring" : "sync");
  }

  TempImage image_{1 << 20};
  std::shared_ptr<DiskBackend> backend_;
  std::unique_ptr<BlockIoEngine> engine_;
};

TEST_P(EngineTest, WritesAndReadsThroughSplitIovecs) {
  std::vector<uint8_t> data = pattern(12288, 1);
  std::vector<iovec> iov = {{data.data(), 512}, {data.data() + 512, 3584}, {data.data() + 4096, 8192}};
  engine_->submit_write(7, 4096, iov);
  auto done = collect(*engine_, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].tag, 7u);
  EXPECT_EQ(done[0].result, 12288);
  EXPECT_EQ(image_.read(4096, 12288), data);

  std::vector<uint8_t> back(12288, 0);
  std::vector<iovec> read_iov = {{back.data(), 4096}, {back.data() + 4096, 8192}};
  engine_->submit_read(8, 4096, read_iov);
  done = collect(*engine_, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].tag, 8u);
  EXPECT_EQ(done[0].result, 12288);
  EXPECT_EQ(back, data);
  EXPECT_EQ(engine_->in_flight(), 0u);
}

TEST_P(EngineTest, ReadPastTheEndIsShort) {
  std::vector<uint8_t> back(8192, 0xee);
  iovec iov{back.data(), back.size()};
  engine_->submit_read(1, (1 << 20) - 4096, std::span(&iov, 1));
  auto done = collect(*engine_, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result, 4096);
}

TEST_P(EngineTest, ManyRequestsInFlight) {
  constexpr int kCount = 48;
  std::vector<std::vector<uint8_t>> buffers;
  for (int i = 0; i < kCount; ++i) buffers.push_back(pattern(4096, static_cast<uint8_t>(i)));
  for (int i = 0; i < kCount; ++i) {
    iovec iov{buffers[i].data(), 4096};
    engine_->submit_write(100 + i, static_cast<uint64_t>(i) * 4096, std::span(&iov, 1));
  }
  auto done = collect(*engine_, kCount);
  ASSERT_EQ(done.size(), static_cast<size_t>(kCount));
  std::map<uint64_t, int64_t> by_tag;
  for (const auto& c : done) by_tag[c.tag] = c.result;
  for (int i = 0; i < kCount; ++i) EXPECT_EQ(by_tag[100 + i], 4096) << i;
  for (int i = 0; i < kCount; ++i) EXPECT_EQ(image_.read(static_cast<uint64_t>(i) * 4096, 4096), buffers[i]);
}

TEST_P(EngineTest, FlushDiscardAndWriteZeroes) {
  image_.write(0, pattern(1 << 20, 5));
  const uint64_t before = image_.allocated_blocks();
  engine_->submit_flush(1);
  engine_->submit_discard(2, 0, 256 * 1024);
  engine_->submit_write_zeroes(3, 512 * 1024, 8192, false);
  engine_->submit_write_zeroes(4, 768 * 1024, 65536, true);
  auto done = collect(*engine_, 4);
  ASSERT_EQ(done.size(), 4u);
  for (const auto& c : done) EXPECT_EQ(c.result, 0) << "tag " << c.tag;
  EXPECT_LT(image_.allocated_blocks(), before);
  EXPECT_EQ(image_.read(0, 4096), std::vector<uint8_t>(4096, 0));
  EXPECT_EQ(image_.read(512 * 1024, 8192), std::vector<uint8_t>(8192, 0));
  EXPECT_EQ(image_.read(768 * 1024, 65536), std::vector<uint8_t>(65536, 0));
}

TEST_P(EngineTest, DrainWaitsForEverything) {
  std::vector<uint8_t> data = pattern(65536, 2);
  for (int i = 0; i < 8; ++i) {
    iovec iov{data.data(), data.size()};
    engine_->submit_write(i, static_cast<uint64_t>(i) * 65536, std::span(&iov, 1));
  }
  engine_->kick();
  std::vector<IoCompletion> done;
  engine_->drain(done);
  EXPECT_EQ(done.size(), 8u);
  EXPECT_EQ(engine_->in_flight(), 0u);
}

TEST_P(EngineTest, ErrorsComeBackAsErrno) {
  // A read-only backend: writes fail with EBADF.
  DiskSpec spec = disk_spec(image_.path(), "ro");
  spec.read_only = true;
  spec.shared = true;
  engine_.reset();
  backend_.reset();
  auto backend = DiskBackend::open(spec);
  ASSERT_TRUE(backend) << backend.error().message();
  std::shared_ptr<DiskBackend> ro = std::move(*backend);
  auto engine = make_engine(ro, GetParam(), 8, nullptr);
  std::vector<uint8_t> data(512, 1);
  iovec iov{data.data(), data.size()};
  engine->submit_write(1, 0, std::span(&iov, 1));
  auto done = collect(*engine, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result, -EBADF);
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineTest, ::testing::Values(IoEngine::kSync, IoEngine::kIoUring),
                         [](const ::testing::TestParamInfo<IoEngine>& param_info) {
                           return param_info.param == IoEngine::kSync ? std::string("Sync") : std::string("IoUring");
                         });

TEST(EngineHelpers, AdvanceIovecs) {
  uint8_t buffer[100];
  std::vector<iovec> iov = {{buffer, 10}, {buffer + 10, 20}, {buffer + 30, 30}};
  advance_iovecs(iov, 15);
  ASSERT_EQ(iov.size(), 2u);
  EXPECT_EQ(iov[0].iov_base, buffer + 15);
  EXPECT_EQ(iov[0].iov_len, 15u);
  advance_iovecs(iov, 15);
  ASSERT_EQ(iov.size(), 1u);
  EXPECT_EQ(iov[0].iov_base, buffer + 30);
  advance_iovecs(iov, 30);
  EXPECT_TRUE(iov.empty());
  EXPECT_EQ(iovec_bytes(std::vector<iovec>{{buffer, 3}, {buffer, 4}}), 7u);
}

TEST(UringEngine, CreatesARingWithACompletionEventfd) {
  TempImage image(1 << 20);
  auto backend = DiskBackend::open(disk_spec(image.path()));
  ASSERT_TRUE(backend) << backend.error().message();
  auto engine = UringEngine::create(std::shared_ptr<DiskBackend>(std::move(*backend)), 256);
  if (!engine) GTEST_SKIP() << "io_uring unavailable: " << engine.error().message();
  EXPECT_GE((*engine)->completion_fd(), 0);
  EXPECT_EQ((*engine)->in_flight(), 0u);
}

}  // namespace
}  // namespace skiff::virtio
