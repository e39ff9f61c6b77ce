// SPDX-License-Identifier: Apache-2.0
#include "config/spec_rules.h"

#include <sched.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "arch/x86_64/layout.h"

namespace skiff::config {

static_assert(kMaxCmdlineBytes == x86::kCmdlineMaxSize - 1,
              "the command line and its NUL must fit the boot command-line area");

namespace {

bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
}

Result<void> check_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return config_error(
        fmt::format("/name: must be 1 to {} characters long, got {}", kMaxNameLength, name.size()));
  }
  // The name ends up in thread names, log lines and file names: keep it to characters
  // that need no quoting anywhere.
  auto bad = std::ranges::find_if_not(name, is_name_char);
  if (bad != name.end()) {
    return config_error(fmt::format(
        "/name: \"{}\" contains character {:#04x}; use only letters, digits, '.', '_' and '-'",
        printable(name), static_cast<unsigned char>(*bad)));
  }
  return {};
}

Result<void> check_machine(const MachineSpec& machine) {
  if (machine.vcpus < 1 || machine.vcpus > kMaxVcpus) {
    return config_error(fmt::format(
        "/machine/vcpus: {} is out of range: must be between 1 and {} (xAPIC ids must stay "
        "below the broadcast id 255)",
        machine.vcpus, kMaxVcpus));
  }
  if (machine.memory_mib < kMinMemoryMib || machine.memory_mib > kMaxMemoryMib) {
    return config_error(
        fmt::format("/machine/memory_mib: {} is out of range: must be between {} and {} (1 TiB)",
                    machine.memory_mib, kMinMemoryMib, kMaxMemoryMib));
  }
  // 2 MiB pages always divide a size given in MiB only when it is even.
  if (machine.hugepages == HugePages::k2M && machine.memory_mib % 2 != 0) {
    return config_error(fmt::format(
        "/machine/memory_mib: {} MiB is not a multiple of the 2 MiB huge page size; use {} or {}",
        machine.memory_mib, machine.memory_mib - 1, machine.memory_mib + 1));
  }
  if (machine.hugepages == HugePages::k1G && machine.memory_mib % kGigaPageMib != 0) {
    uint64_t below = machine.memory_mib / kGigaPageMib * kGigaPageMib;
    uint64_t above = below + kGigaPageMib;
    std::string choices =
        below == 0 ? fmt::format("use {}", above) : fmt::format("use {} or {}", below, above);
    return config_error(
        fmt::format("/machine/memory_mib: {} MiB is not a multiple of the 1 GiB huge page size; {}",
                    machine.memory_mib, choices));
  }

  const auto& affinity = machine.vcpu_affinity;
  if (!affinity.empty() && affinity.size() != machine.vcpus) {
    return config_error(fmt::format(
        "/machine/vcpu_affinity: has {} entries but machine.vcpus is {}; give exactly one list "
        "of host CPUs per vCPU, or leave it empty for no pinning",
        affinity.size(), machine.vcpus));
  }
  for (size_t vcpu = 0; vcpu < affinity.size(); ++vcpu) {
    const auto& cpus = affinity[vcpu];
    if (cpus.empty()) {
      return config_error(fmt::format(
          "/machine/vcpu_affinity/{}: the list of host CPUs for vCPU {} is empty", vcpu, vcpu));
    }
    std::set<uint32_t> seen;
    for (size_t i = 0; i < cpus.size(); ++i) {
      if (cpus[i] >= static_cast<uint32_t>(CPU_SETSIZE)) {
        return config_error(fmt::format(
            "/machine/vcpu_affinity/{}/{}: host CPU {} is out of range: must be below {}", vcpu, i,
            cpus[i], CPU_SETSIZE));
      }
      if (!seen.insert(cpus[i]).second) {
        return config_error(
            fmt::format("/machine/vcpu_affinity/{}/{}: host CPU {} is listed twice for vCPU {}",
                        vcpu, i, cpus[i], vcpu));
      }
    }
  }
  if (machine.numa_node && *machine.numa_node > kMaxNumaNode) {
    return config_error(fmt::format("/machine/numa_node: {} is out of range: must be at most {}",
                                    *machine.numa_node, kMaxNumaNode));
  }
  return {};
}

bool has_nul(const std::filesystem::path& path) {
  return path.native().find('\0') != std::string::npos;
}

