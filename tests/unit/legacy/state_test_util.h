// SPDX-License-Identifier: Apache-2.0
// Helpers for the legacy devices' state tests: a blob's trip through its encoded form, and
// assertions on a refused restore.
#pragma once

#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "state/state_blob.h"

namespace skiff::testing {

// encode() then decode(), as a snapshot file would carry the blob.
inline state::StateBlob through_bytes(const state::StateBlob& blob) {
  auto decoded = state::StateBlob::decode(blob.encode());
  EXPECT_TRUE(decoded) << decoded.error().message();
  return decoded ? *decoded : state::StateBlob("decode-failed", 1);
}

// Passes when `result` is an error whose message contains `needle`.
template <typename Result>
::testing::AssertionResult fails_with(const Result& result, std::string_view needle) {
  if (result) return ::testing::AssertionFailure() << "succeeded; expected an error containing \"" << needle << "\"";
  const std::string& message = result.error().message();
  if (message.find(needle) == std::string::npos) {
    return ::testing::AssertionFailure() << "error \"" << message << "\" does not contain \"" << needle << "\"";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace skiff::testing
