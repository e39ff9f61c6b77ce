// SPDX-License-Identifier: Apache-2.0
#include "virtio/blk/disk_backend.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "virtio/blk/blk_constants.h"

namespace skiff::virtio {
namespace {

// What the user can do about an errno from open(2) or flock(2) on a disk.
std::string open_advice(int sys_errno, bool read_only, bool direct) {
  switch (sys_errno) {
    case ENOENT:
      return "check disks[].path: the file or device does not exist";
    case ENOTDIR:
      return "check disks[].path: a component of the path is not a directory";
    case EACCES:
    case EPERM:
      return read_only ? "give the skiff user read permission on it"
                       : "give the skiff user read and write permission on it, or set read_only";
    case EROFS:
      return "it is on a read-only file system: set read_only: true";
    case EBUSY:
      return "another process has it open exclusively or it is mounted: stop the other user, "
             "or mark the disk shared and read_only";
    case EINVAL:
      return direct ? "the file system does not support O_DIRECT (cache=none): use "
                      "cache=writeback"
                    : "the kernel refused the open flags";
    case EISDIR:
      return "disks[].path names a directory: give a raw image file or a block device";
    case ETXTBSY:
      return "the file is in use as an executable";
    default:
      return "check disks[].path";
  }
}

Error disk_error(const std::string& label, const std::string& what, int sys_errno,
                 const std::string& advice) {
  // A wrong path is the user's configuration; permission and "busy" are the host's state.
  ErrorKind kind = ErrorKind::kHost;
  if (sys_errno == ENOENT || sys_errno == ENOTDIR || sys_errno == EISDIR || sys_errno == EINVAL) {
    kind = ErrorKind::kConfig;
  }
  return Error(kind, fmt::format("{}: {}: {}; {}", label, what, std::strerror(sys_errno), advice),
               sys_errno);
}

// Reads one unsigned number from a sysfs attribute of block device `dev`. Partitions have
// no queue/ directory of their own: their parent's is used.
std::optional<uint64_t> read_block_sysfs(dev_t dev, const std::string& attribute) {
  const std::string base = fmt::format("/sys/dev/block/{}:{}", major(dev), minor(dev));
  for (const std::string& path : {base + "/" + attribute, base + "/../" + attribute}) {
    std::ifstream in(path);
    uint64_t value = 0;
    if (in >> value) return value;
  }
  return std::nullopt;
}

template <typename T>
std::optional<T> block_ioctl(int fd, unsigned long request) {
  T value{};
  // SAFETY: `request` is one of the BLK*GET ioctls whose argument is a T the kernel fills.
  if (ioctl(fd, request, &value) != 0) return std::nullopt;
  return value;
}

// Direct I/O alignment from statx(STATX_DIOALIGN) (Linux 6.1+ for files, 6.11+ for block
// devices): {memory alignment, file offset alignment}, or nullopt when unknown.
std::optional<std::pair<uint32_t, uint32_t>> direct_io_alignment(int fd) {
  struct statx stx {};
  constexpr unsigned kStatxDioAlign = 0x2000;  // STATX_DIOALIGN, newer than glibc 2.36's headers
  if (statx(fd, "", AT_EMPTY_PATH, kStatxDioAlign, &stx) != 0) return std::nullopt;
  if ((stx.stx_mask & kStatxDioAlign) == 0) return std::nullopt;
  // glibc 2.36's struct statx keeps the kernel's layout but names the newer fields
  // __statx_pad2; the kernel puts stx_dio_mem_align at byte 0x98 and stx_dio_offset_align
  // at 0x9c of the 256-byte structure.
  static_assert(sizeof(struct statx) == 256);
  uint32_t mem_align = 0;
  uint32_t offset_align = 0;
  // SAFETY: both offsets lie inside the 256-byte struct; memcpy has no alignment needs.
  const auto* bytes = reinterpret_cast<const std::byte*>(&stx);
  std::memcpy(&mem_align, bytes + 0x98, sizeof(mem_align));
  std::memcpy(&offset_align, bytes + 0x9c, sizeof(offset_align));
  if (offset_align == 0) return std::nullopt;  // the file system has no direct I/O
  return std::pair{std::max<uint32_t>(mem_align, 1), offset_align};
}

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

DiskCache effective_cache(const DiskSpec& spec, bool block_device) {
  if (spec.cache) return *spec.cache;
  return block_device ? DiskCache::kNone : DiskCache::kWriteback;
}

Result<std::unique_ptr<DiskBackend>> DiskBackend::open(const DiskSpec& spec) {
  const std::string label = fmt::format("disk \"{}\" ({})", spec.id, spec.path.string());
  struct stat st {};
  if (::stat(spec.path.c_str(), &st) != 0) {
    int err = errno;
    return std::unexpected(disk_error(label, "stat", err, open_advice(err, spec.read_only, false)));
  }
  const bool block_device = S_ISBLK(st.st_mode);
  if (!block_device && !S_ISREG(st.st_mode)) {
    return config_error(fmt::format("{}: not a regular file or block device; give a raw image "
                                    "file or a block device (zvol, LVM volume, loop device)",
                                    label));
  }
  DiskInfo info;
  info.block_device = block_device;
  info.read_only = spec.read_only;
  info.cache = effective_cache(spec, block_device);
  info.direct = info.cache == DiskCache::kNone;

  int flags = (spec.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (info.direct) flags |= O_DIRECT;
  // O_EXCL on a block device (without O_CREAT) claims it: open fails with EBUSY while it is
  // mounted or claimed by another exclusive opener.
  if (block_device && !spec.shared) flags |= O_EXCL;
  UniqueFd fd(::open(spec.path.c_str(), flags));
  if (!fd.valid()) {
    int err = errno;
    return std::unexpected(
        disk_error(label, "open", err, open_advice(err, spec.read_only, info.direct)));
  }
  // The path may have been replaced between stat and open: describe what was opened.
  if (fstat(fd.get(), &st) != 0) return std::unexpected(errno_error(label + ": fstat", errno));
  if (S_ISBLK(st.st_mode) != block_device) {
    return host_error(fmt::format("{}: the path changed type while being opened; retry", label));
  }

  if (!block_device) {
    // Advisory lock: two skiff processes (or QEMU with flock-based locking off) cannot
    // write the same image. Released when the fd closes.
    if (flock(fd.get(), (spec.shared ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
      int err = errno;
      if (err == EWOULDBLOCK) {
        return host_error(fmt::format(
            "{}: another process uses this disk (it holds a lock on the file); stop the other "
            "VM or tool, or mark the disk shared and read_only in every user",
            label));
      }
      return std::unexpected(disk_error(label, "flock", err, "check the file system supports locks"));
    }
    if (st.st_size % static_cast<off_t>(kSectorSize) != 0) {
      return config_error(fmt::format(
          "{}: size {} bytes is not a multiple of 512; resize the image (truncate -s) to whole "
          "sectors",
          label, st.st_size));
    }
    info.capacity = static_cast<uint64_t>(st.st_size);
    info.logical_block_size = static_cast<uint32_t>(kSectorSize);
    info.physical_block_size = static_cast<uint32_t>(kSectorSize);
    if (st.st_blksize > 0 && is_power_of_two(static_cast<uint64_t>(st.st_blksize))) {
      // The file system block is the unit below which writes are read-modify-write.
      info.physical_block_size = static_cast<uint32_t>(st.st_blksize);
      info.min_io_size = static_cast<uint32_t>(st.st_blksize);
    }
    info.discard_supported = true;  // PUNCH_HOLE; EOPNOTSUPP is answered as a no-op
    info.discard_granularity = info.physical_block_size;
    if (info.direct) {
      // O_DIRECT on a file follows the file system's rules, not 512.
      auto alignment = direct_io_alignment(fd.get());
      uint32_t offset_align = alignment ? alignment->second : static_cast<uint32_t>(kSectorSize);
      info.logical_block_size = std::max<uint32_t>(offset_align, kSectorSize);
      info.physical_block_size = std::max(info.physical_block_size, info.logical_block_size);
      info.memory_alignment = alignment ? alignment->first : info.logical_block_size;
      if (info.capacity % info.logical_block_size != 0) {
        return config_error(fmt::format(
            "{}: size {} bytes is not a multiple of the {}-byte direct I/O block; resize the "
            "image or use cache=writeback",
            label, info.capacity, info.logical_block_size));
      }
    }
  } else {
    auto size = block_ioctl<uint64_t>(fd.get(), BLKGETSIZE64);
    if (!size) return std::unexpected(errno_error(label + ": ioctl BLKGETSIZE64", errno));
    info.capacity = *size / kSectorSize * kSectorSize;
    auto logical = block_ioctl<int>(fd.get(), BLKSSZGET);
    if (!logical || *logical < static_cast<int>(kSectorSize) ||
        !is_power_of_two(static_cast<uint64_t>(*logical))) {
      return internal_error(fmt::format("{}: ioctl BLKSSZGET gave no usable logical block size", label));
    }
    info.logical_block_size = static_cast<uint32_t>(*logical);
    info.physical_block_size =
        std::max(block_ioctl<unsigned int>(fd.get(), BLKPBSZGET).value_or(0u), info.logical_block_size);
    info.min_io_size = block_ioctl<unsigned int>(fd.get(), BLKIOMIN).value_or(0);
    info.optimal_io_size = block_ioctl<unsigned int>(fd.get(), BLKIOOPT).value_or(0);
    if (info.optimal_io_size == 0) {
      // zvols (and some stacked drivers) report their volblocksize only through sysfs.
      info.optimal_io_size =
          static_cast<uint32_t>(read_block_sysfs(st.st_rdev, "queue/optimal_io_size").value_or(0));
    }
    info.alignment_offset =
        static_cast<uint32_t>(std::max(block_ioctl<int>(fd.get(), BLKALIGNOFF).value_or(0), 0));
    uint64_t discard_max = read_block_sysfs(st.st_rdev, "queue/discard_max_bytes").value_or(0);
    info.discard_supported = discard_max != 0;
    info.discard_max_bytes = discard_max;
    info.discard_granularity =
        static_cast<uint32_t>(read_block_sysfs(st.st_rdev, "queue/discard_granularity").value_or(0));
    info.memory_alignment = info.logical_block_size;
    if (info.direct) {
      if (auto alignment = direct_io_alignment(fd.get())) info.memory_alignment = alignment->first;
    }
  }
  return std::unique_ptr<DiskBackend>(new DiskBackend(std::move(fd), info, label));
}

int DiskBackend::discard(uint64_t offset, uint64_t len) const {
  if (len == 0) return 0;
  if (info_.block_device) {
    uint64_t range[2] = {offset, len};
    // SAFETY: BLKDISCARD reads two uint64_t {start, length} in bytes.
    if (ioctl(fd_.get(), BLKDISCARD, range) != 0) return errno == EOPNOTSUPP ? 0 : -errno;
    return 0;
  }
  if (fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                static_cast<off_t>(len)) != 0) {
    return errno == EOPNOTSUPP ? 0 : -errno;
  }
  return 0;
}

int DiskBackend::write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) const {
  if (len == 0) return 0;
  const auto off = static_cast<off_t>(offset);
  const auto length = static_cast<off_t>(len);
  if (may_unmap && info_.discard_supported) {
    // PUNCH_HOLE guarantees zeros on read-back, for files and (Linux 4.9+) block devices.
    if (fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, length) == 0) return 0;
    if (errno != EOPNOTSUPP && errno != EINVAL) return -errno;
  }
  if (info_.block_device) {
    uint64_t range[2] = {offset, len};
    // SAFETY: BLKZEROOUT reads two uint64_t {start, length} in bytes.
    if (ioctl(fd_.get(), BLKZEROOUT, range) != 0) return -errno;
    return 0;
  }
  if (fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, length) == 0) return 0;
  if (errno != EOPNOTSUPP) return -errno;
  return write_zero_buffers(offset, len);
}

int DiskBackend::write_zero_buffers(uint64_t offset, uint64_t len) const {
  // Aligned for O_DIRECT: to the logical block size (a power of two dividing the chunk) and
  // to at least a page, which covers any memory alignment a file system asks for.
  constexpr size_t kChunk = 1 << 20;
  const size_t alignment = std::max<size_t>(4096, info_.logical_block_size);
  // SAFETY: aligned_alloc with a power-of-two alignment and a size that is a multiple of it.
  std::unique_ptr<void, decltype(&std::free)> zeros(std::aligned_alloc(alignment, kChunk), &std::free);
  if (!zeros) return -ENOMEM;
  std::memset(zeros.get(), 0, kChunk);
  while (len > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(len, kChunk));
    ssize_t done = pwrite(fd_.get(), zeros.get(), chunk, static_cast<off_t>(offset));
    if (done < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (done == 0) return -EIO;
    offset += static_cast<uint64_t>(done);
    len -= static_cast<uint64_t>(done);
  }
  return 0;
}

int DiskBackend::flush() const {
  if (info_.cache == DiskCache::kUnsafe) return 0;
  while (fdatasync(fd_.get()) != 0) {
    if (errno != EINTR) return -errno;
  }
  return 0;
}

}  // namespace skiff::virtio
