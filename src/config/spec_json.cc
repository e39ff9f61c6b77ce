// SPDX-License-Identifier: Apache-2.0
// The JSON form of a spec, both ways. Reading: every object is checked for unknown keys
// before its fields are read, every value for its exact JSON type, and every error names
// the JSON pointer (RFC 6901) of the offending field. Writing: every field, defaults
// included, in the documented order. Field reference: docs/config.md.
#include "config/spec_json.h"

#include <algorithm>
#include <array>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "config/spec_rules.h"
#include "skiff/spec.h"

namespace skiff::config {

namespace {

// ordered_json keeps keys in document order: errors come in the order the user wrote the
// keys, and spec_to_json writes them in the documented order.
using json = nlohmann::ordered_json;

constexpr std::array<std::string_view, 10> kTopKeys = {"name",  "machine", "boot",    "serial", "rng",
                                                       "disks", "nets",    "balloon", "vsock",  "api"};
constexpr std::array<std::string_view, 9> kMachineKeys = {
    "vcpus",       "memory_mib",    "hugepages",     "prefault",    "lock_memory",
    "shared_memory", "vcpu_affinity", "numa_node", "mmio_cmdline"};
constexpr std::array<std::string_view, 1> kRngKeys = {"transport"};
constexpr std::array<std::string_view, 13> kDiskKeys = {
    "id",     "path",   "read_only", "shared",     "cache",      "io_engine",  "discard",
    "serial", "queues", "queue_size", "rate_limit", "poll_max_us", "transport"};
constexpr std::array<std::string_view, 11> kNetKeys = {
    "id",    "tap",        "tap_fd",   "mac",           "mtu",          "queues",
    "queue_size", "offloads", "rx_rate_limit", "tx_rate_limit", "transport"};
constexpr std::array<std::string_view, 5> kBalloonKeys = {
    "target_mib", "deflate_on_oom", "stats_interval_s", "free_page_reporting", "transport"};
constexpr std::array<std::string_view, 3> kVsockKeys = {"guest_cid", "socket", "transport"};
constexpr std::array<std::string_view, 1> kApiKeys = {"socket"};
constexpr std::array<std::string_view, 2> kDiskRateKeys = {"bytes_per_second", "ops_per_second"};
constexpr std::array<std::string_view, 2> kNetRateKeys = {"bytes_per_second", "packets_per_second"};
constexpr std::array<std::string_view, 3> kBootKeys = {"kernel", "initrd", "cmdline"};
constexpr std::array<std::string_view, 3> kSerialKeys = {"mode", "path", "input"};

// What a JSON value is, in the words an error message uses.
std::string describe(const json& value) {
  switch (value.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return fmt::format("boolean {}", value.get<bool>());
    case json::value_t::number_integer:
      return fmt::format("negative integer {}", value.get<int64_t>());
    case json::value_t::number_unsigned:
      return fmt::format("integer {}", value.get<uint64_t>());
    case json::value_t::number_float:
      return fmt::format("number {}", value.dump());
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "array";
    case json::value_t::object:
      return "object";
    default:
      return value.type_name();
  }
}

std::unexpected<Error> type_error(const std::string& pointer, std::string_view expected,
                                  const json& value) {
  return config_error(fmt::format("{}: expected {}, got {}", pointer, expected, describe(value)));
}

std::string child_pointer(const std::string& parent, std::string_view key) {
  return parent + "/" + escape_pointer_token(key);
}

// The fields of one JSON object, read with the object's pointer at hand.
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string pointer)
      : object_(object), pointer_(std::move(pointer)) {}

  // Rejects keys that are not in `allowed`, proposing the closest allowed one.
  Result<void> reject_unknown_keys(std::span<const std::string_view> allowed) const {
    for (const auto& [key, value] : object_.items()) {
      if (std::ranges::find(allowed, key) != allowed.end()) continue;
      std::string message = fmt::format("{}: unknown key", child_pointer(pointer_, key));
      if (auto suggestion = closest_key(key, allowed)) {
        message += fmt::format(" (did you mean \"{}\"?)", *suggestion);
      } else {
        std::string keys;
        for (std::string_view name : allowed) {
          keys += keys.empty() ? "" : ", ";
          keys += name;
        }
        message += fmt::format(" (known keys: {})", keys);
      }
      return config_error(std::move(message));
    }
    return {};
  }

