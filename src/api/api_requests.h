// SPDX-License-Identifier: Apache-2.0
// Request bodies of the control API turned into commands: pure functions, no sockets, so
// every malformed body has a unit test. A body comes from whoever can open the socket;
// each check names the field and what was wrong.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "skiff/error.h"

namespace skiff::api {

// Bodies larger than this are refused with 413 before they are parsed.
inline constexpr size_t kMaxRequestBodyBytes = 64 * 1024;
// PUT /vm/shutdown without a body, or without timeout_s.
inline constexpr std::chrono::milliseconds kDefaultShutdownTimeout{10'000};
// The longest graceful shutdown a request may ask for (an hour).
inline constexpr double kMaxShutdownTimeoutSeconds = 3600;
// The largest balloon target a request may name: 1 TiB, the most guest RAM a spec allows
// (the VM refuses anything not below its own RAM).
inline constexpr uint64_t kMaxBalloonTargetMib = uint64_t{1} << 20;

struct ShutdownRequest {
  std::chrono::milliseconds timeout = kDefaultShutdownTimeout;
  bool operator==(const ShutdownRequest&) const = default;
};

struct BalloonRequest {
  uint64_t target_mib = 0;
  bool operator==(const BalloonRequest&) const = default;
};

// PUT /vm/shutdown: an empty body, or {"timeout_s": N} with 0 <= N <= 3600 (a number;
// fractions allowed). Errors are config errors (400).
Result<ShutdownRequest> parse_shutdown_request(std::string_view body);

// PUT /balloon: {"target_mib": N} with N an integer in [0, kMaxBalloonTargetMib].
Result<BalloonRequest> parse_balloon_request(std::string_view body);

// Bodies of PUT /vm/pause, /vm/resume and /vm/stop: empty or an empty JSON object.
Result<void> parse_empty_request(std::string_view body);

}  // namespace skiff::api