Result<void> check_boot(const BootSpec& boot) {
  if (boot.kernel.empty()) {
    return config_error(
        "/boot/kernel: is required: set it to the path of a bzImage or ELF vmlinux");
  }
  if (has_nul(boot.kernel)) {
    return config_error("/boot/kernel: the path contains a NUL character");
  }
  if (has_nul(boot.initrd)) {
    return config_error("/boot/initrd: the path contains a NUL character");
  }
  if (boot.cmdline.size() > kMaxCmdlineBytes) {
    return config_error(fmt::format("/boot/cmdline: is {} bytes long; the maximum is {} bytes",
                                    boot.cmdline.size(), kMaxCmdlineBytes));
  }
  // The kernel reads the command line as one NUL-terminated line: a NUL would silently
  // cut it and a line break would be passed on as part of an argument.
  size_t bad = boot.cmdline.find_first_of(std::string_view("\0\n\r", 3));
  if (bad != std::string::npos) {
    std::string_view what = boot.cmdline[bad] == '\0' ? "a NUL character" : "a line break";
    return config_error(fmt::format(
        "/boot/cmdline: contains {} at byte {}; separate kernel arguments with spaces", what, bad));
  }
  return {};
}

Result<void> check_serial(const SerialSpec& serial) {
  if (serial.mode == SerialMode::kFile && serial.path.empty()) {
    return config_error(
        "/serial/path: is required when serial.mode is \"file\": set it to the file that "
        "receives the guest's console output");
  }
  if (serial.mode != SerialMode::kFile && !serial.path.empty()) {
    return config_error(fmt::format(
        "/serial/path: is only used with serial.mode \"file\", but the mode is \"{}\"; remove "
        "the path or set the mode to \"file\"",
        to_string(serial.mode)));
  }
  if (has_nul(serial.path)) {
    return config_error("/serial/path: the path contains a NUL character");
  }
  return {};
}

size_t edit_distance(std::string_view a, std::string_view b) {
  // Levenshtein distance, two rows.
  std::vector<size_t> previous(b.size() + 1);
  std::vector<size_t> current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitution});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

Result<void> check_spec_rules(const VmSpec& spec) {
  if (auto result = check_name(spec.name); !result) return result;
  if (auto result = check_machine(spec.machine); !result) return result;
  if (auto result = check_boot(spec.boot); !result) return result;
  if (auto result = check_serial(spec.serial); !result) return result;
  return check_device_rules(spec);
}

std::optional<std::vector<uint32_t>> parse_cpu_list(std::string_view text) {
  // Format of /sys/devices/system/{cpu,node}/{possible,online}: comma-separated decimal
  // numbers and inclusive ranges, ending with a newline (Documentation/ABI/.../cpu).
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  std::vector<uint32_t> cpus;
  if (text.empty()) return cpus;
  auto parse_number = [](std::string_view digits) -> std::optional<uint32_t> {
    if (digits.empty() || digits.size() > 9) return std::nullopt;
    uint32_t value = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      value = value * 10 + static_cast<uint32_t>(c - '0');
    }
    return value;
  };
  while (true) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    size_t dash = item.find('-');
    auto first = parse_number(item.substr(0, dash));
    auto last = dash == std::string_view::npos ? first : parse_number(item.substr(dash + 1));
    // CPU_SETSIZE bounds the range so a corrupt file cannot make us allocate without end.
    if (!first || !last || *first > *last || *last >= static_cast<uint32_t>(CPU_SETSIZE)) {
      return std::nullopt;
    }
    for (uint32_t cpu = *first; cpu <= *last; ++cpu) cpus.push_back(cpu);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return cpus;
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += fmt::format("\\u{:04x}", byte);
    } else {
      out += c;
    }
  }
  return out;
}

std::string escape_pointer_token(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return printable(out);
}

std::optional<std::string_view> closest_key(std::string_view key,
                                            std::span<const std::string_view> candidates) {
  std::string lower_key = lowercase(key);
  // A truncated key ("huge", "memory") is plainly meant as the key it starts.
  if (lower_key.size() >= 3) {
    for (std::string_view candidate : candidates) {
      if (lowercase(candidate).starts_with(lower_key)) return candidate;
    }
  }
  std::optional<std::string_view> best;
  size_t best_distance = SIZE_MAX;
  for (std::string_view candidate : candidates) {
    size_t distance = edit_distance(lower_key, lowercase(candidate));
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  if (!best) return std::nullopt;
  // A third of the key's length catches typos ("vcpu", "memory_mb") without proposing
  // unrelated keys for short junk.
  size_t threshold = std::max<size_t>(2, lower_key.size() / 3);
  if (best_distance <= threshold) return best;
  return std::nullopt;
}

}  // namespace skiff::config