  // The value at `key`, or nullptr when the key is absent.
  const json* find(std::string_view key) const {
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  std::string pointer(std::string_view key) const { return child_pointer(pointer_, key); }

  // Each reader leaves `out` untouched when the key is absent.
  Result<void> read_bool(std::string_view key, bool& out) const {
    const json* value = find(key);
    if (value == nullptr) return {};
    if (!value->is_boolean()) return type_error(pointer(key), "a boolean", *value);
    out = value->get<bool>();
    return {};
  }

  Result<void> read_string(std::string_view key, std::string& out) const {
    const json* value = find(key);
    if (value == nullptr) return {};
    if (!value->is_string()) return type_error(pointer(key), "a string", *value);
    out = value->get<std::string>();
    return {};
  }

  Result<void> read_u64(std::string_view key, uint64_t& out) const {
    const json* value = find(key);
    if (value == nullptr) return {};
    return unsigned_value(*value, pointer(key), out);
  }

  Result<void> read_u32(std::string_view key, uint32_t& out) const {
    const json* value = find(key);
    if (value == nullptr) return {};
    return u32_value(*value, pointer(key), out);
  }

  Result<void> read_u16(std::string_view key, uint16_t& out) const {
    const json* value = find(key);
    if (value == nullptr) return {};
    uint64_t wide = 0;
    if (auto result = unsigned_value(*value, pointer(key), wide); !result) return result;
    if (wide > std::numeric_limits<uint16_t>::max()) {
      return config_error(fmt::format("{}: {} is out of range: must be at most {}", pointer(key), wide,
                                      std::numeric_limits<uint16_t>::max()));
    }
    out = static_cast<uint16_t>(wide);
    return {};
  }

  // An enum spelled as one of its to_string() names.
  template <typename Enum, size_t N>
  Result<void> read_enum(std::string_view key, const std::array<Enum, N>& values, Enum& out) const {
    const json* value = find(key);
    if (value == nullptr) return {};
    if (!value->is_string()) return type_error(pointer(key), "a string", *value);
    const auto& text = value->get_ref<const std::string&>();
    std::string choices;
    for (size_t i = 0; i < N; ++i) {
      if (text == to_string(values[i])) {
        out = values[i];
        return {};
      }
      choices += fmt::format("{}\"{}\"", i == 0 ? "" : i + 1 == N ? " or " : ", ", to_string(values[i]));
    }
    return config_error(
        fmt::format("{}: unknown value \"{}\": use {}", pointer(key), printable(text), choices));
  }

  static Result<void> unsigned_value(const json& value, const std::string& pointer, uint64_t& out) {
    if (!value.is_number_unsigned()) return type_error(pointer, "an unsigned integer", value);
    out = value.get<uint64_t>();
    return {};
  }

  static Result<void> u32_value(const json& value, const std::string& pointer, uint32_t& out) {
    uint64_t wide = 0;
    if (auto result = unsigned_value(value, pointer, wide); !result) return result;
    if (wide > std::numeric_limits<uint32_t>::max()) {
      return config_error(fmt::format("{}: {} is out of range: must be at most {}", pointer, wide,
                                      std::numeric_limits<uint32_t>::max()));
    }
    out = static_cast<uint32_t>(wide);
    return {};
  }

  // A path: relative ones resolve against `base_dir`. JSON null means "not set".
  Result<void> read_path(std::string_view key, const std::filesystem::path& base_dir,
                         std::filesystem::path& out) const {
    const json* value = find(key);
    if (value == nullptr || value->is_null()) return {};
    if (!value->is_string()) return type_error(pointer(key), "a string or null", *value);
    const auto& text = value->get_ref<const std::string&>();
    if (text.empty()) {
      return config_error(fmt::format(
          "{}: is an empty string; give a path, or leave the key out (or null) for none",
          pointer(key)));
    }
    if (text.find('\0') != std::string::npos) {
      return config_error(fmt::format("{}: the path contains a NUL character", pointer(key)));
    }
    std::filesystem::path path(text);
    out = path.is_relative() && !base_dir.empty() ? base_dir / path : path;
    return {};
  }

 private:
  const json& object_;
  std::string pointer_;
};

// An optional JSON object: nullptr when the key is absent, an error when it is not an object.
Result<const json*> optional_object(const ObjectReader& parent, std::string_view key) {
  const json* value = parent.find(key);
  if (value == nullptr) return nullptr;
  if (!value->is_object()) return type_error(parent.pointer(key), "an object", *value);
  return value;
}

Result<HugePages> parse_hugepages(const json& value, const std::string& pointer) {
  if (!value.is_string()) return type_error(pointer, "a string", value);
  const auto& text = value.get_ref<const std::string&>();
  for (HugePages mode :
       {HugePages::kNone, HugePages::kTransparent, HugePages::k2M, HugePages::k1G}) {
    if (text == to_string(mode)) return mode;
  }
  return config_error(
      fmt::format("{}: unknown value \"{}\": use \"none\", \"thp\", \"2M\" or \"1G\"", pointer,
                  printable(text)));
}

Result<SerialMode> parse_serial_mode(const json& value, const std::string& pointer) {
  if (!value.is_string()) return type_error(pointer, "a string", value);
  const auto& text = value.get_ref<const std::string&>();
  for (SerialMode mode : {SerialMode::kStdout, SerialMode::kFile, SerialMode::kNone}) {
    if (text == to_string(mode)) return mode;
  }
  return config_error(fmt::format("{}: unknown value \"{}\": use \"stdout\", \"file\" or \"none\"",
                                  pointer, printable(text)));
}

Result<std::vector<std::vector<uint32_t>>> parse_affinity(const json& value,
                                                          const std::string& pointer) {
  if (!value.is_array())
    return type_error(pointer, "an array of arrays of host CPU numbers", value);
  std::vector<std::vector<uint32_t>> affinity;
  affinity.reserve(value.size());
  for (size_t vcpu = 0; vcpu < value.size(); ++vcpu) {
    const json& list = value[vcpu];
    std::string list_pointer = fmt::format("{}/{}", pointer, vcpu);
    if (!list.is_array()) return type_error(list_pointer, "an array of host CPU numbers", list);
    std::vector<uint32_t> cpus;
    cpus.reserve(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      uint32_t cpu = 0;
      if (auto result =
              ObjectReader::u32_value(list[i], fmt::format("{}/{}", list_pointer, i), cpu);
          !result) {
        return std::unexpected(result.error());
      }
      cpus.push_back(cpu);
    }
    affinity.push_back(std::move(cpus));
  }
  return affinity;
}

Result<void> parse_machine(const json& object, MachineSpec& machine) {
  ObjectReader reader(object, "/machine");
  if (auto result = reader.reject_unknown_keys(kMachineKeys); !result) return result;
  if (auto result = reader.read_u32("vcpus", machine.vcpus); !result) return result;
  if (auto result = reader.read_u64("memory_mib", machine.memory_mib); !result) return result;
  if (const json* value = reader.find("hugepages")) {
    auto hugepages = parse_hugepages(*value, reader.pointer("hugepages"));
    if (!hugepages) return std::unexpected(hugepages.error());
    machine.hugepages = *hugepages;
  }
  if (auto result = reader.read_bool("prefault", machine.prefault); !result) return result;
  if (auto result = reader.read_bool("lock_memory", machine.lock_memory); !result) return result;
  if (auto result = reader.read_bool("mmio_cmdline", machine.mmio_cmdline); !result) return result;
  if (auto result = reader.read_bool("shared_memory", machine.shared_memory); !result) {
    return result;
  }
  if (const json* value = reader.find("vcpu_affinity")) {
    auto affinity = parse_affinity(*value, reader.pointer("vcpu_affinity"));
    if (!affinity) return std::unexpected(affinity.error());
    machine.vcpu_affinity = std::move(*affinity);
  }
  if (const json* value = reader.find("numa_node"); value != nullptr && !value->is_null()) {
    uint32_t node = 0;
    if (!value->is_number_unsigned()) {
      return type_error(reader.pointer("numa_node"), "an unsigned integer or null", *value);
    }
    if (auto result = reader.read_u32("numa_node", node); !result) return result;
    machine.numa_node = node;
  }
  return {};
}

Result<void> parse_boot(const json& object, const std::filesystem::path& base_dir, BootSpec& boot) {
  ObjectReader reader(object, "/boot");
  if (auto result = reader.reject_unknown_keys(kBootKeys); !result) return result;
  const json* kernel = reader.find("kernel");
  bool kernel_empty =
      kernel != nullptr && kernel->is_string() && kernel->get_ref<const std::string&>().empty();
  if (kernel == nullptr || kernel->is_null() || kernel_empty) {
    return config_error(
        "/boot/kernel: is required: set it to the path of a bzImage or ELF vmlinux");
  }
  if (!kernel->is_string()) return type_error("/boot/kernel", "a string", *kernel);
  if (auto result = reader.read_path("kernel", base_dir, boot.kernel); !result) return result;
  if (auto result = reader.read_path("initrd", base_dir, boot.initrd); !result) return result;
  return reader.read_string("cmdline", boot.cmdline);
}

Result<void> parse_serial(const json& object, const std::filesystem::path& base_dir,
                          SerialSpec& serial) {
  ObjectReader reader(object, "/serial");
  if (auto result = reader.reject_unknown_keys(kSerialKeys); !result) return result;
  if (const json* value = reader.find("mode")) {
    auto mode = parse_serial_mode(*value, reader.pointer("mode"));
    if (!mode) return std::unexpected(mode.error());
    serial.mode = *mode;
  }
  if (auto result = reader.read_path("path", base_dir, serial.path); !result) return result;
  if (auto result = reader.read_bool("input", serial.input); !result) return result;
  // Input is forwarded only from an interactive stdout console; accepting `true` with
  // another mode would suggest the guest can be typed into when it cannot.
  if (reader.find("input") != nullptr && serial.input && serial.mode != SerialMode::kStdout) {
    return config_error(fmt::format(
        "/serial/input: true has no effect with serial.mode \"{}\": guest input is only read "
        "from stdin with mode \"stdout\"; remove the key or set it to false",
        to_string(serial.mode)));
  }
  return {};
}

Result<VirtioTransport> parse_transport(const json& value, const std::string& pointer) {
  if (!value.is_string()) return type_error(pointer, "a string", value);
  const auto& text = value.get_ref<const std::string&>();
  for (VirtioTransport transport : {VirtioTransport::kPci, VirtioTransport::kMmio}) {
    if (text == to_string(transport)) return transport;
  }
  return config_error(fmt::format("{}: unknown value \"{}\": use \"pci\" or \"mmio\"", pointer,
                                  printable(text)));
}

Result<void> parse_rng(const json& object, RngSpec& rng) {
  ObjectReader reader(object, "/rng");
  if (auto result = reader.reject_unknown_keys(kRngKeys); !result) return result;
  if (const json* value = reader.find("transport")) {
    auto transport = parse_transport(*value, reader.pointer("transport"));
    if (!transport) return std::unexpected(transport.error());
    rng.transport = *transport;
  }
  return {};
}

Result<void> read_transport(const ObjectReader& reader, VirtioTransport& out) {
  const json* value = reader.find("transport");
  if (value == nullptr) return {};
  auto transport = parse_transport(*value, reader.pointer("transport"));
  if (!transport) return std::unexpected(transport.error());
  out = *transport;
  return {};
}

// {"bytes_per_second": N, "<ops_key>": N}; null or absent = unlimited.
Result<void> read_rate_limit(const ObjectReader& parent, std::string_view key,
                             std::span<const std::string_view> keys, RateLimitSpec& out) {
  const json* value = parent.find(key);
  if (value == nullptr || value->is_null()) return {};
  if (!value->is_object()) return type_error(parent.pointer(key), "an object or null", *value);
  ObjectReader reader(*value, parent.pointer(key));
  if (auto result = reader.reject_unknown_keys(keys); !result) return result;
  if (auto result = reader.read_u64(keys[0], out.bytes_per_second); !result) return result;
  return reader.read_u64(keys[1], out.ops_per_second);
}

// The elements of an optional array of objects ("disks", "nets"), each with its pointer.
Result<std::vector<std::pair<const json*, std::string>>> object_list(const ObjectReader& top,
                                                                      std::string_view key) {
  std::vector<std::pair<const json*, std::string>> items;
  const json* value = top.find(key);
  if (value == nullptr || value->is_null()) return items;
  if (!value->is_array()) return type_error(top.pointer(key), "an array of objects", *value);
  for (size_t i = 0; i < value->size(); ++i) {
    std::string pointer = fmt::format("{}/{}", top.pointer(key), i);
    if (!(*value)[i].is_object()) return type_error(pointer, "an object", (*value)[i]);
    items.emplace_back(&(*value)[i], std::move(pointer));
  }
  return items;
}

Result<void> parse_disk(const json& object, const std::string& pointer, const std::filesystem::path& base_dir,
                        DiskSpec& disk) {
  ObjectReader reader(object, pointer);
  if (auto result = reader.reject_unknown_keys(kDiskKeys); !result) return result;
  if (auto result = reader.read_string("id", disk.id); !result) return result;
  const json* path = reader.find("path");
  if (path == nullptr || path->is_null()) {
    return config_error(fmt::format(
        "{}/path: is required: the disk image file or block device, e.g. /dev/zvol/tank/vm", pointer));
  }
  if (auto result = reader.read_path("path", base_dir, disk.path); !result) return result;
  if (auto result = reader.read_bool("read_only", disk.read_only); !result) return result;
  if (auto result = reader.read_bool("shared", disk.shared); !result) return result;
  if (const json* cache = reader.find("cache"); cache != nullptr && !cache->is_null()) {
    DiskCache mode = DiskCache::kNone;
    constexpr std::array kModes = {DiskCache::kNone, DiskCache::kWriteback, DiskCache::kUnsafe};
    if (auto result = reader.read_enum("cache", kModes, mode); !result) return result;
    disk.cache = mode;
  }
  constexpr std::array kEngines = {IoEngine::kIoUring, IoEngine::kSync};
  if (auto result = reader.read_enum("io_engine", kEngines, disk.io_engine); !result) return result;
  constexpr std::array kDiscard = {DiscardMode::kUnmap, DiscardMode::kIgnore};
  if (auto result = reader.read_enum("discard", kDiscard, disk.discard); !result) return result;
  if (auto result = reader.read_string("serial", disk.serial); !result) return result;
  if (auto result = reader.read_u16("queues", disk.queues); !result) return result;
  if (auto result = reader.read_u16("queue_size", disk.queue_size); !result) return result;
  if (auto result = read_rate_limit(reader, "rate_limit", kDiskRateKeys, disk.rate_limit); !result) return result;
  if (auto result = reader.read_u32("poll_max_us", disk.poll_max_us); !result) return result;
  return read_transport(reader, disk.transport);
}

Result<void> parse_net(const json& object, const std::string& pointer, NetSpec& net) {
  ObjectReader reader(object, pointer);
  if (auto result = reader.reject_unknown_keys(kNetKeys); !result) return result;
  if (auto result = reader.read_string("id", net.id); !result) return result;
  if (const json* tap = reader.find("tap"); tap != nullptr && !tap->is_null()) {
    if (auto result = reader.read_string("tap", net.tap); !result) return result;
  }
  if (const json* fd = reader.find("tap_fd"); fd != nullptr && !fd->is_null()) {
    uint32_t value = 0;
    if (auto result = reader.read_u32("tap_fd", value); !result) return result;
    if (value > static_cast<uint32_t>(std::numeric_limits<int>::max())) {
      return config_error(fmt::format("{}: {} is not a file descriptor number", reader.pointer("tap_fd"), value));
    }
    net.tap_fd = static_cast<int>(value);
  }
  if (const json* mac = reader.find("mac"); mac != nullptr && !mac->is_null()) {
    if (!mac->is_string()) return type_error(reader.pointer("mac"), "a string or null", *mac);
    const auto& text = mac->get_ref<const std::string&>();
    auto parsed = parse_mac(text);
    if (!parsed) {
      return config_error(fmt::format("{}: \"{}\" is not a MAC address; write six hex bytes like "
                                      "\"52:54:00:12:34:56\", or leave the key out for a generated one",
                                      reader.pointer("mac"), printable(text)));
    }
    net.mac = *parsed;
  }
  if (const json* mtu = reader.find("mtu"); mtu != nullptr && !mtu->is_null()) {
    uint32_t value = 0;
    if (auto result = reader.read_u32("mtu", value); !result) return result;
    net.mtu = value;
  }
  if (auto result = reader.read_u16("queues", net.queues); !result) return result;
  if (auto result = reader.read_u16("queue_size", net.queue_size); !result) return result;
  if (auto result = reader.read_bool("offloads", net.offloads); !result) return result;
  if (auto result = read_rate_limit(reader, "rx_rate_limit", kNetRateKeys, net.rx_rate_limit); !result) return result;
  if (auto result = read_rate_limit(reader, "tx_rate_limit", kNetRateKeys, net.tx_rate_limit); !result) return result;
  return read_transport(reader, net.transport);
}

Result<void> parse_balloon(const json& object, BalloonSpec& balloon) {
  ObjectReader reader(object, "/balloon");
  if (auto result = reader.reject_unknown_keys(kBalloonKeys); !result) return result;
  if (auto result = reader.read_u64("target_mib", balloon.target_mib); !result) return result;
  if (auto result = reader.read_bool("deflate_on_oom", balloon.deflate_on_oom); !result) return result;
  if (auto result = reader.read_u32("stats_interval_s", balloon.stats_interval_s); !result) return result;
  if (auto result = reader.read_bool("free_page_reporting", balloon.free_page_reporting); !result) return result;
  return read_transport(reader, balloon.transport);
}

Result<void> parse_vsock(const json& object, const std::filesystem::path& base_dir, VsockSpec& vsock) {
  ObjectReader reader(object, "/vsock");
  if (auto result = reader.reject_unknown_keys(kVsockKeys); !result) return result;
  // Required in JSON although VsockSpec has a default: the CID is the guest's address,
  // which someone running several VMs should choose per VM rather than inherit.
  if (reader.find("guest_cid") == nullptr || reader.find("guest_cid")->is_null()) {
    return config_error("/vsock/guest_cid: missing; give the guest's context ID, 3 or above, e.g. 3");
  }
  if (auto result = reader.read_u32("guest_cid", vsock.guest_cid); !result) return result;
  const json* socket = reader.find("socket");
  if (socket == nullptr || socket->is_null()) {
    return config_error(
        "/vsock/socket: missing; give the path of the vsock Unix socket, e.g. \"/run/skiff/vm1.vsock\"");
  }
  // read_path's messages offer null and leaving the key out, which this key does not allow.
  if (!socket->is_string()) return type_error(reader.pointer("socket"), "a string", *socket);
  if (socket->get_ref<const std::string&>().empty()) {
    return config_error("/vsock/socket: empty; give the path of the vsock Unix socket");
  }
  if (auto result = reader.read_path("socket", base_dir, vsock.socket); !result) return result;
  return read_transport(reader, vsock.transport);
}

Result<void> parse_api(const json& object, const std::filesystem::path& base_dir, ApiSpec& api) {
  ObjectReader reader(object, "/api");
  if (auto result = reader.reject_unknown_keys(kApiKeys); !result) return result;
  if (reader.find("socket") == nullptr || reader.find("socket")->is_null()) {
    return config_error("/api/socket: missing; give the path of the API's Unix socket, e.g. \"/run/skiff/vm.sock\"");
  }
  return reader.read_path("socket", base_dir, api.socket);
}

// Watches the parser's events for what nlohmann::json accepts but a spec must not have:
// duplicate keys (nlohmann keeps the last of two equal keys silently, and a spec with two
// "memory_mib" is a mistake worth reporting) and absurd nesting.
class ParseWatcher {
 public:
  bool on_event(json::parse_event_t event, const json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (frames_.size() >= kMaxNestingDepth && !error_) {
          error_ = fmt::format("{}: nested deeper than {} levels; this is not a VM spec",
                               pointer_to_current(), kMaxNestingDepth);
        }
        frames_.push_back(Frame{event == json::parse_event_t::array_start, {}, {}, 0});
        break;
      case json::parse_event_t::key: {
        Frame& frame = frames_.back();
        frame.key = parsed.get<std::string>();
        if (!frame.keys.insert(frame.key).second && !error_) {
          error_ = fmt::format("{}: duplicate key; each key may appear only once per object",
                               pointer_to_current());
        }
        break;
      }
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        frames_.pop_back();
        element_done();
        break;
      case json::parse_event_t::value:
        element_done();
        break;
    }
    return true;
  }
  const std::optional<std::string>& error() const { return error_; }

