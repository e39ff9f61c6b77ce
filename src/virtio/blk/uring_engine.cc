// SPDX-License-Identifier: Apache-2.0
#include "virtio/blk/uring_engine.h"

#include <linux/falloc.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff::virtio {

Result<std::unique_ptr<UringEngine>> UringEngine::create(std::shared_ptr<const DiskBackend> backend,
                                                         uint32_t depth) {
  UniqueFd event(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event.valid()) return std::unexpected(errno_error("eventfd", errno));
  std::unique_ptr<UringEngine> engine(new UringEngine(std::move(backend), std::move(event)));
  // IORING_MAX_ENTRIES is 32768, the largest virtqueue too.
  depth = std::clamp<uint32_t>(depth, 1, 32768);
  // The ring starts disabled so that it can be restricted before anything is submitted:
  // io_uring requests run in kernel workers that the seccomp filter of the thread owning
  // the ring never sees (docs/security.md).
  io_uring_params params{};
  params.flags = IORING_SETUP_R_DISABLED;
  int ret = io_uring_queue_init_params(depth, &engine->ring_, &params);
  if (ret < 0) return std::unexpected(errno_error("io_uring_queue_init", -ret));
  engine->ring_ready_ = true;
  // Linux 5.11+: drain()'s timed wait passes its timeout to io_uring_enter instead of
  // submitting a TIMEOUT request, which the restrictions below would refuse.
  if ((params.features & IORING_FEAT_EXT_ARG) == 0) {
    return internal_error("io_uring without IORING_FEAT_EXT_ARG (Linux 5.11 or later is needed)");
  }
  ret = io_uring_register_eventfd(&engine->ring_, engine->event_.get());
  if (ret < 0) return std::unexpected(errno_error("io_uring_register_eventfd", -ret));
  if (io_uring_probe* probe = io_uring_get_probe_ring(&engine->ring_)) {
    engine->fallocate_supported_ = io_uring_opcode_supported(probe, IORING_OP_FALLOCATE) != 0;
    io_uring_free_probe(probe);
  }
  if (auto restricted = restrict_block_io_ring(&engine->ring_); !restricted) {
    return std::unexpected(restricted.error());
  }
  return engine;
}

Result<void> restrict_block_io_ring(io_uring* ring) {
  // What prepare() submits, and nothing else: no opening files, no sockets, no other
  // registrations once the ring is enabled. (The disk is not made a fixed file: a
  // registered file stays referenced until the ring's asynchronous teardown, which would
  // keep the disk's lock after the engine is gone. The blk_io filter allows preadv/pwritev
  // on any descriptor anyway.)
  std::vector<io_uring_restriction> rules;
  for (uint8_t opcode : {IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC, IORING_OP_FALLOCATE}) {
    io_uring_restriction rule{};
    rule.opcode = IORING_RESTRICTION_SQE_OP;
    rule.sqe_op = opcode;
    rules.push_back(rule);
  }
  // Debian's liburing 2.3 declares io_uring_register_restrictions/io_uring_enable_rings but
  // does not export them; its plain io_uring_register() makes the same calls.
  int ret = io_uring_register(static_cast<unsigned>(ring->ring_fd), IORING_REGISTER_RESTRICTIONS, rules.data(),
                              static_cast<unsigned>(rules.size()));
  if (ret < 0) return std::unexpected(errno_error("io_uring_register(RESTRICTIONS)", -ret));
  ret = io_uring_register(static_cast<unsigned>(ring->ring_fd), IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
  if (ret < 0) return std::unexpected(errno_error("io_uring_register(ENABLE_RINGS)", -ret));
  return {};
}

UringEngine::UringEngine(std::shared_ptr<const DiskBackend> backend, UniqueFd event)
    : backend_(std::move(backend)), event_(std::move(event)) {}

UringEngine::~UringEngine() {
  if (!ring_ready_) return;
  // The kernel may still be writing into guest memory: wait for it before the ring goes.
  std::vector<IoCompletion> dropped;
  drain(dropped);
  io_uring_queue_exit(&ring_);
}

uint32_t UringEngine::new_op(uint64_t tag, OpKind kind) {
  uint32_t index;
  if (!free_ops_.empty()) {
    index = free_ops_.back();
    free_ops_.pop_back();
  } else {
    index = static_cast<uint32_t>(ops_.size());
    ops_.emplace_back();
  }
  Op& op = ops_[index];
  op.tag = tag;
  op.kind = kind;
  op.offset = 0;
  op.len = 0;
  op.mode = 0;
  op.discard = false;
  op.may_unmap = false;
  op.iov.clear();
  op.transferred = 0;
  ++in_flight_;
  return index;
}

void UringEngine::free_op(uint32_t index) { free_ops_.push_back(index); }

void UringEngine::submit_read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) {
  uint32_t index = new_op(tag, OpKind::kRead);
  ops_[index].offset = offset;
  ops_[index].iov.assign(iov.begin(), iov.end());
  queue_op(index);
}

