// SPDX-License-Identifier: Apache-2.0
#include "memory/guest_memory.h"

#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff {
namespace {

uint64_t backing_page_size(MemoryBacking backing) {
  switch (backing) {
    case MemoryBacking::kHugetlb2M:
      return 2ull << 20;
    case MemoryBacking::kHugetlb1G:
      return 1ull << 30;
    default:
      return 4096;
  }
}

bool is_hugetlb(MemoryBacking backing) {
  return backing == MemoryBacking::kHugetlb2M || backing == MemoryBacking::kHugetlb1G;
}

std::string page_size_name(uint64_t page_size) {
  return page_size >= (1ull << 30) ? fmt::format("{}G", page_size >> 30)
                                   : fmt::format("{}M", page_size >> 20);
}

// The explanation users get when the hugetlb pool cannot back the guest.
Error hugepage_shortage(uint64_t page_size, uint64_t needed, int sys_errno) {
  std::string pool_line;
  if (auto pool = read_hugepage_pool(page_size)) {
    pool_line = fmt::format(" (pool: {} total, {} free, {} reserved by others)", pool->total,
                            pool->free, pool->reserved);
  }
  std::string how;
  if (page_size == (2ull << 20)) {
    how = fmt::format("reserve them with: echo {} > /proc/sys/vm/nr_hugepages (or add to it)",
                      needed);
  } else {
    how = fmt::format(
        "reserve them with: echo {} > /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages "
        "(1 GiB pages are best reserved at boot: hugepagesz=1G hugepages={})",
        needed, page_size >> 10, needed);
  }
  return Error(ErrorKind::kHost,
               fmt::format("machine.hugepages: guest memory needs {} free {} hugepages{}; {}",
                           needed, page_size_name(page_size), pool_line, how),
               sys_errno);
}

}  // namespace

std::optional<uint64_t> checked_end(uint64_t gpa, uint64_t len) {
  uint64_t end = 0;
  if (__builtin_add_overflow(gpa, len, &end)) return std::nullopt;
  return end;
}

std::vector<RamRange> split_ram_around_hole(uint64_t memory_bytes, uint64_t hole_start,
                                            uint64_t hole_end) {
  std::vector<RamRange> ranges;
  uint64_t low = std::min(memory_bytes, hole_start);
  if (low > 0) ranges.push_back({0, low});
  if (memory_bytes > low) ranges.push_back({hole_end, memory_bytes - low});
  return ranges;
}

Result<HugepagePool> read_hugepage_pool(uint64_t page_size) {
  std::string dir = fmt::format("/sys/kernel/mm/hugepages/hugepages-{}kB/", page_size >> 10);
  auto read_number = [&](const char* name) -> std::optional<uint64_t> {
    std::ifstream in(dir + name);
    uint64_t value = 0;
    if (!(in >> value)) return std::nullopt;
    return value;
  };
  auto total = read_number("nr_hugepages");
  auto free = read_number("free_hugepages");
  auto reserved = read_number("resv_hugepages");
  if (!total || !free || !reserved) {
    return host_error(fmt::format("{}: this kernel has no {} hugepage pool", dir,
                                  page_size_name(page_size)));
  }
  return HugepagePool{page_size, *total, *free, *reserved};
}

