// SPDX-License-Identifier: Apache-2.0
#include "api/api_server.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <http_parser.h>
#include <spdlog/spdlog.h>

#include "api/api_json.h"
#include "api/api_router.h"
#include "api/fd_stream.h"
#include "api/unix_socket.h"
#include "security/filtered_thread.h"

namespace skiff::api {

namespace {

// Limits of the request head (the body has ApiServerOptions::max_body_bytes).
constexpr size_t kMaxUrlBytes = 8 * 1024;
constexpr size_t kMaxHeaderBytes = 16 * 1024;

// One request as the parser delivers it.
struct RequestState {
  size_t max_body_bytes = 0;
  std::string url;
  std::string body;
  size_t header_bytes = 0;
  int refuse_status = 0;  // 413/414/431 found while parsing: answered without a body
  bool complete = false;
};

RequestState& state_of(http_parser* parser) { return *static_cast<RequestState*>(parser->data); }

int on_url(http_parser* parser, const char* at, size_t length) {
  RequestState& state = state_of(parser);
  if (state.url.size() + length > kMaxUrlBytes) {
    state.refuse_status = 414;
    return 1;
  }
  state.url.append(at, length);
  return 0;
}

int on_header_bytes(http_parser* parser, const char*, size_t length) {
  RequestState& state = state_of(parser);
  state.header_bytes += length;
  if (state.header_bytes > kMaxHeaderBytes) {
    state.refuse_status = 431;
    return 1;
  }
  return 0;
}

int on_headers_complete(http_parser* parser) {
  RequestState& state = state_of(parser);
  // A declared length over the limit is refused before the body is waited for.
  if ((parser->flags & F_CONTENTLENGTH) != 0 && parser->content_length > state.max_body_bytes) {
    state.refuse_status = 413;
    return 2;  // stop: error out of http_parser_execute
  }
  return 0;
}

int on_body(http_parser* parser, const char* at, size_t length) {
  RequestState& state = state_of(parser);
  if (state.body.size() + length > state.max_body_bytes) {  // chunked bodies have no declared size
    state.refuse_status = 413;
    return 1;
  }
  state.body.append(at, length);
  return 0;
}

int on_message_complete(http_parser* parser) {
  state_of(parser).complete = true;
  return 1;  // one request per connection: stop parsing here
}

const http_parser_settings& request_settings() {
  static const http_parser_settings settings = [] {
    http_parser_settings s{};
    s.on_url = on_url;
    s.on_header_field = on_header_bytes;
    s.on_header_value = on_header_bytes;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    return s;
  }();
  return settings;
}

std::string reason_of(int status) {
  const char* reason = http_status_str(static_cast<http_status>(status));
  return reason != nullptr && std::strcmp(reason, "<unknown>") != 0 ? reason : "Status";
}

std::string response_text(const ApiReply& reply) {
  std::string head = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                                 reply.status, reason_of(reply.status), reply.content_type, reply.body.size());
  if (!reply.allow.empty()) head += fmt::format("Allow: {}\r\n", reply.allow);
  return head + "\r\n" + reply.body;
}

ApiReply error_reply(int status, std::string_view message) {
  ApiReply reply;
  reply.status = status;
  reply.body = error_body(message);
  return reply;
}

// Reads one request from `stream` (libhttp-parser: Node.js's HTTP parser, Debian's
// libhttp-parser-dev), answers it through the router, and returns. One request per
// connection: a request body the router never read cannot be taken for the next request.
void serve_one(FdStream& stream, ApiBackend& backend, size_t max_body_bytes) {
  RequestState state;
  state.max_body_bytes = max_body_bytes;
  http_parser parser;
  http_parser_init(&parser, HTTP_REQUEST);
  parser.data = &state;
  char buffer[4096];
  bool malformed = false;
  while (!state.complete && state.refuse_status == 0 && !malformed) {
    ssize_t n = stream.read(buffer, sizeof(buffer));
    if (n < 0) return;  // timeout, deadline, cancel or error: nobody to answer
    // n == 0 tells the parser the stream ended (a request cut short is malformed).
    size_t parsed = http_parser_execute(&parser, &request_settings(), buffer, static_cast<size_t>(n));
    if (state.complete || state.refuse_status != 0) break;
    if (HTTP_PARSER_ERRNO(&parser) != HPE_OK || parsed != static_cast<size_t>(n) || n == 0) malformed = true;
  }
  ApiReply reply;
  if (state.refuse_status == 413) {
    reply = error_reply(413, fmt::format("request body larger than {} bytes", max_body_bytes));
  } else if (state.refuse_status == 414) {
    reply = error_reply(414, "request URI too long");
  } else if (state.refuse_status == 431) {
    reply = error_reply(431, "request header fields too large");
  } else if (malformed || !state.complete) {
    reply = error_reply(400, "malformed HTTP request");
  } else {
    std::string_view path = state.url;
    path = path.substr(0, path.find('?'));  // no endpoint takes a query
    const char* method = http_method_str(static_cast<http_method>(parser.method));
    try {
      reply = handle_api_request(backend, method, path, state.body);
    } catch (const std::exception& error) {
      spdlog::warn("api: {} {}: {}", method, path, error.what());
      reply = error_reply(500, "internal error");
    }
  }
  stream.write_all(response_text(reply));
}

}  // namespace

