// SPDX-License-Identifier: Apache-2.0
// Small helpers for restore_state() implementations: an error naming a field that the
// StateBlob readers accepted but whose value the object refuses (an invalid combination of
// bits, a value inconsistent with another field), and the first error among many reads.
#pragma once

#include <optional>
#include <string_view>

#include <fmt/format.h>

#include "skiff/error.h"
#include "state/state_blob.h"

namespace skiff::state {

// "state of <kind>: field "<field>" <what>", the form StateBlob's own readers use.
inline Error field_error(const StateBlob& blob, std::string_view field, std::string_view what) {
  return Error(ErrorKind::kConfig, fmt::format("state of {}: field \"{}\" {}", blob.kind(), field, what));
}

// The error of the first failed Result among `results` (in argument order), if any, so a
// restore can read every field and check them in one place.
template <typename... Results>
std::optional<Error> first_error(const Results&... results) {
  std::optional<Error> error;
  ((error || results.has_value() ? void() : void(error.emplace(results.error()))), ...);
  return error;
}

}  // namespace skiff::state
