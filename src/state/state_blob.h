// SPDX-License-Identifier: Apache-2.0
// The device-state seam's unit of exchange: one object's saved state as a versioned,
// self-describing record. Snapshot, restore and migration (later issues) store and carry
// these; every object that has state a guest can observe implements Stateful (stateful.h).
//
// A StateBlob has a kind ("serial", "virtio-mmio", "vcpu", ...), the version of that
// kind's field layout, and named fields: unsigned integers, booleans, strings, byte
// strings, lists of integers, nested blobs and lists of nested blobs. encode() writes it
// as CBOR (RFC 8949, through nlohmann_json), so a blob can be read back, or inspected,
// without knowing the C++ type that wrote it.
//
// A decoded blob is untrusted input (it comes from a snapshot file or a migration
// stream): every reader checks that the field exists, has the expected type and lies in
// the range the reader allows, and the error names the kind and the field. A reader
// first calls expect() to check the kind and that it understands the version.
//
// Nothing here is locked; a blob is a plain value.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "skiff/error.h"

namespace skiff::state {

// Bounds applied by decode(): a blob larger than this, or nested deeper, is refused before
// it is parsed further (a state file must not make the VMM allocate without bound).
inline constexpr size_t kMaxEncodedBlobBytes = size_t{64} << 20;
inline constexpr unsigned kMaxBlobDepth = 16;

class StateBlob {
 public:
  StateBlob(std::string_view kind, uint32_t version);
  StateBlob(const StateBlob& other);
  StateBlob(StateBlob&& other) noexcept;
  StateBlob& operator=(const StateBlob& other);
  StateBlob& operator=(StateBlob&& other) noexcept;
  ~StateBlob();

  std::string kind() const;
  uint32_t version() const;

  // Checks that this blob is a `kind` of a version between 1 and `max_version` (the
  // newest layout the reader knows), naming both when it is not.
  Result<void> expect(std::string_view kind, uint32_t max_version) const;

  // ---- Writing: each put replaces a field of the same name. ------------------------------
  StateBlob& put(std::string_view field, uint64_t value);
  StateBlob& put_bool(std::string_view field, bool value);
  StateBlob& put_string(std::string_view field, std::string_view value);
  StateBlob& put_bytes(std::string_view field, std::span<const uint8_t> value);
  StateBlob& put_u64s(std::string_view field, std::span<const uint64_t> values);
  StateBlob& put_blob(std::string_view field, const StateBlob& value);
  StateBlob& put_blobs(std::string_view field, std::span<const StateBlob> values);

  // ---- Reading: each checks presence, type and range. -------------------------------------
  bool has(std::string_view field) const;
  // The names of the fields, in the encoding's (sorted) order.
  std::vector<std::string> field_names() const;
  // An unsigned integer no larger than `max`.
  Result<uint64_t> u64(std::string_view field, uint64_t max = std::numeric_limits<uint64_t>::max()) const;
  // An unsigned integer that fits T (uint8_t, uint16_t, uint32_t, ...) and `max`.
  template <typename T>
  Result<T> get(std::string_view field, T max = std::numeric_limits<T>::max()) const {
    auto value = u64(field, max);
    if (!value) return std::unexpected(value.error());
    return static_cast<T>(*value);
  }
  Result<bool> boolean(std::string_view field) const;
  Result<std::string> string(std::string_view field, size_t max_length = 4096) const;
  // A byte string of at most `max_length` bytes.
  Result<std::vector<uint8_t>> bytes(std::string_view field, size_t max_length) const;
  // A byte string of exactly `length` bytes (a fixed-size register file, a C struct).
  Result<std::vector<uint8_t>> bytes_exact(std::string_view field, size_t length) const;
  // A list of at most `max_items` integers, each no larger than `max_value`.
  Result<std::vector<uint64_t>> u64s(std::string_view field, size_t max_items,
                                     uint64_t max_value = std::numeric_limits<uint64_t>::max()) const;
  Result<StateBlob> blob(std::string_view field) const;
  Result<std::vector<StateBlob>> blobs(std::string_view field, size_t max_items) const;

  // ---- Encoding. -------------------------------------------------------------------------
  std::vector<uint8_t> encode() const;
  // Parses and checks the envelope (a map with a non-empty string "kind" and a version
  // >= 1, fields in a map, nesting and size within the bounds above). Field contents are
  // checked by the readers above.
  static Result<StateBlob> decode(std::span<const uint8_t> bytes);

  // Structural equality (same kind, version and fields), for tests.
  bool operator==(const StateBlob& other) const;
  // A readable rendering (JSON text, byte strings as hex), for test failures and debugging.
  std::string describe() const;

 private:
  struct Impl;
  explicit StateBlob(std::unique_ptr<Impl> impl);
  Error field_error(std::string_view field, std::string_view what) const;

  std::unique_ptr<Impl> impl_;
};

// Copies a trivially-copyable C struct (a KVM register file, say) into / out of a byte
// string field of exactly its size.
template <typename T>
void put_struct(StateBlob& blob, std::string_view field, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  // SAFETY: T is trivially copyable; the span covers exactly its object representation.
  blob.put_bytes(field, std::span(reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
}

template <typename T>
Result<T> get_struct(const StateBlob& blob, std::string_view field) {
  static_assert(std::is_trivially_copyable_v<T>);
  auto bytes = blob.bytes_exact(field, sizeof(T));
  if (!bytes) return std::unexpected(bytes.error());
  T value;
  // SAFETY: T is trivially copyable and bytes holds exactly sizeof(T) bytes.
  std::memcpy(&value, bytes->data(), sizeof(T));
  return value;
}

}  // namespace skiff::state
