// SPDX-License-Identifier: Apache-2.0
// The io_uring engine: reads and writes as IORING_OP_READV/WRITEV straight into guest
// memory, flush as IORING_OP_FSYNC(DATASYNC), file discard/write-zeroes as
// IORING_OP_FALLOCATE when the kernel has it; block-device discard/zeroout (ioctls) run
// synchronously. Completions are signalled on an eventfd registered with the ring
// (io_uring_register_eventfd), which the queue thread's EventLoop watches.
#pragma once

#include <liburing.h>

#include <deque>
#include <memory>
#include <vector>

#include "common/unique_fd.h"
#include "virtio/blk/io_engine.h"

namespace skiff::virtio {

// Restricts a ring created with IORING_SETUP_R_DISABLED to the requests virtio-blk makes
// (readv, writev, fsync, fallocate) and no further registrations, then enables it.
// io_uring requests run in kernel workers that no seccomp filter sees, so without this a
// blk thread taken over by the guest could open files or sockets through its own ring.
Result<void> restrict_block_io_ring(io_uring* ring);

class UringEngine : public BlockIoEngine {
 public:
  // `depth`: submission ring entries (the virtqueue size: at most that many requests are in
  // flight, and a request with more operations waits for ring space at kick()).
  static Result<std::unique_ptr<UringEngine>> create(std::shared_ptr<const DiskBackend> backend,
                                                     uint32_t depth);
  ~UringEngine() override;
  UringEngine(const UringEngine&) = delete;
  UringEngine& operator=(const UringEngine&) = delete;

  std::string_view name() const override { return "io_uring"; }
  int completion_fd() const override { return event_.get(); }
  void submit_read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override;
  void submit_write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override;
  void submit_flush(uint64_t tag) override;
  void submit_discard(uint64_t tag, uint64_t offset, uint64_t len) override;
  void submit_write_zeroes(uint64_t tag, uint64_t offset, uint64_t len, bool may_unmap) override;
  void kick() override;
  void reap(std::vector<IoCompletion>& out) override;
  // Completions in the ring, or finished resubmissions waiting to be handed out.
  bool has_completions() const override;
  size_t in_flight() const override { return in_flight_ + done_.size(); }
  void drain(std::vector<IoCompletion>& out) override;

 private:
  enum class OpKind { kRead, kWrite, kFlush, kFallocate };
  struct Op {
    uint64_t tag = 0;
    OpKind kind = OpKind::kRead;
    uint64_t offset = 0;
    uint64_t len = 0;  // fallocate length
    int mode = 0;      // fallocate mode
    bool discard = false;    // kFallocate: a discard (EOPNOTSUPP means "done")
    bool may_unmap = false;  // kFallocate: a write-zeroes with unmap allowed
    std::vector<iovec> iov;  // what is left to transfer
    uint64_t transferred = 0;
  };

  UringEngine(std::shared_ptr<const DiskBackend> backend, UniqueFd event);
  uint32_t new_op(uint64_t tag, OpKind kind);
  void free_op(uint32_t index);
  // Queues an SQE for op `index` (into the backlog when the ring is full).
  void queue_op(uint32_t index);
  bool prepare(uint32_t index);
  void handle_cqe(uint32_t index, int result);
  void complete(uint32_t index, int64_t result);
  void process_cqes();

  std::shared_ptr<const DiskBackend> backend_;
  io_uring ring_{};
  bool ring_ready_ = false;
  UniqueFd event_;
  bool fallocate_supported_ = false;
  std::vector<Op> ops_;
  std::vector<uint32_t> free_ops_;
  std::deque<uint32_t> backlog_;   // ops waiting for a free SQE
  size_t in_flight_ = 0;           // ops submitted or queued, not yet completed
  unsigned unsubmitted_ = 0;       // SQEs prepared since the last io_uring_submit
  std::vector<IoCompletion> done_;  // completed, not yet reaped
};

}  // namespace skiff::virtio
