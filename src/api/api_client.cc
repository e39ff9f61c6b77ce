// SPDX-License-Identifier: Apache-2.0
#include "api/api_client.h"

#include <strings.h>

#include <string>

#include <fmt/format.h>
#include <http_parser.h>

#include "api/fd_stream.h"
#include "api/unix_socket.h"

namespace skiff::api {

namespace {

// The response as the parser delivers it.
struct ResponseState {
  ApiReply reply;
  std::string field;   // the header being read
  std::string value;
  bool in_value = false;
  bool complete = false;
};

ResponseState& state_of(http_parser* parser) { return *static_cast<ResponseState*>(parser->data); }

void finish_header(ResponseState& state) {
  if (!state.in_value) return;
  if (strcasecmp(state.field.c_str(), "Content-Type") == 0) state.reply.content_type = state.value;
  if (strcasecmp(state.field.c_str(), "Allow") == 0) state.reply.allow = state.value;
  state.field.clear();
  state.value.clear();
  state.in_value = false;
}

const http_parser_settings& response_settings() {
  static const http_parser_settings settings = [] {
    http_parser_settings s{};
    s.on_header_field = [](http_parser* parser, const char* at, size_t length) {
      ResponseState& state = state_of(parser);
      finish_header(state);
      state.field.append(at, length);
      return 0;
    };
    s.on_header_value = [](http_parser* parser, const char* at, size_t length) {
      ResponseState& state = state_of(parser);
      state.in_value = true;
      state.value.append(at, length);
      return 0;
    };
    s.on_headers_complete = [](http_parser* parser) {
      ResponseState& state = state_of(parser);
      finish_header(state);
      state.reply.status = static_cast<int>(parser->status_code);
      return 0;
    };
    s.on_body = [](http_parser* parser, const char* at, size_t length) {
      // The server's replies are small; a runaway peer is cut off.
      ResponseState& state = state_of(parser);
      if (state.reply.body.size() + length > kMaxResponseBytes) return 1;
      state.reply.body.append(at, length);
      return 0;
    };
    s.on_message_complete = [](http_parser* parser) {
      state_of(parser).complete = true;
      return 1;
    };
    return s;
  }();
  return settings;
}

}  // namespace

Result<ApiReply> send_api_request(const std::filesystem::path& socket_path, std::string_view method,
                                  std::string_view path, std::string_view body, std::chrono::milliseconds timeout) {
  auto connection = connect_unix_socket(socket_path);
  if (!connection) return std::unexpected(connection.error());
  FdStream stream(connection->get(), -1, timeout, std::chrono::steady_clock::now() + timeout);
  auto failure = [&](std::string_view why) {
    return host_error(fmt::format("{} {} on {}: {}", method, path, socket_path.native(),
                                  stream.timed_out() ? fmt::format("no answer within {} ms", timeout.count())
                                                     : std::string(why)));
  };

  std::string request = fmt::format("{} {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n", method, path);
  if (!body.empty()) request += fmt::format("Content-Type: {}\r\n", kJsonContentType);
  request += fmt::format("Content-Length: {}\r\n\r\n", body.size());
  request += body;
  if (!stream.write_all(request)) return failure("the server closed the connection");

  ResponseState state;
  state.reply.content_type.clear();
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  parser.data = &state;
  char buffer[4096];
  while (!state.complete) {
    ssize_t n = stream.read(buffer, sizeof(buffer));
    if (n < 0) return failure("reading the reply failed");
    // n == 0 (EOF) completes a reply without Content-Length, or reports one cut short.
    size_t parsed = http_parser_execute(&parser, &response_settings(), buffer, static_cast<size_t>(n));
    if (state.complete) break;
    if (HTTP_PARSER_ERRNO(&parser) != HPE_OK || parsed != static_cast<size_t>(n)) {
      return failure(fmt::format("malformed reply ({})", http_errno_description(HTTP_PARSER_ERRNO(&parser))));
    }
    if (n == 0) return failure("the server closed the connection before replying");
  }
  return std::move(state.reply);
}

}  // namespace skiff::api
