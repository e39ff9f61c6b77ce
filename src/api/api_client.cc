// SPDX-License-Identifier: Apache-2.0
#include "api/api_client.h"

#include <fmt/format.h>

#include "api/fd_stream.h"
#include "api/unix_socket.h"

namespace skiff::api {

namespace {

// httplib's client with its request writer and response parser reachable over any Stream
// (Debian's cpp-httplib 0.11 connects only over TCP).
class HttpClientOverStream : public httplib::ClientImpl {
 public:
  HttpClientOverStream() : httplib::ClientImpl("localhost") {}

  bool exchange(httplib::Stream& stream, httplib::Request& request, httplib::Response& response,
                httplib::Error& error) {
    return process_request(stream, request, response, /*close_connection=*/true, error);
  }
};

}  // namespace

Result<ApiReply> send_api_request(const std::filesystem::path& socket_path, std::string_view method,
                                  std::string_view path, std::string_view body, std::chrono::milliseconds timeout) {
  auto connection = connect_unix_socket(socket_path);
  if (!connection) return std::unexpected(connection.error());

  httplib::Request request;
  request.method = std::string(method);
  request.path = std::string(path);
  if (!body.empty()) {
    request.body = std::string(body);
    request.set_header("Content-Type", std::string(kJsonContentType));
  }
  httplib::Response response;
  httplib::Error error = httplib::Error::Success;
  FdStream stream(connection->get(), -1, timeout, std::chrono::steady_clock::now() + timeout);
  HttpClientOverStream client;
  bool ok = false;
  try {
    ok = client.exchange(stream, request, response, error);
  } catch (const std::exception& exception) {
    return internal_error(fmt::format("{} {} on {}: {}", method, path, socket_path.native(), exception.what()));
  }
  if (!ok) {
    std::string why = stream.timed_out() ? fmt::format("no answer within {} ms", timeout.count())
                                         : httplib::to_string(error);
    return host_error(fmt::format("{} {} on {}: {}", method, path, socket_path.native(), why));
  }
  ApiReply reply;
  reply.status = response.status;
  reply.content_type = response.get_header_value("Content-Type");
  reply.body = std::move(response.body);
  reply.allow = response.get_header_value("Allow");
  return reply;
}

}  // namespace skiff::api
