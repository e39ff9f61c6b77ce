// SPDX-License-Identifier: Apache-2.0
#include "state/state_blob.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace skiff::state {

using Json = nlohmann::json;

namespace {

constexpr const char* kKindKey = "kind";
constexpr const char* kVersionKey = "version";
constexpr const char* kFieldsKey = "fields";

// Checks the envelope of a decoded blob, recursively for nested blobs found in fields.
Result<void> check_envelope(const Json& doc, unsigned depth) {
  if (depth > kMaxBlobDepth) return config_error(fmt::format("state nested deeper than {} levels", kMaxBlobDepth));
  if (!doc.is_object()) return config_error("state: not a map");
  auto kind = doc.find(kKindKey);
  if (kind == doc.end() || !kind->is_string() || kind->get_ref<const std::string&>().empty() ||
      kind->get_ref<const std::string&>().size() > 64) {
    return config_error("state: missing or invalid \"kind\"");
  }
  const std::string& name = kind->get_ref<const std::string&>();
  auto version = doc.find(kVersionKey);
  if (version == doc.end() || !version->is_number_unsigned() || version->get<uint64_t>() == 0 ||
      version->get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
    return config_error(fmt::format("state of {}: missing or invalid \"version\"", name));
  }
  auto fields = doc.find(kFieldsKey);
  if (fields == doc.end() || !fields->is_object()) {
    return config_error(fmt::format("state of {}: missing \"fields\" map", name));
  }
  if (doc.size() != 3) return config_error(fmt::format("state of {}: unexpected keys beside kind, version, fields", name));
  // Nested blobs: a field holding a map is a blob, a list of maps a list of blobs.
  for (const auto& [key, value] : fields->items()) {
    if (value.is_object()) {
      if (auto r = check_envelope(value, depth + 1); !r) return std::unexpected(r.error().with_context(name + "." + key));
    } else if (value.is_array()) {
      for (const Json& item : value) {
        if (!item.is_object()) continue;
        if (auto r = check_envelope(item, depth + 1); !r) {
          return std::unexpected(r.error().with_context(name + "." + key));
        }
      }
    }
  }
  return {};
}

// Walks the CBOR items of `bytes` without recursion and refuses what our encoder never
// writes (indefinite lengths, tags), nesting deeper than a blob may (three levels per blob:
// envelope, fields, list), lengths past the end, and trailing bytes.
Result<void> check_cbor_shape(std::span<const uint8_t> bytes) {
  constexpr size_t kMaxNesting = 3 * kMaxBlobDepth + 4;
  std::vector<uint64_t> pending;  // items still expected at each open container level
  size_t pos = 0;
  uint64_t top_level = 1;
  auto fail = [&](std::string_view why) { return config_error(fmt::format("state: bad CBOR at byte {}: {}", pos, why)); };
  while (true) {
    uint64_t& remaining = pending.empty() ? top_level : pending.back();
    if (remaining == 0) {
      if (pending.empty()) break;
      pending.pop_back();
      continue;
    }
    --remaining;
    if (pos >= bytes.size()) return fail("truncated");
    const uint8_t initial = bytes[pos++];
    const uint8_t major = initial >> 5;
    const uint8_t info = initial & 0x1f;
    uint64_t argument = info;
    if (info >= 24 && info <= 27) {
      const size_t width = size_t{1} << (info - 24);
      if (bytes.size() - pos < width) return fail("truncated length");
      argument = 0;
      for (size_t i = 0; i < width; ++i) argument = (argument << 8) | bytes[pos++];
    } else if (info > 27) {
      return fail("indefinite length or reserved encoding");
    }
    switch (major) {
      case 0:
      case 1:
        break;  // integers
      case 2:
      case 3:  // byte and text strings
        if (argument > bytes.size() - pos) return fail("string past the end");
        pos += static_cast<size_t>(argument);
        break;
      case 4:
      case 5: {  // arrays and maps
        const uint64_t items = major == 5 ? argument * 2 : argument;
        if (major == 5 && argument > bytes.size()) return fail("map larger than the blob");
        if (items > bytes.size() - pos) return fail("more items than bytes left");
        if (pending.size() >= kMaxNesting) return fail("nested too deeply");
        pending.push_back(items);
        break;
      }
      case 6:
        return fail("tags are not used in state");
      case 7:
        break;  // simple values and floats: the argument bytes were consumed above
    }
  }
  if (pos != bytes.size()) return fail("trailing bytes");
  return {};
}

std::string to_hex(const std::vector<uint8_t>& bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) out += fmt::format("{:02x}", b);
  return out;
}

// JSON text of a blob's document with binary values shown as hex strings.
Json printable(const Json& doc) {
  if (doc.is_binary()) return "0x" + to_hex(doc.get_binary());
  if (doc.is_object()) {
    Json out = Json::object();
    for (const auto& [key, value] : doc.items()) out[key] = printable(value);
    return out;
  }
  if (doc.is_array()) {
    Json out = Json::array();
    for (const Json& value : doc) out.push_back(printable(value));
    return out;
  }
  return doc;
}

}  // namespace

