// SPDX-License-Identifier: Apache-2.0
// The control API's endpoints as one pure function: method, path and body in, status and
// body out. The HTTP server calls it for every request; unit tests call it directly.
#pragma once

#include <string>
#include <string_view>

#include "api/api_backend.h"

namespace skiff::api {

inline constexpr std::string_view kJsonContentType = "application/json";

struct ApiReply {
  int status = 200;
  std::string content_type{kJsonContentType};
  std::string body;
  std::string allow;  // the Allow header of a 405
};

// Serves one request. Never throws: malformed bodies are 400, unknown paths 404, a method
// the path does not take 405, a request the VM's state refuses 409, a failure of the VM
// 500; every error body is {"error": "..."}.
ApiReply handle_api_request(ApiBackend& backend, std::string_view method, std::string_view path,
                            std::string_view body) noexcept;

}  // namespace skiff::api
