// SPDX-License-Identifier: Apache-2.0
// The functions include/skiff/spec.h declares, all defined here: reading a spec (file or
// text), validating it, writing it back as JSON, and the names of its enum values. The
// rules they apply live in the files listed in config/spec_rules.h.
#include "skiff/spec.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

#include "config/spec_json.h"
#include "config/spec_rules.h"

namespace skiff {

namespace {

// A spec is a few KiB; anything this large is the wrong file (or /dev/zero).
constexpr size_t kMaxSpecFileBytes = 16 * 1024 * 1024;

}  // namespace

// Parsing applies the host-independent rules too: a spec that parses is within every limit.
Result<VmSpec> parse_spec(std::string_view json_text, const std::filesystem::path& base_dir) {
  auto spec = config::read_spec_json(json_text, base_dir);
  if (!spec) return spec;
  if (auto result = config::check_spec_rules(*spec); !result) return std::unexpected(result.error());
  return spec;
}

Result<VmSpec> load_spec_file(const std::filesystem::path& path) {
  std::string context = fmt::format("spec file \"{}\"", path.string());
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return config_error(fmt::format("{}: {}", context, std::strerror(errno)));
  }
  std::string text;
  std::array<char, 64 * 1024> buffer;
  int read_errno = 0;
  while (true) {
    ssize_t count = ::read(fd, buffer.data(), buffer.size());
    if (count < 0) {
      if (errno == EINTR) continue;
      read_errno = errno;
      break;
    }
    if (count == 0) break;
    text.append(buffer.data(), static_cast<size_t>(count));
    if (text.size() > kMaxSpecFileBytes) break;
  }
  ::close(fd);
  if (read_errno != 0) {
    return config_error(fmt::format("{}: {}", context, std::strerror(read_errno)));
  }
  if (text.size() > kMaxSpecFileBytes) {
    return config_error(fmt::format("{}: larger than {} MiB; is this really a VM spec?", context,
                                    kMaxSpecFileBytes >> 20));
  }

  std::error_code ignored;
  std::filesystem::path base_dir = std::filesystem::absolute(path, ignored).parent_path();
  if (base_dir.empty()) base_dir = path.parent_path();
  auto spec = parse_spec(text, base_dir);
  if (!spec) return std::unexpected(spec.error().with_context(context));
  return spec;
}

Result<void> validate_spec(const VmSpec& spec) {
  if (auto result = config::check_spec_rules(spec); !result) return result;
  return config::check_host_rules(spec);
}

std::string spec_to_json(const VmSpec& spec) { return config::write_spec_json(spec); }

std::string_view to_string(HugePages hugepages) {
  switch (hugepages) {
    case HugePages::kNone:
      return "none";
    case HugePages::kTransparent:
      return "thp";
    case HugePages::k2M:
      return "2M";
    case HugePages::k1G:
      return "1G";
  }
  return "unknown";
}

std::string_view to_string(VirtioTransport transport) {
  switch (transport) {
    case VirtioTransport::kPci:
      return "pci";
    case VirtioTransport::kMmio:
      return "mmio";
  }
  return "unknown";
}

std::string_view to_string(SerialMode mode) {
  switch (mode) {
    case SerialMode::kStdout:
      return "stdout";
    case SerialMode::kFile:
      return "file";
    case SerialMode::kNone:
      return "none";
  }
  return "unknown";
}

std::string_view to_string(DiskCache cache) {
  switch (cache) {
    case DiskCache::kNone:
      return "none";
    case DiskCache::kWriteback:
      return "writeback";
    case DiskCache::kUnsafe:
      return "unsafe";
  }
  return "unknown";
}

std::string_view to_string(IoEngine engine) {
  switch (engine) {
    case IoEngine::kIoUring:
      return "io_uring";
    case IoEngine::kSync:
      return "sync";
  }
  return "unknown";
}

std::string_view to_string(DiscardMode mode) {
  switch (mode) {
    case DiscardMode::kUnmap:
      return "unmap";
    case DiscardMode::kIgnore:
      return "ignore";
  }
  return "unknown";
}

std::string format_mac(const MacAddress& mac) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3], mac[4],
                     mac[5]);
}

std::optional<MacAddress> parse_mac(std::string_view text) {
  // Exactly six two-digit hex groups separated by ':'.
  if (text.size() != 17) return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  MacAddress mac{};
  for (size_t i = 0; i < mac.size(); ++i) {
    const size_t at = i * 3;
    if (i != 0 && text[at - 1] != ':') return std::nullopt;
    const int high = hex(text[at]);
    const int low = hex(text[at + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    mac[i] = static_cast<uint8_t>(high * 16 + low);
  }
  return mac;
}

}  // namespace skiff
