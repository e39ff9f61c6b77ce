// SPDX-License-Identifier: Apache-2.0
// The client side of the control API (skiff ctl, tests): one HTTP/1.1 request over the
// Unix socket; the response is parsed by libhttp-parser.
#pragma once

#include <chrono>
#include <filesystem>
#include <string_view>

#include "api/api_router.h"
#include "skiff/error.h"

namespace skiff::api {

// The largest reply body the client accepts.
inline constexpr size_t kMaxResponseBytes = 16 * 1024 * 1024;

// Sends `method path` with `body` (JSON, or empty for none) and returns the reply whatever
// its status; errors are only for failing to connect or exchange (missing socket, nothing
// listening, timeout, a reply that is not HTTP).
Result<ApiReply> send_api_request(const std::filesystem::path& socket_path, std::string_view method,
                                  std::string_view path, std::string_view body = {},
                                  std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace skiff::api