class ApiServer::Impl {
 public:
  Impl(UnixListener listener, UniqueFd stop_event, ApiBackend& backend, ApiServerOptions options)
      : listener_(std::move(listener)),
        stop_event_(std::move(stop_event)),
        options_(options),
        backend_(backend) {}

  ~Impl() { stop(); }

  Result<void> run() {
    std::lock_guard lock(stop_mutex_);
    if (stopped_) return internal_error("api: the server was stopped");
    if (thread_.joinable()) return {};
    auto thread = security::start_filtered_thread("skiff-api", security::ThreadKind::api, options_.seccomp,
                                                  [this] { serve_loop(); });
    if (!thread) return std::unexpected(thread.error());
    thread_ = std::move(*thread);
    return {};
  }

  void stop() {
    std::lock_guard lock(stop_mutex_);
    if (stopped_) return;
    stopped_ = true;
    uint64_t one = 1;
    if (::write(stop_event_.get(), &one, sizeof(one)) != sizeof(one)) {
      spdlog::warn("api: could not signal the server thread: {}", std::strerror(errno));
    }
    if (thread_.joinable()) thread_.join();
    remove_unix_socket(listener_);
  }

  const std::filesystem::path& path() const { return listener_.path; }

 private:
  void serve_loop() {
    for (;;) {
      pollfd fds[2] = {{listener_.fd.get(), POLLIN, 0}, {stop_event_.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        spdlog::error("api: poll: {}; the API server stops", std::strerror(errno));
        return;
      }
      if (fds[1].revents != 0) return;
      if (fds[0].revents == 0) continue;
      UniqueFd connection(::accept4(listener_.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!connection.valid()) {
        // ECONNABORTED, EMFILE...: this connection is lost, the server goes on.
        if (errno != EINTR && errno != EAGAIN) spdlog::warn("api: accept: {}", std::strerror(errno));
        continue;
      }
      FdStream stream(connection.get(), stop_event_.get(), options_.io_timeout,
                      std::chrono::steady_clock::now() + options_.exchange_deadline);
      serve_one(stream, backend_, options_.max_body_bytes);
      if (stream.timed_out()) spdlog::debug("api: a client was too slow; connection closed");
      linger_close(connection.get());
    }
  }

  // Closes after the reply without discarding what the client still sends (a body the
  // server refused unread): closing with unread input resets the connection, and a client
  // still writing would lose the reply. Bounded in time and bytes.
  void linger_close(int fd) const {
    ::shutdown(fd, SHUT_WR);
    FdStream drain(fd, stop_event_.get(), kLingerTime, std::chrono::steady_clock::now() + kLingerTime);
    char buffer[4096];
    for (size_t drained = 0; drained < kLingerMaxBytes;) {
      ssize_t n = drain.read(buffer, sizeof(buffer));
      if (n <= 0) break;
      drained += static_cast<size_t>(n);
    }
  }

  static constexpr std::chrono::milliseconds kLingerTime{500};
  static constexpr size_t kLingerMaxBytes = 4 * 1024 * 1024;

  UnixListener listener_;
  UniqueFd stop_event_;
  ApiServerOptions options_;
  ApiBackend& backend_;
  std::thread thread_;
  std::mutex stop_mutex_;
  bool stopped_ = false;
};

Result<std::unique_ptr<ApiServer>> ApiServer::listen(const std::filesystem::path& socket_path,
                                                     ApiBackend& backend, ApiServerOptions options) {
  UniqueFd stop_event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_event.valid()) return std::unexpected(errno_error("eventfd (API server stop)", errno));
  auto listener = listen_unix_socket(socket_path);
  if (!listener) return std::unexpected(listener.error());
  auto impl = std::make_unique<Impl>(std::move(*listener), std::move(stop_event), backend, options);
  spdlog::info("api: listening on {}", socket_path.native());
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

Result<std::unique_ptr<ApiServer>> ApiServer::start(const std::filesystem::path& socket_path, ApiBackend& backend,
                                                    ApiServerOptions options) {
  auto server = listen(socket_path, backend, options);
  if (!server) return server;
  if (auto served = (*server)->serve(); !served) return std::unexpected(served.error());
  return server;
}

Result<void> ApiServer::serve() { return impl_->run(); }

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ApiServer::~ApiServer() { stop(); }

void ApiServer::stop() {
  if (impl_) impl_->stop();
}

const std::filesystem::path& ApiServer::socket_path() const { return impl_->path(); }

}  // namespace skiff::api
