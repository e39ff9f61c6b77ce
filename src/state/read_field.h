// SPDX-License-Identifier: Apache-2.0
// One-line readers for restore_state(): each reads one field of a StateBlob into a variable
// with StateBlob's checks (present, right type, within `max`), so a restore reads as a list
//   if (auto r = read_field(blob, "size", size); !r) return r;
// and stops at the first bad field with StateBlob's error, which names the kind and field.
#pragma once

#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "skiff/error.h"
#include "state/state_blob.h"

namespace skiff::state {

template <typename T>
  requires(std::unsigned_integral<T> && !std::same_as<T, bool>)
Result<void> read_field(const StateBlob& blob, std::string_view field, T& out,
                        T max = std::numeric_limits<T>::max()) {
  auto value = blob.get<T>(field, max);
  if (!value) return std::unexpected(value.error());
  out = *value;
  return {};
}

inline Result<void> read_field(const StateBlob& blob, std::string_view field, bool& out) {
  auto value = blob.boolean(field);
  if (!value) return std::unexpected(value.error());
  out = *value;
  return {};
}

inline Result<void> read_field(const StateBlob& blob, std::string_view field, std::string& out,
                               size_t max_length = 4096) {
  auto value = blob.string(field, max_length);
  if (!value) return std::unexpected(value.error());
  out = std::move(*value);
  return {};
}

}  // namespace skiff::state
