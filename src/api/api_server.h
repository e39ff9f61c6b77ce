// SPDX-License-Identifier: Apache-2.0
// The control API: HTTP/1.1 on a Unix socket (spec "api": {"socket": PATH}), served by
// libhttp-parser's request parser on one thread ("skiff-api"), one connection at a time,
// one request per connection. Endpoints and errors: api_router.h and docs/api.md.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>

#include "api/api_backend.h"
#include "api/api_requests.h"
#include "security/seccomp_filter.h"
#include "skiff/error.h"

namespace skiff::api {

struct ApiServerOptions {
  // Longest wait for the client's next bytes, or for room to send.
  std::chrono::milliseconds io_timeout{5000};
  // Longest a whole request/response exchange may take, so a client trickling bytes
  // cannot keep the server from others.
  std::chrono::milliseconds exchange_deadline{15000};
  size_t max_body_bytes = kMaxRequestBodyBytes;
  // The server thread's filter (thread kind api), installed before it accepts anything.
  SeccompMode seccomp = SeccompMode::off;
};

class ApiServer {
 public:
  // Creates the socket (0600; a stale one replaced, a live one refused: unix_socket.h) for
  // `backend`, which must outlive the server. Clients can connect (the kernel queues them)
  // but get no answer before serve().
  static Result<std::unique_ptr<ApiServer>> listen(const std::filesystem::path& socket_path, ApiBackend& backend,
                                                   ApiServerOptions options = {});
  // listen(), then serve().
  static Result<std::unique_ptr<ApiServer>> start(const std::filesystem::path& socket_path, ApiBackend& backend,
                                                  ApiServerOptions options = {});
  // Starts the server thread ("skiff-api"). Once only; an error when its filter cannot be
  // installed.
  Result<void> serve();
  ~ApiServer();  // stop()
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Ends the server thread (a request in progress is abandoned at its next wait) and removes
  // the socket file. Idempotent.
  void stop();

  const std::filesystem::path& socket_path() const;

  class Impl;

 private:
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::api