struct StateBlob::Impl {
  Json doc;
  Json& fields() { return doc[kFieldsKey]; }
  const Json* field(std::string_view name) const {
    const Json& all = doc.at(kFieldsKey);
    auto it = all.find(name);
    return it == all.end() ? nullptr : &*it;
  }
};

StateBlob::StateBlob(std::string_view kind, uint32_t version) : impl_(std::make_unique<Impl>()) {
  impl_->doc = Json::object();
  impl_->doc[kKindKey] = std::string(kind);
  impl_->doc[kVersionKey] = version;
  impl_->doc[kFieldsKey] = Json::object();
}

StateBlob::StateBlob(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StateBlob::StateBlob(const StateBlob& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
StateBlob::StateBlob(StateBlob&& other) noexcept : impl_(std::make_unique<Impl>()) { std::swap(impl_, other.impl_); }
StateBlob& StateBlob::operator=(const StateBlob& other) {
  if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
StateBlob& StateBlob::operator=(StateBlob&& other) noexcept {
  std::swap(impl_, other.impl_);
  return *this;
}
StateBlob::~StateBlob() = default;

std::string StateBlob::kind() const { return impl_->doc.at(kKindKey).get<std::string>(); }
uint32_t StateBlob::version() const { return impl_->doc.at(kVersionKey).get<uint32_t>(); }

Result<void> StateBlob::expect(std::string_view kind, uint32_t max_version) const {
  const std::string actual = this->kind();
  if (actual != kind) return config_error(fmt::format("state of {} where {} was expected", actual, kind));
  if (version() == 0 || version() > max_version) {
    return config_error(fmt::format("state of {}: version {} is newer than this skiff reads (up to {})", actual,
                                    version(), max_version));
  }
  return {};
}

Error StateBlob::field_error(std::string_view field, std::string_view what) const {
  return Error(ErrorKind::kConfig, fmt::format("state of {}: field \"{}\" {}", kind(), field, what));
}

// ---- Writing -------------------------------------------------------------------------------

StateBlob& StateBlob::put(std::string_view field, uint64_t value) {
  impl_->fields()[std::string(field)] = value;
  return *this;
}
StateBlob& StateBlob::put_bool(std::string_view field, bool value) {
  impl_->fields()[std::string(field)] = value;
  return *this;
}
StateBlob& StateBlob::put_string(std::string_view field, std::string_view value) {
  impl_->fields()[std::string(field)] = std::string(value);
  return *this;
}
StateBlob& StateBlob::put_bytes(std::string_view field, std::span<const uint8_t> value) {
  impl_->fields()[std::string(field)] = Json::binary(std::vector<uint8_t>(value.begin(), value.end()));
  return *this;
}
StateBlob& StateBlob::put_u64s(std::string_view field, std::span<const uint64_t> values) {
  Json list = Json::array();
  for (uint64_t v : values) list.push_back(v);
  impl_->fields()[std::string(field)] = std::move(list);
  return *this;
}
StateBlob& StateBlob::put_blob(std::string_view field, const StateBlob& value) {
  impl_->fields()[std::string(field)] = value.impl_->doc;
  return *this;
}
StateBlob& StateBlob::put_blobs(std::string_view field, std::span<const StateBlob> values) {
  Json list = Json::array();
  for (const StateBlob& v : values) list.push_back(v.impl_->doc);
  impl_->fields()[std::string(field)] = std::move(list);
  return *this;
}

// ---- Reading -------------------------------------------------------------------------------

bool StateBlob::has(std::string_view field) const { return impl_->field(field) != nullptr; }

std::vector<std::string> StateBlob::field_names() const {
  std::vector<std::string> names;
  for (const auto& [name, value] : impl_->doc.at(kFieldsKey).items()) names.push_back(name);
  return names;
}

Result<uint64_t> StateBlob::u64(std::string_view field, uint64_t max) const {
  const Json* value = impl_->field(field);
  if (!value) return std::unexpected(field_error(field, "is missing"));
  if (!value->is_number_unsigned()) return std::unexpected(field_error(field, "is not an unsigned integer"));
  const uint64_t v = value->get<uint64_t>();
  if (v > max) return std::unexpected(field_error(field, fmt::format("is {}, above the maximum {}", v, max)));
  return v;
}

Result<bool> StateBlob::boolean(std::string_view field) const {
  const Json* value = impl_->field(field);
  if (!value) return std::unexpected(field_error(field, "is missing"));
  if (!value->is_boolean()) return std::unexpected(field_error(field, "is not a boolean"));
  return value->get<bool>();
}

Result<std::string> StateBlob::string(std::string_view field, size_t max_length) const {
  const Json* value = impl_->field(field);
  if (!value) return std::unexpected(field_error(field, "is missing"));
  if (!value->is_string()) return std::unexpected(field_error(field, "is not a string"));
  const auto& s = value->get_ref<const std::string&>();
  if (s.size() > max_length) {
    return std::unexpected(field_error(field, fmt::format("is {} bytes long, above the maximum {}", s.size(), max_length)));
  }
  return s;
}

Result<std::vector<uint8_t>> StateBlob::bytes(std::string_view field, size_t max_length) const {
  const Json* value = impl_->field(field);
  if (!value) return std::unexpected(field_error(field, "is missing"));
  if (!value->is_binary()) return std::unexpected(field_error(field, "is not a byte string"));
  const auto& b = value->get_binary();
  if (b.size() > max_length) {
    return std::unexpected(field_error(field, fmt::format("holds {} bytes, above the maximum {}", b.size(), max_length)));
  }
  return std::vector<uint8_t>(b.begin(), b.end());
}

Result<std::vector<uint8_t>> StateBlob::bytes_exact(std::string_view field, size_t length) const {
  auto b = bytes(field, length);
  if (!b) return b;
  if (b->size() != length) {
    return std::unexpected(field_error(field, fmt::format("holds {} bytes instead of {}", b->size(), length)));
  }
  return b;
}

Result<std::vector<uint64_t>> StateBlob::u64s(std::string_view field, size_t max_items, uint64_t max_value) const {
  const Json* value = impl_->field(field);
  if (!value) return std::unexpected(field_error(field, "is missing"));
  if (!value->is_array()) return std::unexpected(field_error(field, "is not a list"));
  if (value->size() > max_items) {
    return std::unexpected(field_error(field, fmt::format("has {} items, above the maximum {}", value->size(), max_items)));
  }
  std::vector<uint64_t> out;
  out.reserve(value->size());
  for (size_t i = 0; i < value->size(); ++i) {
    const Json& item = (*value)[i];
    if (!item.is_number_unsigned()) return std::unexpected(field_error(field, fmt::format("item {} is not an unsigned integer", i)));
    const uint64_t v = item.get<uint64_t>();
    if (v > max_value) {
      return std::unexpected(field_error(field, fmt::format("item {} is {}, above the maximum {}", i, v, max_value)));
    }
    out.push_back(v);
  }
  return out;
}

Result<StateBlob> StateBlob::blob(std::string_view field) const {
  const Json* value = impl_->field(field);
  if (!value) return std::unexpected(field_error(field, "is missing"));
  if (!value->is_object()) return std::unexpected(field_error(field, "is not a nested state"));
  // decode() checked the envelope of every nested blob; blobs built in memory are well formed.
  auto impl = std::make_unique<Impl>();
  impl->doc = *value;
  return StateBlob(std::move(impl));
}

Result<std::vector<StateBlob>> StateBlob::blobs(std::string_view field, size_t max_items) const {
  const Json* value = impl_->field(field);
  if (!value) return std::unexpected(field_error(field, "is missing"));
  if (!value->is_array()) return std::unexpected(field_error(field, "is not a list"));
  if (value->size() > max_items) {
    return std::unexpected(field_error(field, fmt::format("has {} items, above the maximum {}", value->size(), max_items)));
  }
  std::vector<StateBlob> out;
  out.reserve(value->size());
  for (size_t i = 0; i < value->size(); ++i) {
    if (!(*value)[i].is_object()) return std::unexpected(field_error(field, fmt::format("item {} is not a nested state", i)));
    auto impl = std::make_unique<Impl>();
    impl->doc = (*value)[i];
    out.push_back(StateBlob(std::move(impl)));
  }
  return out;
}

// ---- Encoding ------------------------------------------------------------------------------

std::vector<uint8_t> StateBlob::encode() const { return Json::to_cbor(impl_->doc); }

Result<StateBlob> StateBlob::decode(std::span<const uint8_t> bytes) {
  if (bytes.size() > kMaxEncodedBlobBytes) {
    return config_error(fmt::format("state: {} bytes, above the limit of {}", bytes.size(), kMaxEncodedBlobBytes));
  }
  // nlohmann's CBOR reader recurses once per nesting level: bound the depth first, so a
  // hostile blob cannot exhaust the stack.
  if (auto r = check_cbor_shape(bytes); !r) return std::unexpected(r.error());
  Json doc = Json::from_cbor(bytes.begin(), bytes.end(), /*strict=*/true, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return config_error("state: not a valid CBOR document");
  if (auto r = check_envelope(doc, 0); !r) return std::unexpected(r.error());
  auto impl = std::make_unique<Impl>();
  impl->doc = std::move(doc);
  return StateBlob(std::move(impl));
}

bool StateBlob::operator==(const StateBlob& other) const { return impl_->doc == other.impl_->doc; }

std::string StateBlob::describe() const { return printable(impl_->doc).dump(); }

}  // namespace skiff::state