 private:
  // The deepest legitimate spec value, /machine/vcpu_affinity/N/M, is at depth 4.
  static constexpr size_t kMaxNestingDepth = 64;

  struct Frame {
    bool is_array;
    std::set<std::string> keys;  // seen so far, in objects
    std::string key;             // current key, in objects
    size_t index;                // current element, in arrays
  };

  // The pointer of the value being parsed. Built only for an error message: each frame
  // keeps just its own position, so memory stays linear in the nesting depth.
  std::string pointer_to_current() const {
    std::string pointer;
    for (const Frame& frame : frames_) {
      pointer = frame.is_array ? fmt::format("{}/{}", pointer, frame.index)
                               : child_pointer(pointer, frame.key);
    }
    return pointer.empty() ? "/" : pointer;
  }
  void element_done() {
    if (!frames_.empty() && frames_.back().is_array) ++frames_.back().index;
  }

  std::vector<Frame> frames_;
  std::optional<std::string> error_;
};

// nlohmann reports the 1-based byte offset of the character that stopped the parser.
std::pair<size_t, size_t> line_and_column(std::string_view text, size_t byte) {
  size_t end = std::min(byte == 0 ? 0 : byte - 1, text.size());
  size_t line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < end; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return {line, end - line_start + 1};
}

// nlohmann's message minus its "[json.exception...] parse error at line L, column C: "
// prefix, with control bytes (which "last read" may quote) made printable.
std::string parser_reason(std::string_view what) {
  size_t at = what.find("parse error");
  if (at != std::string_view::npos) {
    size_t colon = what.find(": ", at);
    if (colon != std::string_view::npos) what.remove_prefix(colon + 2);
  } else if (size_t bracket = what.find("] "); what.starts_with("[") && bracket != what.npos) {
    what.remove_prefix(bracket + 2);
  }
  std::string reason(what);
  for (char& c : reason) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return reason;
}