void UringEngine::submit_write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) {
  uint32_t index = new_op(tag, OpKind::kWrite);
  ops_[index].offset = offset;
  ops_[index].iov.assign(iov.begin(), iov.end());
  queue_op(index);
}

void UringEngine::submit_flush(uint64_t tag) {
  if (backend_->info().cache == DiskCache::kUnsafe) {
    done_.push_back({tag, 0});
    return;
  }
  queue_op(new_op(tag, OpKind::kFlush));
}

void UringEngine::submit_discard(uint64_t tag, uint64_t offset, uint64_t len) {
  // BLKDISCARD has no io_uring form on the kernels we target: run it here.
  if (backend_->info().block_device || !fallocate_supported_) {
    done_.push_back({tag, backend_->discard(offset, len)});
    return;
  }
  uint32_t index = new_op(tag, OpKind::kFallocate);
  Op& op = ops_[index];
  op.offset = offset;
  op.len = len;
  op.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  op.discard = true;
  queue_op(index);
}

void UringEngine::submit_write_zeroes(uint64_t tag, uint64_t offset, uint64_t len, bool may_unmap) {
  if (backend_->info().block_device || !fallocate_supported_) {
    done_.push_back({tag, backend_->write_zeroes(offset, len, may_unmap)});
    return;
  }
  uint32_t index = new_op(tag, OpKind::kFallocate);
  Op& op = ops_[index];
  op.offset = offset;
  op.len = len;
  op.may_unmap = may_unmap;
  op.mode = (may_unmap && backend_->info().discard_supported ? FALLOC_FL_PUNCH_HOLE
                                                              : FALLOC_FL_ZERO_RANGE) |
            FALLOC_FL_KEEP_SIZE;
  queue_op(index);
}

void UringEngine::queue_op(uint32_t index) {
  // Keep submission order: nothing overtakes the backlog.
  if (!backlog_.empty() || !prepare(index)) backlog_.push_back(index);
}

bool UringEngine::prepare(uint32_t index) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) return false;
  Op& op = ops_[index];
  const int fd = backend_->fd();
  switch (op.kind) {
    case OpKind::kRead:
    case OpKind::kWrite: {
      // The kernel takes at most IOV_MAX iovecs per operation; the rest goes as a
      // continuation, like a short transfer.
      const auto count = static_cast<unsigned>(std::min<size_t>(op.iov.size(), IOV_MAX));
      const uint64_t at = op.offset + op.transferred;
      if (op.kind == OpKind::kRead) {
        io_uring_prep_readv(sqe, fd, op.iov.data(), count, at);
      } else {
        io_uring_prep_writev(sqe, fd, op.iov.data(), count, at);
      }
      break;
    }
    case OpKind::kFlush:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      break;
    case OpKind::kFallocate:
      io_uring_prep_fallocate(sqe, fd, op.mode, static_cast<off_t>(op.offset),
                              static_cast<off_t>(op.len));
      break;
  }
  io_uring_sqe_set_data64(sqe, index);
  return true;
}

