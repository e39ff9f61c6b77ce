// SPDX-License-Identifier: Apache-2.0
// The host side of a virtio-blk disk: a raw image file or a block device (zvol, LVM volume,
// loop device) opened once, locked against other users, and described (capacity, block
// sizes, discard support) for the device's configuration space.
//
// Opening:
//   - cache=none → O_DIRECT (the default for block devices; files default to writeback);
//     read_only → O_RDONLY.
//   - exclusive use: files take a non-blocking flock (LOCK_EX; LOCK_SH when `shared`);
//     block devices are opened with O_EXCL unless `shared`. A disk in use elsewhere is
//     refused with an error naming the path.
//   - capacity: BLKGETSIZE64 for block devices, st_size for files (a multiple of 512).
//
// The operations below are synchronous and return 0 or -errno, so that both I/O engines
// can run them on an I/O thread; every DiskBackend member is safe to call from several
// threads at once (positional I/O on one fd, no shared mutable state).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/unique_fd.h"
#include "skiff/error.h"
#include "skiff/spec.h"

namespace skiff::virtio {

// What the device advertises about a disk. All sizes in bytes.
struct DiskInfo {
  uint64_t capacity = 0;              // a multiple of 512
  uint32_t logical_block_size = 512;  // blk_size; I/O offsets and lengths must be multiples
                                      // of it when `direct` or on a block device
  uint32_t physical_block_size = 512;
  uint32_t min_io_size = 0;      // 0 = unknown
  uint32_t optimal_io_size = 0;  // 0 = unknown (a zvol's volblocksize lands here)
  uint32_t alignment_offset = 0;
  // O_DIRECT: guest buffers handed to the kernel must start and end on this boundary,
  // otherwise the request goes through a bounce buffer.
  uint32_t memory_alignment = 1;
  bool direct = false;  // opened with O_DIRECT
  bool read_only = false;
  bool block_device = false;
  DiskCache cache = DiskCache::kWriteback;
  bool discard_supported = false;  // the backend can deallocate ranges
  uint32_t discard_granularity = 0;
  uint64_t discard_max_bytes = 0;  // 0 = no limit known
};

class DiskBackend {
 public:
  // Opens and describes `spec.path`. Errors name the disk id and path and say what to do.
  static Result<std::unique_ptr<DiskBackend>> open(const DiskSpec& spec);
  ~DiskBackend() = default;
  DiskBackend(const DiskBackend&) = delete;
  DiskBackend& operator=(const DiskBackend&) = delete;

  int fd() const { return fd_.get(); }
  const DiskInfo& info() const { return info_; }
  // `disk "id" (path)`, for messages.
  const std::string& label() const { return label_; }

  // Deallocates [offset, offset + len): BLKDISCARD on block devices, fallocate(PUNCH_HOLE |
  // KEEP_SIZE) on files. A backend that cannot deallocate returns 0 (discard is a hint,
  // §5.2.6.2 "MAY deallocate").
  int discard(uint64_t offset, uint64_t len) const;
  // Makes [offset, offset + len) read back as zeros: BLKZEROOUT on block devices (which may
  // unmap); on files fallocate(ZERO_RANGE), or PUNCH_HOLE when `may_unmap`, falling back to
  // writing zeros when the file system has neither.
  int write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) const;
  // fdatasync, or nothing for cache=unsafe.
  int flush() const;

 private:
  DiskBackend(UniqueFd fd, DiskInfo info, std::string label)
      : fd_(std::move(fd)), info_(info), label_(std::move(label)) {}
  int write_zero_buffers(uint64_t offset, uint64_t len) const;

  UniqueFd fd_;
  DiskInfo info_;
  std::string label_;
};

// The effective cache mode of `spec` for a disk that is (or is not) a block device.
DiskCache effective_cache(const DiskSpec& spec, bool block_device);

}  // namespace skiff::virtio
