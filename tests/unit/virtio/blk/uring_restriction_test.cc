// SPDX-License-Identifier: Apache-2.0
// virtio-blk's io_uring rings are restricted to the requests the engine makes
// (restrict_block_io_ring): what a blk thread taken over by the guest could submit.
#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

#include "unit/virtio/blk/blk_test_util.h"
#include "virtio/blk/uring_engine.h"

namespace skiff::virtio {
namespace {

class RestrictedRing : public ::testing::Test {
 protected:
  void SetUp() override {
    io_uring_params params{};
    params.flags = IORING_SETUP_R_DISABLED;
    const int ret = io_uring_queue_init_params(8, &ring_, &params);
    if (ret < 0) GTEST_SKIP() << "io_uring is not available here: " << std::strerror(-ret);
    ready_ = true;
    auto restricted = restrict_block_io_ring(&ring_);
    ASSERT_TRUE(restricted) << restricted.error().message();
    fd_ = ::open(image_.path().c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);
    if (ready_) io_uring_queue_exit(&ring_);
  }

  // Submits the prepared request and returns its completion's result.
  int complete() {
    EXPECT_EQ(io_uring_submit(&ring_), 1);
    io_uring_cqe* cqe = nullptr;
    EXPECT_EQ(io_uring_wait_cqe(&ring_, &cqe), 0);
    if (cqe == nullptr) return -9999;
    const int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    return res;
  }

  testing::TempImage image_{1 << 16};
  io_uring ring_{};
  bool ready_ = false;
  int fd_ = -1;
};

TEST_F(RestrictedRing, TheEnginesRequestsGoThrough) {
  std::vector<uint8_t> data(4096, 0x5a);
  iovec iov{data.data(), data.size()};
  io_uring_prep_writev(io_uring_get_sqe(&ring_), fd_, &iov, 1, 0);
  EXPECT_EQ(complete(), 4096);
  std::vector<uint8_t> back(4096, 0);
  iovec back_iov{back.data(), back.size()};
  io_uring_prep_readv(io_uring_get_sqe(&ring_), fd_, &back_iov, 1, 0);
  EXPECT_EQ(complete(), 4096);
  EXPECT_EQ(back, data);
  io_uring_prep_fsync(io_uring_get_sqe(&ring_), fd_, IORING_FSYNC_DATASYNC);
  EXPECT_EQ(complete(), 0);
}

TEST_F(RestrictedRing, AnythingElseIsRefused) {
  // Opening a file, making a socket, a no-op: refused by the ring itself (EACCES).
  io_uring_prep_openat(io_uring_get_sqe(&ring_), AT_FDCWD, "/etc/hostname", O_RDONLY, 0);
  EXPECT_EQ(complete(), -EACCES);
  io_uring_prep_nop(io_uring_get_sqe(&ring_));
  EXPECT_EQ(complete(), -EACCES);
  io_uring_prep_close(io_uring_get_sqe(&ring_), fd_);
  EXPECT_EQ(complete(), -EACCES);
  // No registration after the ring is enabled either (e.g. new files or buffers).
  EXPECT_EQ(io_uring_register_files(&ring_, &fd_, 1), -EACCES);
}

TEST_F(RestrictedRing, RestrictingTwiceFails) {
  // Restrictions are set once, on a disabled ring; an enabled ring cannot be re-opened up.
  EXPECT_FALSE(restrict_block_io_ring(&ring_));
}

}  // namespace
}  // namespace skiff::virtio
