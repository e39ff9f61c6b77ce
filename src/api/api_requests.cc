// SPDX-License-Identifier: Apache-2.0
#include "api/api_requests.h"

#include <cmath>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace skiff::api {

namespace {

using nlohmann::json;

bool is_blank(std::string_view body) {
  return body.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// Parses a body that must be a JSON object whose keys are all in `allowed`. Parsing
// without exceptions: the server must never throw out of a handler.
Result<json> parse_object(std::string_view body, std::initializer_list<std::string_view> allowed) {
  if (body.size() > kMaxRequestBodyBytes) {
    return config_error(fmt::format("request body is {} bytes; the limit is {}", body.size(), kMaxRequestBodyBytes));
  }
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return config_error("request body is not valid JSON");
  if (!parsed.is_object()) {
    return config_error(fmt::format("request body must be a JSON object, got {}", parsed.type_name()));
  }
  for (const auto& [key, value] : parsed.items()) {
    bool known = false;
    for (std::string_view name : allowed) known = known || key == name;
    if (!known) {
      std::string expected;
      for (std::string_view name : allowed) expected += fmt::format("{}\"{}\"", expected.empty() ? "" : ", ", name);
      return config_error(fmt::format("unknown field \"{}\" in the request body (expected: {})", key,
                                      expected.empty() ? "none" : expected));
    }
  }
  return parsed;
}

}  // namespace

Result<ShutdownRequest> parse_shutdown_request(std::string_view body) {
  ShutdownRequest request;
  if (is_blank(body)) return request;
  auto parsed = parse_object(body, {"timeout_s"});
  if (!parsed) return std::unexpected(parsed.error());
  auto it = parsed->find("timeout_s");
  if (it == parsed->end() || it->is_null()) return request;
  if (!it->is_number()) {
    return config_error(fmt::format("timeout_s must be a number of seconds, got {}", it->type_name()));
  }
  double seconds = it->get<double>();
  if (!std::isfinite(seconds) || seconds < 0 || seconds > kMaxShutdownTimeoutSeconds) {
    return config_error(fmt::format("timeout_s {} is out of range: must be between 0 and {} seconds", it->dump(),
                                    kMaxShutdownTimeoutSeconds));
  }
  request.timeout = std::chrono::milliseconds(static_cast<int64_t>(std::llround(seconds * 1000)));
  return request;
}

Result<BalloonRequest> parse_balloon_request(std::string_view body) {
  if (is_blank(body)) return config_error("PUT /balloon needs a body: {\"target_mib\": N}");
  auto parsed = parse_object(body, {"target_mib"});
  if (!parsed) return std::unexpected(parsed.error());
  auto it = parsed->find("target_mib");
  if (it == parsed->end()) return config_error("missing field \"target_mib\" (MiB the guest should give back)");
  if (it->is_number_integer() && !it->is_number_unsigned() && it->get<int64_t>() < 0) {
    return config_error(fmt::format("target_mib {} is negative", it->dump()));
  }
  if (it->is_number_float()) {
    // nlohmann reads integers beyond 64 bits as doubles.
    double value = it->get<double>();
    if (std::isfinite(value) && value == std::floor(value) &&
        value > static_cast<double>(kMaxBalloonTargetMib)) {
      return config_error(fmt::format("target_mib {} is out of range: at most {} (1 TiB)", it->dump(),
                                      kMaxBalloonTargetMib));
    }
    return config_error(fmt::format("target_mib must be a whole number of MiB, got {}", it->dump()));
  }
  if (!it->is_number_integer()) {
    return config_error(fmt::format("target_mib must be an unsigned integer (MiB), got {}", it->type_name()));
  }
  uint64_t mib = it->get<uint64_t>();
  if (mib > kMaxBalloonTargetMib) {
    return config_error(fmt::format("target_mib {} is out of range: at most {} (1 TiB)", mib, kMaxBalloonTargetMib));
  }
  return BalloonRequest{mib};
}

Result<void> parse_empty_request(std::string_view body) {
  if (is_blank(body)) return {};
  auto parsed = parse_object(body, {});
  if (!parsed) return std::unexpected(parsed.error());
  return {};
}

}  // namespace skiff::api