void UringEngine::kick() {
  int busy = 0;
  while (true) {
    while (!backlog_.empty() && prepare(backlog_.front())) backlog_.pop_front();
    if (io_uring_sq_ready(&ring_) == 0) return;
    int ret = io_uring_submit(&ring_);
    if (ret > 0) {
      busy = 0;
      continue;
    }
    if (ret == -EINTR) continue;
    if ((ret == 0 || ret == -EAGAIN || ret == -EBUSY) && ++busy < 1000) {
      // The completion ring is full (or the kernel is short of memory): make room.
      process_cqes();
      continue;
    }
    // Left in the submission ring: the next kick() tries again.
    spdlog::error("{}: io_uring_submit: {}", backend_->label(), std::strerror(-ret));
    return;
  }
}

void UringEngine::process_cqes() {
  io_uring_cqe* cqe = nullptr;
  unsigned head = 0;
  unsigned count = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    handle_cqe(static_cast<uint32_t>(io_uring_cqe_get_data64(cqe)), cqe->res);
    ++count;
  }
  io_uring_cq_advance(&ring_, count);
}

void UringEngine::handle_cqe(uint32_t index, int result) {
  if (index >= ops_.size()) {
    spdlog::error("{}: io_uring completion for unknown operation {}", backend_->label(), index);
    return;
  }
  Op& op = ops_[index];
  if (result == -EAGAIN || result == -EINTR) {
    queue_op(index);
    return;
  }
  switch (op.kind) {
    case OpKind::kRead:
    case OpKind::kWrite:
      if (result < 0) {
        complete(index, result);
      } else if (result == 0) {
        complete(index, static_cast<int64_t>(op.transferred));  // end of file: short
      } else {
        op.transferred += static_cast<uint64_t>(result);
        advance_iovecs(op.iov, static_cast<uint64_t>(result));
        if (op.iov.empty()) {
          complete(index, static_cast<int64_t>(op.transferred));
        } else {
          queue_op(index);  // short transfer: the rest goes again
        }
      }
      return;
    case OpKind::kFlush:
      complete(index, result);
      return;
    case OpKind::kFallocate:
      if (result == -EOPNOTSUPP) {
        // The file system cannot do this mode: a discard is only a hint; write-zeroes
        // falls back to the backend's slower paths.
        complete(index, op.discard ? 0 : backend_->write_zeroes(op.offset, op.len, op.may_unmap));
      } else {
        complete(index, result);
      }
      return;
  }
}

void UringEngine::complete(uint32_t index, int64_t result) {
  done_.push_back({ops_[index].tag, result});
  ops_[index].iov.clear();
  free_op(index);
  --in_flight_;
}

void UringEngine::reap(std::vector<IoCompletion>& out) {
  // Clear the eventfd before looking at the ring, so a completion that lands in between
  // makes it readable again.
  uint64_t count = 0;
  if (::read(event_.get(), &count, sizeof(count)) < 0 && errno != EAGAIN) {
    spdlog::error("{}: reading the io_uring eventfd: {}", backend_->label(), std::strerror(errno));
  }
  process_cqes();
  kick();  // resubmissions (short transfers, -EAGAIN) and the backlog
  out.insert(out.end(), done_.begin(), done_.end());
  done_.clear();
}

bool UringEngine::has_completions() const {
  // io_uring_cq_ready only reads the shared ring's head and tail.
  return !done_.empty() || io_uring_cq_ready(const_cast<io_uring*>(&ring_)) > 0;
}

void UringEngine::drain(std::vector<IoCompletion>& out) {
  while (in_flight_ > 0) {
    kick();
    process_cqes();
    if (in_flight_ == 0) break;
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec timeout{.tv_sec = 1, .tv_nsec = 0};
    int ret = io_uring_wait_cqe_timeout(&ring_, &cqe, &timeout);
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN) {
      spdlog::error("{}: waiting for io_uring completions: {}", backend_->label(), std::strerror(-ret));
      break;
    }
  }
  out.insert(out.end(), done_.begin(), done_.end());
  done_.clear();
}

}  // namespace skiff::virtio
