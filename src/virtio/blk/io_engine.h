// SPDX-License-Identifier: Apache-2.0
// One interface for the ways a virtio-blk queue thread does disk I/O: io_uring
// (UringEngine) and synchronous preadv/pwritev (SyncEngine). Each queue thread owns one
// engine; an engine is used from that one thread only.
//
// Use:
//   engine.submit_read(tag, offset, iovecs);   // iovecs point straight into guest memory
//   ...                                         // more submissions
//   engine.kick();                              // hands the batch to the kernel
//   engine.reap(completions);                   // whenever completion_fd() is readable
//                                               // (and right after kick())
// Each submission produces exactly one completion carrying its tag and a result: the byte
// count for reads and writes (short only at end of file or on a persistent error: the
// engine resubmits the remainder of a short transfer and retries -EAGAIN), 0 for the
// other operations, or -errno.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "skiff/error.h"
#include "skiff/spec.h"
#include "virtio/blk/disk_backend.h"

namespace skiff::virtio {

struct IoCompletion {
  uint64_t tag = 0;
  int64_t result = 0;  // bytes transferred, 0, or -errno
};

class BlockIoEngine {
 public:
  virtual ~BlockIoEngine() = default;

  virtual std::string_view name() const = 0;
  // An fd that becomes readable when completions are waiting, or -1 when every submission
  // completes before kick() returns (reap() right after kick() collects them).
  virtual int completion_fd() const = 0;

  // The iovec array is copied; the buffers it points to must stay valid (and untouched by
  // the device) until the completion is reaped.
  virtual void submit_read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) = 0;
  virtual void submit_write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) = 0;
  // Durable before it completes: fdatasync (nothing for cache=unsafe).
  virtual void submit_flush(uint64_t tag) = 0;
  virtual void submit_discard(uint64_t tag, uint64_t offset, uint64_t len) = 0;
  virtual void submit_write_zeroes(uint64_t tag, uint64_t offset, uint64_t len, bool may_unmap) = 0;

  // Sends what was submitted since the last kick to the kernel.
  virtual void kick() = 0;
  // Appends the completions available now, without blocking.
  virtual void reap(std::vector<IoCompletion>& out) = 0;
  // True when reap() would find a completion; cheap (no system call), for polling.
  virtual bool has_completions() const { return false; }
  // Submissions that have not been reaped yet.
  virtual size_t in_flight() const = 0;
  // Blocks until every submission has completed and appends their completions (shutdown).
  virtual void drain(std::vector<IoCompletion>& out) = 0;
};

// preadv/pwritev and the DiskBackend operations, run on the calling thread.
class SyncEngine : public BlockIoEngine {
 public:
  explicit SyncEngine(std::shared_ptr<const DiskBackend> backend) : backend_(std::move(backend)) {}

  std::string_view name() const override { return "sync"; }
  int completion_fd() const override { return -1; }
  void submit_read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override;
  void submit_write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override;
  void submit_flush(uint64_t tag) override;
  void submit_discard(uint64_t tag, uint64_t offset, uint64_t len) override;
  void submit_write_zeroes(uint64_t tag, uint64_t offset, uint64_t len, bool may_unmap) override;
  void kick() override {}
  void reap(std::vector<IoCompletion>& out) override;
  size_t in_flight() const override { return done_.size(); }
  void drain(std::vector<IoCompletion>& out) override { reap(out); }

 private:
  std::shared_ptr<const DiskBackend> backend_;
  std::vector<IoCompletion> done_;
};

// Creates the engine `kind` asks for, with `depth` = the queue size. When io_uring cannot be
// set up (ENOSYS/EPERM under seccomp or an old kernel, EMFILE...), returns a SyncEngine
// and, if `warned` is not already set, logs one warning naming the disk and sets it.
std::unique_ptr<BlockIoEngine> make_engine(std::shared_ptr<const DiskBackend> backend,
                                           IoEngine kind, uint32_t depth, bool* warned);

// Moves `bytes` forward in an iovec array after a short transfer: drops the iovecs fully
// transferred and trims the first remaining one. Exposed for tests.
void advance_iovecs(std::vector<iovec>& iov, uint64_t bytes);

// The sum of the iovec lengths.
uint64_t iovec_bytes(std::span<const iovec> iov);

}  // namespace skiff::virtio
