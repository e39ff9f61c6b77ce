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
#include <spdlog/spdlog.h>

#include "api/api_json.h"
#include "api/api_router.h"
#include "api/fd_stream.h"
#include "api/unix_socket.h"

namespace skiff::api {

namespace {

// httplib::Server with its request parser reachable: Debian's cpp-httplib 0.11 listens only
// on TCP, but process_request() (protected) serves one request from any Stream.
class HttpOverStream : public httplib::Server {
 public:
  HttpOverStream(ApiBackend& backend, size_t max_body_bytes) {
    set_payload_max_length(max_body_bytes);
    const auto serve = [&backend](const httplib::Request& request, httplib::Response& response) {
      respond(handle_api_request(backend, request.method, request.path, request.body), response);
    };
    // httplib reads a PUT body up to EOF when it has neither Content-Length nor chunked
    // encoding (curl -X PUT without data sends neither), which would hold the exchange
    // until the timeout. Such requests have no body: serve them before the read.
    set_pre_routing_handler([&backend, max_body_bytes](const httplib::Request& request, httplib::Response& response) {
      // A declared length over the limit is refused before the body is waited for (httplib
      // would read and discard it all first); the lingering close drains what was sent.
      if (request.has_header("Content-Length")) {
        const std::string length = request.get_header_value("Content-Length");
        char* end = nullptr;
        errno = 0;
        unsigned long long declared = std::strtoull(length.c_str(), &end, 10);
        if (end != length.c_str() && (declared > max_body_bytes || errno == ERANGE)) {
          response.status = 413;
          return HandlerResponse::Handled;  // the error handler below writes the body
        }
      }
      if (request.has_header("Content-Length") || request.has_header("Transfer-Encoding")) {
        return HandlerResponse::Unhandled;
      }
      respond(handle_api_request(backend, request.method, request.path, {}), response);
      return HandlerResponse::Handled;
    });
    // Every method httplib routes goes to the one router, which decides 404 and 405.
    Get(".*", serve);
    Put(".*", serve);
    Post(".*", serve);
    Patch(".*", serve);
    Delete(".*", serve);
    Options(".*", serve);
    // Errors httplib finds itself (unparsable request line 400, body over the limit 413)
    // get the API's JSON body too.
    set_error_handler(HandlerWithResponse([max_body_bytes](const httplib::Request&, httplib::Response& response) {
      if (!response.body.empty()) return HandlerResponse::Unhandled;
      std::string message;
      switch (response.status) {
        case 400:
          message = "malformed HTTP request";
          break;
        case 413:
          message = fmt::format("request body larger than {} bytes", max_body_bytes);
          break;
        case 414:
          message = "request URI too long";
          break;
        default:
          message = fmt::format("HTTP error {}", response.status);
      }
      response.set_content(error_body(message), std::string(kJsonContentType).c_str());
      return HandlerResponse::Handled;
    }));
    set_exception_handler([](const httplib::Request&, httplib::Response& response, std::exception_ptr) {
      response.status = 500;
      response.set_content(error_body("internal error"), std::string(kJsonContentType).c_str());
    });
  }

  // Serves one request from `stream` and asks the client to close the connection: one
  // request per connection keeps a request body the router never read from being taken
  // for the next request.
  bool serve_one(httplib::Stream& stream) {
    bool connection_closed = false;
    return process_request(stream, /*close_connection=*/true, connection_closed, nullptr);
  }

 private:
  static void respond(const ApiReply& reply, httplib::Response& response) {
    response.status = reply.status;
    if (!reply.allow.empty()) response.set_header("Allow", reply.allow);
    response.set_content(reply.body, reply.content_type);
  }
};

}  // namespace

class ApiServer::Impl {
 public:
  Impl(UnixListener listener, UniqueFd stop_event, ApiBackend& backend, ApiServerOptions options)
      : listener_(std::move(listener)),
        stop_event_(std::move(stop_event)),
        options_(options),
        http_(backend, options.max_body_bytes) {}

  ~Impl() { stop(); }

  void run() {
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "skiff-api");
      serve_loop();
    });
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
      try {
        http_.serve_one(stream);
      } catch (const std::exception& error) {
        spdlog::warn("api: request failed: {}", error.what());
      }
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
  HttpOverStream http_;
  std::thread thread_;
  std::mutex stop_mutex_;
  bool stopped_ = false;
};

Result<std::unique_ptr<ApiServer>> ApiServer::start(const std::filesystem::path& socket_path, ApiBackend& backend,
                                                    ApiServerOptions options) {
  UniqueFd stop_event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_event.valid()) return std::unexpected(errno_error("eventfd (API server stop)", errno));
  auto listener = listen_unix_socket(socket_path);
  if (!listener) return std::unexpected(listener.error());
  auto impl = std::make_unique<Impl>(std::move(*listener), std::move(stop_event), backend, options);
  impl->run();
  spdlog::info("api: listening on {}", socket_path.native());
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ApiServer::~ApiServer() { stop(); }

void ApiServer::stop() {
  if (impl_) impl_->stop();
}

const std::filesystem::path& ApiServer::socket_path() const { return impl_->path(); }

}  // namespace skiff::api