Result<GuestMemory> GuestMemory::create(std::span<const RamRange> ranges,
                                        const MemoryOptions& options) {
  GuestMemory memory;
  memory.options_ = options;
  memory.page_size_ = backing_page_size(options.backing);
  memory.owned_ = true;
  const uint64_t page = memory.page_size_;

  uint64_t total = 0;
  uint64_t previous_end = 0;
  for (const RamRange& range : ranges) {
    auto end = checked_end(range.gpa, range.size);
    if (range.size == 0 || !end || range.gpa < previous_end) {
      return internal_error(fmt::format("RAM range [{:#x}, +{:#x}) is empty, wraps or overlaps",
                                        range.gpa, range.size));
    }
    if (range.gpa % page != 0 || range.size % page != 0) {
      return config_error(fmt::format(
          "machine.memory_mib: RAM range [{:#x}, +{:#x}) is not a multiple of the {} page "
          "size; choose a memory size that is a multiple of it",
          range.gpa, range.size, page_size_name(page)));
    }
    previous_end = *end;
    total += range.size;
  }

  // One file backs all regions for memfd/hugetlb, so the balloon can punch holes in it
  // and other processes can map it.
  int fd = -1;
  if (options.backing != MemoryBacking::kAnonymous) {
    unsigned flags = MFD_CLOEXEC;
    if (options.backing == MemoryBacking::kHugetlb2M) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
    if (options.backing == MemoryBacking::kHugetlb1G) flags |= MFD_HUGETLB | MFD_HUGE_1GB;
    fd = static_cast<int>(syscall(SYS_memfd_create, "skiff-guest-ram", flags));
    if (fd < 0) {
      int err = errno;
      if (is_hugetlb(options.backing)) return std::unexpected(hugepage_shortage(page, total / page, err));
      return std::unexpected(errno_error("memfd_create for guest RAM", err));
    }
    if (ftruncate(fd, static_cast<off_t>(total)) != 0) {
      int err = errno;
      close(fd);
      return std::unexpected(errno_error(fmt::format("ftruncate guest RAM memfd to {} bytes", total), err));
    }
  }

  if (is_hugetlb(options.backing)) {
    // Shared hugetlb mappings reserve their pages at mmap time, so a short pool fails
    // here with ENOMEM rather than as a SIGBUS when the guest first touches a page.
    // Check the pool first to give the numbers.
    if (auto pool = read_hugepage_pool(page); pool && pool->available() < total / page) {
      close(fd);
      return std::unexpected(hugepage_shortage(page, total / page, ENOMEM));
    }
  }

  uint64_t fd_offset = 0;
  for (const RamRange& range : ranges) {
    int prot = PROT_READ | PROT_WRITE;
    int flags = MAP_NORESERVE;
    if (fd >= 0) {
      flags = MAP_SHARED;  // hugetlb: no MAP_NORESERVE, so the pages are reserved now
    } else {
      flags |= MAP_PRIVATE | MAP_ANONYMOUS;
    }
    if (options.prefault) flags |= MAP_POPULATE;
    // SAFETY: a fresh mapping owned by this GuestMemory and unmapped in release().
    void* host = mmap(nullptr, range.size, prot, flags, fd, fd >= 0 ? static_cast<off_t>(fd_offset) : 0);
    if (host == MAP_FAILED) {
      int err = errno;
      memory.release();
      if (fd >= 0) close(fd);
      if (is_hugetlb(options.backing) && err == ENOMEM) {
        return std::unexpected(hugepage_shortage(page, total / page, err));
      }
      return std::unexpected(errno_error(
          fmt::format("mmap {} MiB of guest RAM at {:#x}", range.size >> 20, range.gpa), err));
    }
    memory.regions_.push_back(GuestRegion{range.gpa, range.size, static_cast<uint8_t*>(host), fd, fd_offset});
    fd_offset += range.size;

    if (options.transparent_hugepages && !is_hugetlb(options.backing)) {
      if (madvise(host, range.size, MADV_HUGEPAGE) != 0) {
        spdlog::warn("madvise(MADV_HUGEPAGE) on guest RAM failed: {} (transparent hugepages "
                     "disabled in /sys/kernel/mm/transparent_hugepage/enabled?)",
                     std::strerror(errno));
      }
    }
    // Don't put guest RAM in core dumps of the VMM: it is large and it is the guest's data.
    madvise(host, range.size, MADV_DONTDUMP);

    if (options.numa_node) {
      unsigned long nodemask[16] = {};
      uint32_t node = *options.numa_node;
      if (node >= sizeof(nodemask) * 8) {
        memory.release();
        return config_error(fmt::format("machine.numa_node: node {} is out of range", node));
      }
      nodemask[node / 64] |= 1ul << (node % 64);
      constexpr int kMpolBind = 2;            // MPOL_BIND
      constexpr unsigned kMpolMfMove = 1u << 1;  // MPOL_MF_MOVE: move pages already touched
      if (syscall(SYS_mbind, host, range.size, kMpolBind, nodemask, sizeof(nodemask) * 8,
                  kMpolMfMove) != 0) {
        int err = errno;
        memory.release();
        return std::unexpected(errno_error(
            fmt::format("machine.numa_node: mbind guest RAM to host node {}", node), err));
      }
    }
    if (options.lock && mlock(host, range.size) != 0) {
      int err = errno;
      memory.release();
      return std::unexpected(Error(
          ErrorKind::kHost,
          fmt::format("machine.lock_memory: mlock {} MiB of guest RAM: {} (raise RLIMIT_MEMLOCK, "
                      "e.g. ulimit -l unlimited, or run as root)",
                      range.size >> 20, std::strerror(err)),
          err));
    }
  }
  return memory;
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : regions_(std::move(other.regions_)),
      options_(other.options_),
      page_size_(other.page_size_),
      owned_(other.owned_) {
  other.regions_.clear();
  other.owned_ = false;
}

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
  if (this != &other) {
    release();
    regions_ = std::move(other.regions_);
    options_ = other.options_;
    page_size_ = other.page_size_;
    owned_ = other.owned_;
    other.regions_.clear();
    other.owned_ = false;
  }
  return *this;
}

