// SPDX-License-Identifier: Apache-2.0
#include "cli/ctl_command.h"

#include <chrono>
#include <cstdio>
#include <string_view>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "api/api_client.h"
#include "skiff/exit.h"
#include "skiff/vm.h"

namespace skiff::cli {

namespace {

struct CtlRequest {
  std::string_view command;
  std::string_view method;
  std::string_view path;
  std::string_view help;
};

constexpr CtlRequest kRequests[] = {
    {"info", "GET", "/vm", "state, spec and uptime (GET /vm)"},
    {"pause", "PUT", "/vm/pause", "stop the vCPUs (PUT /vm/pause)"},
    {"resume", "PUT", "/vm/resume", "continue a paused VM (PUT /vm/resume)"},
    {"shutdown", "PUT", "/vm/shutdown", "ask the guest to power off, hard stop after the timeout (PUT /vm/shutdown)"},
    {"stop", "PUT", "/vm/stop", "stop the VM now (PUT /vm/stop)"},
    {"stats", "GET", "/vm/stats", "vCPU, disk, NIC and balloon counters (GET /vm/stats)"},
    {"balloon", "PUT", "/balloon", "set the balloon target in MiB (PUT /balloon)"},
    {"metrics", "GET", "/metrics", "counters in Prometheus text format (GET /metrics)"},
};

// The message of an error reply, or the raw body when it is not the API's JSON.
std::string error_message(const api::ApiReply& reply) {
  auto parsed = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_string()) {
    return parsed["error"].get<std::string>();
  }
  return reply.body.empty() ? "(no message)" : reply.body;
}

}  // namespace

CLI::App* add_ctl_command(CLI::App& app, CtlOptions& options) {
  CLI::App* ctl = app.add_subcommand("ctl", "control a running VM through its API socket (docs/api.md)");
  ctl->add_option("socket", options.socket, "the VM's API socket (spec api.socket)")->required();
  ctl->add_option("--request-timeout", options.request_timeout_seconds, "seconds to wait for the answer")
      ->check(CLI::Range(0.001, 3600.0));
  ctl->require_subcommand(1);
  for (const CtlRequest& request : kRequests) {
    CLI::App* command = ctl->add_subcommand(std::string(request.command), std::string(request.help));
    if (request.command == "shutdown") {
      command->add_option("--timeout", options.shutdown_timeout_seconds,
                          "seconds the guest gets before the hard stop (default 10)")
          ->check(CLI::Range(0.0, 3600.0));
    } else if (request.command == "balloon") {
      command->add_option("mib", options.balloon_mib, "MiB the guest should give back (0 deflates)")->required();
    }
  }
  return ctl;
}

int run_ctl_command(const CLI::App& ctl, const CtlOptions& options) {
  const CtlRequest* chosen = nullptr;
  for (const CtlRequest& request : kRequests) {
    if (ctl.got_subcommand(std::string(request.command))) chosen = &request;
  }
  if (chosen == nullptr) return kExitUsage;

  std::string body;
  if (chosen->command == "shutdown" && options.shutdown_timeout_seconds) {
    body = nlohmann::json{{"timeout_s", *options.shutdown_timeout_seconds}}.dump();
  } else if (chosen->command == "balloon") {
    body = nlohmann::json{{"target_mib", options.balloon_mib}}.dump();
  }
  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options.request_timeout_seconds * 1000));
  auto reply = api::send_api_request(options.socket, chosen->method, chosen->path, body, timeout);
  if (!reply) {
    spdlog::error("{}", reply.error().message());
    return exit_code_for(reply.error());
  }
  if (reply->status < 200 || reply->status >= 300) {
    spdlog::error("{} (HTTP {})", error_message(*reply), reply->status);
    return reply->status >= 500 ? kExitVmm : kCtlExitRefused;
  }
  if (chosen->command == "metrics") {
    fmt::print("{}", reply->body);
  } else {
    auto parsed = nlohmann::json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
    fmt::print("{}\n", parsed.is_discarded() ? reply->body : parsed.dump(2));
  }
  std::fflush(stdout);
  return kExitOk;
}

}  // namespace skiff::cli
