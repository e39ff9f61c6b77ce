// SPDX-License-Identifier: Apache-2.0
// Console text as the bytes a serial device hands over, for the console tests.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace skiff::testing {

inline std::span<const uint8_t> bytes_of(std::string_view text) {
  // SAFETY: char and uint8_t have the same size and alignment; the span only reads.
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

}  // namespace skiff::testing