GuestMemory::~GuestMemory() { release(); }

void GuestMemory::release() {
  if (owned_) {
    int fd = -1;
    for (const GuestRegion& region : regions_) {
      munmap(region.host, region.size);
      fd = region.fd;
    }
    if (fd >= 0) close(fd);
  }
  regions_.clear();
  owned_ = false;
}

GuestMemory GuestMemory::from_host_buffers(std::span<const GuestRegion> regions) {
  GuestMemory memory;
  memory.regions_.assign(regions.begin(), regions.end());
  std::sort(memory.regions_.begin(), memory.regions_.end(),
            [](const GuestRegion& a, const GuestRegion& b) { return a.gpa < b.gpa; });
  memory.owned_ = false;
  return memory;
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const GuestRegion& region : regions_) total += region.size;
  return total;
}

const GuestRegion* GuestMemory::find_region(uint64_t gpa) const {
  // Regions are sorted by gpa; there are only a few.
  for (const GuestRegion& region : regions_) {
    if (gpa >= region.gpa && gpa - region.gpa < region.size) return &region;
  }
  return nullptr;
}

bool GuestMemory::contains(uint64_t gpa, uint64_t len) const {
  return slice(gpa, len).has_value();
}

Result<std::span<uint8_t>> GuestMemory::slice(uint64_t gpa, uint64_t len) const {
  auto end = checked_end(gpa, len);
  if (!end) {
    return guest_error(fmt::format("guest range [{:#x}, +{:#x}) wraps around the address space", gpa, len));
  }
  for (const GuestRegion& region : regions_) {
    // Compare offsets rather than end addresses so nothing can overflow.
    if (gpa >= region.gpa && gpa - region.gpa <= region.size &&
        len <= region.size - (gpa - region.gpa)) {
      if (len == 0 && gpa - region.gpa == region.size && &region != &regions_.back() &&
          (&region + 1)->gpa == gpa) {
        continue;  // prefer the next region for an empty range at a shared boundary
      }
      return std::span<uint8_t>(region.host + (gpa - region.gpa), len);
    }
  }
  return guest_error(fmt::format("guest range [{:#x}, {:#x}) is not inside guest RAM", gpa, *end));
}

Result<void> GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) const {
  auto s = slice(gpa, out.size());
  if (!s) return std::unexpected(s.error());
  if (!out.empty()) std::memcpy(out.data(), s->data(), out.size());
  return {};
}

Result<void> GuestMemory::write(uint64_t gpa, std::span<const uint8_t> data) const {
  auto s = slice(gpa, data.size());
  if (!s) return std::unexpected(s.error());
  if (!data.empty()) std::memcpy(s->data(), data.data(), data.size());
  return {};
}

Result<void> GuestMemory::fill(uint64_t gpa, uint8_t value, uint64_t len) const {
  auto s = slice(gpa, len);
  if (!s) return std::unexpected(s.error());
  if (len != 0) std::memset(s->data(), value, len);
  return {};
}

Result<std::string> GuestMemory::read_cstring(uint64_t gpa, uint64_t max_len) const {
  std::string out;
  for (uint64_t i = 0; i < max_len; ++i) {
    auto address = checked_end(gpa, i);
    if (!address) return guest_error(fmt::format("string at {:#x} wraps around", gpa));
    auto byte = read_obj<uint8_t>(*address);
    if (!byte) return std::unexpected(byte.error());
    if (*byte == 0) return out;
    out.push_back(static_cast<char>(*byte));
  }
  return guest_error(fmt::format("string at {:#x} is not terminated within {} bytes", gpa, max_len));
}

}  // namespace skiff