Result<json> parse_json(std::string_view text) {
  ParseWatcher watcher;
  json document;
  try {
    document = json::parse(text.begin(), text.end(),
                           [&watcher](int /*depth*/, json::parse_event_t event, json& parsed) {
                             return watcher.on_event(event, parsed);
                           });
  } catch (const json::parse_error& error) {
    auto [line, column] = line_and_column(text, error.byte);
    return config_error(fmt::format("invalid JSON at line {}, column {}: {}", line, column,
                                    parser_reason(error.what())));
  } catch (const json::exception& error) {
    // E.g. out_of_range.406, a number too large for a double; nlohmann gives no position.
    return config_error(fmt::format("invalid JSON: {}", parser_reason(error.what())));
  }
  if (watcher.error()) return config_error(*watcher.error());
  return document;
}

}  // namespace

Result<VmSpec> read_spec_json(std::string_view json_text, const std::filesystem::path& base_dir) {
  auto document = parse_json(json_text);
  if (!document) return std::unexpected(document.error());
  if (!document->is_object()) return type_error("/", "a JSON object", *document);

  VmSpec spec;
  ObjectReader top(*document, "");
  if (auto result = top.reject_unknown_keys(kTopKeys); !result) {
    return std::unexpected(result.error());
  }
  if (auto result = top.read_string("name", spec.name); !result) {
    return std::unexpected(result.error());
  }

  auto machine = optional_object(top, "machine");
  if (!machine) return std::unexpected(machine.error());
  if (*machine != nullptr) {
    if (auto result = parse_machine(**machine, spec.machine); !result) {
      return std::unexpected(result.error());
    }
  }

  auto boot = optional_object(top, "boot");
  if (!boot) return std::unexpected(boot.error());
  if (*boot == nullptr) {
    return config_error(
        "/boot: is required: it names at least the kernel, e.g. "
        "\"boot\": {\"kernel\": \"vmlinuz\"}");
  }
  if (auto result = parse_boot(**boot, base_dir, spec.boot); !result) {
    return std::unexpected(result.error());
  }

  auto serial = optional_object(top, "serial");
  if (!serial) return std::unexpected(serial.error());
  if (*serial != nullptr) {
    if (auto result = parse_serial(**serial, base_dir, spec.serial); !result) {
      return std::unexpected(result.error());
    }
  }

  // "rng": null means no device, like leaving the key out (spec_to_json writes it so).
  const json* rng_value = top.find("rng");
  auto rng = rng_value != nullptr && rng_value->is_null() ? Result<const json*>(nullptr)
                                                          : optional_object(top, "rng");
  if (!rng) return std::unexpected(rng.error());
  if (*rng != nullptr) {
    spec.rng.emplace();
    if (auto result = parse_rng(**rng, *spec.rng); !result) return std::unexpected(result.error());
  }

  auto disks = object_list(top, "disks");
  if (!disks) return std::unexpected(disks.error());
  for (const auto& [object, pointer] : *disks) {
    DiskSpec& disk = spec.disks.emplace_back();
    if (auto result = parse_disk(*object, pointer, base_dir, disk); !result) return std::unexpected(result.error());
  }
  auto nets = object_list(top, "nets");
  if (!nets) return std::unexpected(nets.error());
  for (const auto& [object, pointer] : *nets) {
    NetSpec& net = spec.nets.emplace_back();
    if (auto result = parse_net(*object, pointer, net); !result) return std::unexpected(result.error());
  }
  const json* balloon_value = top.find("balloon");
  auto balloon = balloon_value != nullptr && balloon_value->is_null() ? Result<const json*>(nullptr)
                                                                      : optional_object(top, "balloon");
  if (!balloon) return std::unexpected(balloon.error());
  if (*balloon != nullptr) {
    spec.balloon.emplace();
    if (auto result = parse_balloon(**balloon, *spec.balloon); !result) return std::unexpected(result.error());
  }

  const json* vsock_value = top.find("vsock");
  auto vsock = vsock_value != nullptr && vsock_value->is_null() ? Result<const json*>(nullptr)
                                                                : optional_object(top, "vsock");
  if (!vsock) return std::unexpected(vsock.error());
  if (*vsock != nullptr) {
    spec.vsock.emplace();
    if (auto result = parse_vsock(**vsock, base_dir, *spec.vsock); !result) return std::unexpected(result.error());
  }

  const json* api_value = top.find("api");
  auto api = api_value != nullptr && api_value->is_null() ? Result<const json*>(nullptr) : optional_object(top, "api");
  if (!api) return std::unexpected(api.error());
  if (*api != nullptr) {
    spec.api.emplace();
    if (auto result = parse_api(**api, base_dir, *spec.api); !result) return std::unexpected(result.error());
  }
  return spec;
}

