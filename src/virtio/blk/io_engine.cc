// SPDX-License-Identifier: Apache-2.0
#include "virtio/blk/io_engine.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include <spdlog/spdlog.h>

#include "virtio/blk/uring_engine.h"

namespace skiff::virtio {
namespace {

// One positional vectored transfer, resubmitting the rest after a short one. Returns the
// bytes moved (less than asked only at end of file) or -errno.
int64_t transfer(int fd, bool write, uint64_t offset, std::span<const iovec> iov) {
  std::vector<iovec> rest;
  std::span<const iovec> pending = iov;
  const uint64_t total = iovec_bytes(iov);
  uint64_t done = 0;
  while (done < total) {
    const int count = static_cast<int>(std::min<size_t>(pending.size(), IOV_MAX));
    const auto at = static_cast<off_t>(offset + done);
    ssize_t n = write ? pwritev(fd, pending.data(), count, at) : preadv(fd, pending.data(), count, at);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -errno;
    }
    if (n == 0) break;  // end of file: the caller sees a short count
    done += static_cast<uint64_t>(n);
    if (done >= total) break;
    if (rest.empty()) rest.assign(iov.begin(), iov.end());
    advance_iovecs(rest, static_cast<uint64_t>(n));
    pending = rest;
  }
  return static_cast<int64_t>(done);
}

}  // namespace

uint64_t iovec_bytes(std::span<const iovec> iov) {
  uint64_t total = 0;
  for (const iovec& v : iov) total += v.iov_len;
  return total;
}

void advance_iovecs(std::vector<iovec>& iov, uint64_t bytes) {
  size_t drop = 0;
  while (drop < iov.size() && bytes >= iov[drop].iov_len) {
    bytes -= iov[drop].iov_len;
    ++drop;
  }
  iov.erase(iov.begin(), iov.begin() + static_cast<std::ptrdiff_t>(drop));
  if (!iov.empty() && bytes > 0) {
    iov[0].iov_base = static_cast<uint8_t*>(iov[0].iov_base) + bytes;
    iov[0].iov_len -= bytes;
  }
}

void SyncEngine::submit_read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) {
  done_.push_back({tag, transfer(backend_->fd(), false, offset, iov)});
}

void SyncEngine::submit_write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) {
  done_.push_back({tag, transfer(backend_->fd(), true, offset, iov)});
}

void SyncEngine::submit_flush(uint64_t tag) { done_.push_back({tag, backend_->flush()}); }

void SyncEngine::submit_discard(uint64_t tag, uint64_t offset, uint64_t len) {
  done_.push_back({tag, backend_->discard(offset, len)});
}

void SyncEngine::submit_write_zeroes(uint64_t tag, uint64_t offset, uint64_t len, bool may_unmap) {
  done_.push_back({tag, backend_->write_zeroes(offset, len, may_unmap)});
}

void SyncEngine::reap(std::vector<IoCompletion>& out) {
  out.insert(out.end(), done_.begin(), done_.end());
  done_.clear();
}

std::unique_ptr<BlockIoEngine> make_engine(std::shared_ptr<const DiskBackend> backend,
                                           IoEngine kind, uint32_t depth, bool* warned) {
  if (kind == IoEngine::kIoUring) {
    auto uring = UringEngine::create(backend, depth);
    if (uring) return std::move(*uring);
    if (warned == nullptr || !*warned) {
      spdlog::warn("{}: io_uring is not available ({}); using the sync engine (preadv/pwritev)",
                   backend->label(), uring.error().message());
      if (warned != nullptr) *warned = true;
    }
  }
  return std::make_unique<SyncEngine>(std::move(backend));
}

}  // namespace skiff::virtio
