// SPDX-License-Identifier: Apache-2.0
// Reading another process's memory map from /proc/<pid>/smaps (proc(5)) and splitting
// its resident set into guest RAM and everything else, for the start-up benchmark.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

namespace skiff::bench {

// One mapping of /proc/<pid>/smaps. Sizes are in KiB, as the kernel prints them.
struct Mapping {
  uint64_t start = 0;
  uint64_t end = 0;
  std::string perms;  // "rw-p"
  std::string path;   // "" for anonymous memory, "[heap]", "/memfd:x (deleted)", a file
  uint64_t size_kib = 0;
  uint64_t rss_kib = 0;
  uint64_t pss_kib = 0;
  uint64_t private_kib = 0;  // Private_Clean + Private_Dirty
  uint64_t swap_kib = 0;

  // A file mapping of a shared object: "/usr/lib/.../libc.so.6", "ld-linux-x86-64.so.2".
  bool is_shared_library() const;
};

// Parses the text of an smaps file. Lines it does not know are skipped.
std::vector<Mapping> parse_smaps(std::string_view text);

// Reads and parses /proc/<pid>/smaps.
std::expected<std::vector<Mapping>, std::string> read_smaps(pid_t pid);

// A process's resident memory split into guest RAM and the rest, in KiB.
struct MemoryBreakdown {
  uint64_t rss_total_kib = 0;
  uint64_t pss_total_kib = 0;
  uint64_t rss_guest_kib = 0;
  uint64_t pss_guest_kib = 0;
  uint64_t shared_library_rss_kib = 0;
  uint64_t shared_library_pss_kib = 0;
  uint64_t swap_kib = 0;             // should be 0; a non-zero value makes Rss figures low
  std::vector<size_t> guest_mappings;  // indexes into the mapping list
  std::string guest_method;            // how the guest mapping(s) were recognised

  uint64_t rss_beyond_guest_kib() const { return rss_total_kib - rss_guest_kib; }
  uint64_t pss_beyond_guest_kib() const { return pss_total_kib - pss_guest_kib; }
};

// Finds the mapping(s) that hold guest RAM and splits the totals around them.
//
// Neither VMM tells an outside observer where its guest RAM is, so this goes by size:
// guest RAM is every mapping whose size is exactly `guest_bytes` (QEMU maps its RAM
// block as one anonymous mapping of -m bytes plus a separate guard page; skiff maps each
// RAM range of the spec once, and below the 32-bit MMIO hole that is one range). If no
// mapping has that size, two non-file mappings whose sizes add up to it are taken (RAM
// split around the MMIO hole). Fails when neither is found.
std::expected<MemoryBreakdown, std::string> split_guest_memory(const std::vector<Mapping>& mappings,
                                                               uint64_t guest_bytes);

}  // namespace skiff::bench
