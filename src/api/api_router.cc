// SPDX-License-Identifier: Apache-2.0
#include "api/api_router.h"

#include <array>
#include <exception>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "api/api_json.h"
#include "api/api_requests.h"
#include "api/metrics.h"

namespace skiff::api {

namespace {

using nlohmann::json;

enum class Endpoint { kVm, kPause, kResume, kShutdown, kStop, kStats, kBalloon, kMetrics };

struct Route {
  std::string_view path;
  std::string_view method;  // GET routes answer HEAD as well
  Endpoint endpoint;
};

constexpr std::array<Route, 8> kRoutes = {{
    {"/vm", "GET", Endpoint::kVm},
    {"/vm/pause", "PUT", Endpoint::kPause},
    {"/vm/resume", "PUT", Endpoint::kResume},
    {"/vm/shutdown", "PUT", Endpoint::kShutdown},
    {"/vm/stop", "PUT", Endpoint::kStop},
    {"/vm/stats", "GET", Endpoint::kStats},
    {"/balloon", "PUT", Endpoint::kBalloon},
    {"/metrics", "GET", Endpoint::kMetrics},
}};

ApiReply json_reply(int status, const json& body) {
  ApiReply reply;
  reply.status = status;
  reply.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return reply;
}

ApiReply error_reply(int status, std::string_view message) {
  ApiReply reply;
  reply.status = status;
  reply.body = error_body(message);
  return reply;
}

// The status of a request the backend refused: the VM's state does not allow it (409), the
// value is wrong (400: a config error, e.g. no balloon or a target too large), or the VM
// failed to carry it out (500).
int error_status(const Error& error) {
  switch (error.kind()) {
    case ErrorKind::kState: return 409;
    case ErrorKind::kConfig: return 400;
    case ErrorKind::kHost:
    case ErrorKind::kGuest:
    case ErrorKind::kInternal: return 500;
  }
  return 500;
}

// The reply to a lifecycle request once the backend answered.
ApiReply state_change_reply(ApiBackend& backend, const Result<void>& result, int success_status) {
  if (!result) return error_reply(error_status(result.error()), result.error().message());
  return json_reply(success_status, json{{"state", to_string(backend.state())}});
}

ApiReply serve(ApiBackend& backend, Endpoint endpoint, std::string_view body) {
  switch (endpoint) {
    case Endpoint::kVm:
      return json_reply(200, vm_info_to_json(backend.state(), backend.spec(), backend.uptime_s()));
    case Endpoint::kStats:
      return json_reply(200, stats_to_json(backend.stats()));
    case Endpoint::kMetrics: {
      ApiReply reply;
      reply.content_type = kPrometheusContentType;
      reply.body = format_prometheus_metrics(backend.stats());
      return reply;
    }
    case Endpoint::kPause:
    case Endpoint::kResume:
    case Endpoint::kStop: {
      if (auto parsed = parse_empty_request(body); !parsed) return error_reply(400, parsed.error().message());
      Result<void> result = endpoint == Endpoint::kPause    ? backend.pause()
                            : endpoint == Endpoint::kResume ? backend.resume()
                                                            : backend.stop();
      return state_change_reply(backend, result, 200);
    }
    case Endpoint::kShutdown: {
      auto parsed = parse_shutdown_request(body);
      if (!parsed) return error_reply(400, parsed.error().message());
      // 202: the guest has been asked; the VM stops later (GET /vm shows when).
      return state_change_reply(backend, backend.shutdown(parsed->timeout), 202);
    }
    case Endpoint::kBalloon: {
      auto parsed = parse_balloon_request(body);
      if (!parsed) return error_reply(400, parsed.error().message());
      VmState state = backend.state();
      if (state == VmState::stopping || state == VmState::stopped) {
        return error_reply(409, fmt::format("cannot set the balloon target: the VM is {}", to_string(state)));
      }
      auto result = backend.set_balloon_target_mib(parsed->target_mib);
      if (!result) return error_reply(error_status(result.error()), result.error().message());
      return json_reply(200, json{{"target_mib", parsed->target_mib}});
    }
  }
  return error_reply(500, "unhandled endpoint");
}

}  // namespace

ApiReply handle_api_request(ApiBackend& backend, std::string_view method, std::string_view path,
                            std::string_view body) noexcept {
  try {
    const Route* route = nullptr;
    for (const Route& candidate : kRoutes) {
      if (candidate.path == path) route = &candidate;
    }
    if (route == nullptr) {
      return error_reply(404, fmt::format("no such endpoint: {} {} (docs/api.md lists them)", method, path));
    }
    bool head = method == "HEAD" && route->method == "GET";
    if (method != route->method && !head) {
      ApiReply reply = error_reply(405, fmt::format("{} does not take {}; use {}", path, method, route->method));
      reply.allow = route->method == "GET" ? "GET, HEAD" : std::string(route->method);
      return reply;
    }
    ApiReply reply = serve(backend, route->endpoint, body);
    if (route->method != "GET" || reply.status >= 400) {
      spdlog::info("api: {} {} -> {}", method, path, reply.status);
    }
    return reply;
  } catch (const std::exception& error) {
    // json type errors and allocation failures: the VM keeps running, the client learns why.
    return error_reply(500, fmt::format("internal error serving {} {}: {}", method, path, error.what()));
  } catch (...) {
    return error_reply(500, fmt::format("internal error serving {} {}", method, path));
  }
}

}  // namespace skiff::api