std::string write_spec_json(const VmSpec& spec) {
  const MachineSpec& machine = spec.machine;
  json affinity = json::array();
  for (const auto& cpus : machine.vcpu_affinity) affinity.push_back(cpus);

  json document = {
      {"name", spec.name},
      {"machine",
       {
           {"vcpus", machine.vcpus},
           {"memory_mib", machine.memory_mib},
           {"hugepages", to_string(machine.hugepages)},
           {"prefault", machine.prefault},
           {"lock_memory", machine.lock_memory},
           {"shared_memory", machine.shared_memory},
           {"vcpu_affinity", std::move(affinity)},
           {"numa_node", machine.numa_node ? json(*machine.numa_node) : json(nullptr)},
           {"mmio_cmdline", machine.mmio_cmdline},
       }},
      {"boot",
       {
           {"kernel", spec.boot.kernel.string()},
           {"initrd", spec.boot.initrd.empty() ? json(nullptr) : json(spec.boot.initrd.string())},
           {"cmdline", spec.boot.cmdline},
       }},
  };
  json serial = {
      {"mode", to_string(spec.serial.mode)},
      {"path", spec.serial.path.empty() ? json(nullptr) : json(spec.serial.path.string())},
  };
  // `input: true` is refused with the other modes, where it has no effect; writing only a
  // `false` there keeps parse_spec(spec_to_json(s)) == s for every valid spec.
  if (spec.serial.mode == SerialMode::kStdout || !spec.serial.input) {
    serial["input"] = spec.serial.input;
  }
  document["serial"] = std::move(serial);
  document["rng"] = spec.rng ? json{{"transport", to_string(spec.rng->transport)}} : json(nullptr);
  json disks = json::array();
  for (const DiskSpec& disk : spec.disks) {
    disks.push_back({
        {"id", disk.id},
        {"path", disk.path.string()},
        {"read_only", disk.read_only},
        {"shared", disk.shared},
        {"cache", disk.cache ? json(to_string(*disk.cache)) : json(nullptr)},
        {"io_engine", to_string(disk.io_engine)},
        {"discard", to_string(disk.discard)},
        {"serial", disk.serial},
        {"queues", disk.queues},
        {"queue_size", disk.queue_size},
        {"rate_limit",
         {{"bytes_per_second", disk.rate_limit.bytes_per_second},
          {"ops_per_second", disk.rate_limit.ops_per_second}}},
        {"poll_max_us", disk.poll_max_us},
        {"transport", to_string(disk.transport)},
    });
  }
  document["disks"] = std::move(disks);
  json nets = json::array();
  auto rate = [](const RateLimitSpec& limit) {
    return json{{"bytes_per_second", limit.bytes_per_second}, {"packets_per_second", limit.ops_per_second}};
  };
  for (const NetSpec& net : spec.nets) {
    nets.push_back({
        {"id", net.id},
        {"tap", net.tap.empty() ? json(nullptr) : json(net.tap)},
        {"tap_fd", net.tap_fd ? json(*net.tap_fd) : json(nullptr)},
        {"mac", net.mac ? json(format_mac(*net.mac)) : json(nullptr)},
        {"mtu", net.mtu ? json(*net.mtu) : json(nullptr)},
        {"queues", net.queues},
        {"queue_size", net.queue_size},
        {"offloads", net.offloads},
        {"rx_rate_limit", rate(net.rx_rate_limit)},
        {"tx_rate_limit", rate(net.tx_rate_limit)},
        {"transport", to_string(net.transport)},
    });
  }
  document["nets"] = std::move(nets);
  document["balloon"] = spec.balloon ? json{{"target_mib", spec.balloon->target_mib},
                                            {"deflate_on_oom", spec.balloon->deflate_on_oom},
                                            {"stats_interval_s", spec.balloon->stats_interval_s},
                                            {"free_page_reporting", spec.balloon->free_page_reporting},
                                            {"transport", to_string(spec.balloon->transport)}}
                                     : json(nullptr);
  document["vsock"] = spec.vsock ? json{{"guest_cid", spec.vsock->guest_cid},
                                        {"socket", spec.vsock->socket.string()},
                                        {"transport", to_string(spec.vsock->transport)}}
                                 : json(nullptr);
  document["api"] = spec.api ? json{{"socket", spec.api->socket.string()}} : json(nullptr);
  // Non-UTF-8 bytes (possible in paths built in code) are replaced rather than thrown on.
  return document.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace skiff::config
