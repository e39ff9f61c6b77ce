// SPDX-License-Identifier: Apache-2.0
#include "smaps.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace skiff::bench {
namespace {

std::string_view trim(std::string_view text) {
  size_t begin = text.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return {};
  size_t end = text.find_last_not_of(" \t");
  return text.substr(begin, end - begin + 1);
}

// Splits off the next space-separated token of `text`.
std::string_view next_token(std::string_view& text) {
  text = trim(text);
  size_t end = text.find(' ');
  std::string_view token = text.substr(0, end);
  text = end == std::string_view::npos ? std::string_view{} : text.substr(end);
  return token;
}

bool parse_number(std::string_view text, int base, uint64_t& out) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), out, base);
  return error == std::errc{} && end == text.data() + text.size();
}

// proc(5): a mapping starts with "start-end perms offset dev inode [path]"; the lines
// after it are "Field:   value kB" (and "VmFlags: ..." without a unit).
bool parse_header(std::string_view line, Mapping& mapping) {
  std::string_view rest = line;
  std::string_view range = next_token(rest);
  size_t dash = range.find('-');
  if (dash == std::string_view::npos) return false;
  if (!parse_number(range.substr(0, dash), 16, mapping.start) ||
      !parse_number(range.substr(dash + 1), 16, mapping.end)) {
    return false;
  }
  mapping.perms = std::string(next_token(rest));
  next_token(rest);  // offset
  next_token(rest);  // device
  next_token(rest);  // inode
  mapping.path = std::string(trim(rest));  // may contain spaces: "/memfd:ram (deleted)"
  return !mapping.perms.empty();
}

void parse_field(std::string_view line, Mapping& mapping) {
  size_t colon = line.find(':');
  std::string_view name = line.substr(0, colon);
  std::string_view rest = line.substr(colon + 1);
  std::string_view value_text = next_token(rest);
  uint64_t value = 0;
  if (!parse_number(value_text, 10, value) || trim(rest) != "kB") return;
  if (name == "Size") mapping.size_kib = value;
  else if (name == "Rss") mapping.rss_kib = value;
  else if (name == "Pss") mapping.pss_kib = value;
  else if (name == "Private_Clean" || name == "Private_Dirty") mapping.private_kib += value;
  else if (name == "Swap") mapping.swap_kib = value;
}

// A mapping that could be guest RAM: anonymous, memfd or hugetlbfs, never a plain file.
bool may_hold_guest_ram(const Mapping& mapping) {
  if (mapping.path.empty()) return true;
  return mapping.path.starts_with("/memfd:") || mapping.path.starts_with("/anon_hugepage") ||
         mapping.path.starts_with("/dev/hugepages") || mapping.path.starts_with("/dev/zero");
}

}  // namespace

bool Mapping::is_shared_library() const {
  if (!path.starts_with('/')) return false;
  std::string_view name = path;
  name = name.substr(name.rfind('/') + 1);
  for (size_t at = name.find(".so"); at != std::string_view::npos; at = name.find(".so", at + 1)) {
    size_t after = at + 3;
    if (after == name.size() || name[after] == '.') return true;
  }
  return false;
}

std::vector<Mapping> parse_smaps(std::string_view text) {
  std::vector<Mapping> mappings;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    if (line.empty()) continue;
    // Field names are letters and underscores followed by ':'; a header starts with hex
    // digits and '-', so the first token tells them apart.
    std::string_view first = line.substr(0, line.find(' '));
    if (first.ends_with(':')) {
      if (!mappings.empty()) parse_field(line, mappings.back());
      continue;
    }
    Mapping mapping;
    if (parse_header(line, mapping)) mappings.push_back(std::move(mapping));
  }
  return mappings;
}

std::expected<std::vector<Mapping>, std::string> read_smaps(pid_t pid) {
  std::string path = fmt::format("/proc/{}/smaps", pid);
  std::ifstream file(path);
  if (!file) return std::unexpected(fmt::format("{}: open: {}", path, std::strerror(errno)));
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) return std::unexpected(fmt::format("{}: read failed", path));
  auto mappings = parse_smaps(text.str());
  if (mappings.empty()) return std::unexpected(fmt::format("{}: no mappings (did the process exit?)", path));
  return mappings;
}

std::expected<MemoryBreakdown, std::string> split_guest_memory(const std::vector<Mapping>& mappings,
                                                               uint64_t guest_bytes) {
  MemoryBreakdown breakdown;
  const uint64_t guest_kib = guest_bytes >> 10;
  for (size_t i = 0; i < mappings.size(); ++i) {
    const Mapping& mapping = mappings[i];
    breakdown.rss_total_kib += mapping.rss_kib;
    breakdown.pss_total_kib += mapping.pss_kib;
    breakdown.swap_kib += mapping.swap_kib;
    if (mapping.is_shared_library()) {
      breakdown.shared_library_rss_kib += mapping.rss_kib;
      breakdown.shared_library_pss_kib += mapping.pss_kib;
    }
    if (mapping.size_kib == guest_kib) breakdown.guest_mappings.push_back(i);
  }
  if (!breakdown.guest_mappings.empty()) {
    breakdown.guest_method = fmt::format("{} mapping{} of exactly {} MiB", breakdown.guest_mappings.size(),
                                         breakdown.guest_mappings.size() == 1 ? "" : "s", guest_kib >> 10);
  } else {
    // RAM split in two around the MMIO hole: the largest pair of RAM-like mappings that
    // adds up to the guest size.
    uint64_t best_size = 0;
    for (size_t i = 0; i < mappings.size(); ++i) {
      if (!may_hold_guest_ram(mappings[i])) continue;
      for (size_t j = i + 1; j < mappings.size(); ++j) {
        if (!may_hold_guest_ram(mappings[j])) continue;
        if (mappings[i].size_kib + mappings[j].size_kib != guest_kib) continue;
        uint64_t larger = std::max(mappings[i].size_kib, mappings[j].size_kib);
        if (larger > best_size) {
          best_size = larger;
          breakdown.guest_mappings = {i, j};
        }
      }
    }
    if (breakdown.guest_mappings.empty()) {
      return std::unexpected(fmt::format(
          "no mapping of {} KiB (the guest RAM size), nor two that add up to it", guest_kib));
    }
    breakdown.guest_method = fmt::format("2 mappings adding up to {} MiB", guest_kib >> 10);
  }
  for (size_t index : breakdown.guest_mappings) {
    breakdown.rss_guest_kib += mappings[index].rss_kib;
    breakdown.pss_guest_kib += mappings[index].pss_kib;
  }
  return breakdown;
}

}  // namespace skiff::bench
