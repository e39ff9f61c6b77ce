// SPDX-License-Identifier: Apache-2.0
// The API server on a real Unix socket, driven through the client code path (skiff ctl's)
// and, for what a well-behaved client never sends, through raw socket writes.
#include "api/api_server.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "api/api_client.h"
#include "unit/api/fake_backend.h"
#include "unit/api/prometheus_checker.h"
#include "api/unix_socket.h"

namespace skiff::api {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using testing::FakeBackend;

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/skiff-api-XXXXXX";
    ASSERT_NE(::mkdtemp(templ), nullptr);
    dir_ = templ;
    socket_ = dir_ / "vm.sock";
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void start(ApiServerOptions options = {}) {
    auto server = ApiServer::start(socket_, backend_, options);
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
  }

  ApiReply request(std::string_view method, std::string_view path, std::string_view body = {}) {
    auto reply = send_api_request(socket_, method, path, body, std::chrono::seconds(10));
    EXPECT_TRUE(reply) << reply.error().message();
    if (reply) return *reply;
    ApiReply failed;
    failed.status = -1;
    return failed;
  }

  static json body_json(const ApiReply& reply) {
    json parsed = json::parse(reply.body, nullptr, false);
    EXPECT_FALSE(parsed.is_discarded()) << reply.body;
    return parsed;
  }

  // Writes `bytes` on a fresh connection and returns everything the server sends back
  // before closing it.
  std::string raw_exchange(std::string_view bytes) {
    auto fd = connect_unix_socket(socket_);
    EXPECT_TRUE(fd) << fd.error().message();
    if (!fd) return {};
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = ::send(fd->get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;  // the server may answer (413) and close before reading it all
      sent += static_cast<size_t>(n);
    }
    std::string reply;
    char buffer[4096];
    for (;;) {
      pollfd pfd{fd->get(), POLLIN, 0};
      if (::poll(&pfd, 1, 10'000) <= 0) break;
      ssize_t n = ::recv(fd->get(), buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      reply.append(buffer, static_cast<size_t>(n));
    }
    return reply;
  }

  static int status_of(const std::string& raw) {
    if (raw.rfind("HTTP/1.1 ", 0) != 0 || raw.size() < 12) return -1;
    return std::stoi(raw.substr(9, 3));
  }
  static std::string body_of(const std::string& raw) {
    size_t split = raw.find("\r\n\r\n");
    return split == std::string::npos ? std::string() : raw.substr(split + 4);
  }

  std::filesystem::path dir_;
  std::filesystem::path socket_;
  FakeBackend backend_;
  std::unique_ptr<ApiServer> server_;
};

TEST_F(ApiServerTest, GetVm) {
  start();
  ApiReply reply = request("GET", "/vm");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.content_type, "application/json");
  json body = body_json(reply);
  EXPECT_EQ(body["state"], "running");
  EXPECT_EQ(body["uptime_s"], 12.5);
  EXPECT_EQ(body["spec"]["name"], "web01");
}

TEST_F(ApiServerTest, PauseResumeAndConflicts) {
  start();
  ApiReply paused = request("PUT", "/vm/pause");
  EXPECT_EQ(paused.status, 200);
  EXPECT_EQ(body_json(paused)["state"], "paused");
  EXPECT_EQ(backend_.state(), VmState::paused);

  ApiReply again = request("PUT", "/vm/pause");
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(body_json(again)["error"], "cannot pause: the VM is paused");

  ApiReply resumed = request("PUT", "/vm/resume", "{}");
  EXPECT_EQ(resumed.status, 200);
  EXPECT_EQ(body_json(resumed)["state"], "running");
  EXPECT_EQ(request("PUT", "/vm/resume").status, 409);
}

TEST_F(ApiServerTest, ShutdownWithAndWithoutTimeout) {
  start();
  ApiReply reply = request("PUT", "/vm/shutdown", R"({"timeout_s": 3})");
  EXPECT_EQ(reply.status, 202);
  EXPECT_EQ(body_json(reply)["state"], "stopping");
  EXPECT_EQ(backend_.last_shutdown_timeout, milliseconds(3000));

  FakeBackend other;
  server_.reset();
  auto server = ApiServer::start(socket_, other);
  ASSERT_TRUE(server) << server.error().message();
  EXPECT_EQ(send_api_request(socket_, "PUT", "/vm/shutdown")->status, 202);
  EXPECT_EQ(other.last_shutdown_timeout, kDefaultShutdownTimeout);
}

TEST_F(ApiServerTest, StopThenEverythingConflicts) {
  start();
  ApiReply stopped = request("PUT", "/vm/stop");
  EXPECT_EQ(stopped.status, 200);
  EXPECT_EQ(body_json(stopped)["state"], "stopped");
  for (const char* path : {"/vm/pause", "/vm/resume", "/vm/shutdown", "/vm/stop"}) {
    ApiReply reply = request("PUT", path);
    EXPECT_EQ(reply.status, 409) << path;
    EXPECT_NE(body_json(reply)["error"].get<std::string>().find("the VM is stopped"), std::string::npos);
  }
  ApiReply balloon = request("PUT", "/balloon", R"({"target_mib": 1})");
  EXPECT_EQ(balloon.status, 409);
  EXPECT_EQ(body_json(balloon)["error"], "cannot set the balloon target: the VM is stopped");
  // Reading still works.
  EXPECT_EQ(body_json(request("GET", "/vm"))["state"], "stopped");
}

TEST_F(ApiServerTest, BackendFailureIs500) {
  backend_.fail_stop = true;
  start();
  ApiReply reply = request("PUT", "/vm/stop");
  EXPECT_EQ(reply.status, 500);
  EXPECT_EQ(body_json(reply)["error"], "stop: the vCPU threads did not answer");
}

TEST_F(ApiServerTest, StatsAndMetrics) {
  start();
  ApiReply stats = request("GET", "/vm/stats");
  EXPECT_EQ(stats.status, 200);
  json body = body_json(stats);
  EXPECT_EQ(body["disks"][0]["reads"], 5);
  EXPECT_EQ(body["nets"][0]["id"], "eth0");
  EXPECT_EQ(body["vcpus"].size(), 2u);

  ApiReply metrics = request("GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.content_type, "text/plain; version=0.0.4; charset=utf-8");
  auto samples = testing::parse_prometheus_text(metrics.body);
  ASSERT_TRUE(samples) << samples.error();
  EXPECT_EQ(samples->at("skiff_disk_reads_total{disk=\"root\"}"), 5);
}

TEST_F(ApiServerTest, Balloon) {
  start();
  ApiReply reply = request("PUT", "/balloon", R"({"target_mib": 128})");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(body_json(reply)["target_mib"], 128);
  EXPECT_EQ(backend_.balloon_target, 128u);

  ApiReply too_big = request("PUT", "/balloon", R"({"target_mib": 4096})");
  EXPECT_EQ(too_big.status, 400);
  EXPECT_NE(body_json(too_big)["error"].get<std::string>().find("not below"), std::string::npos);
  for (const char* bad : {R"({"target_mib": -5})", R"({"target_mib": "128"})", "{", "", R"({"target": 1})"}) {
    ApiReply refused = request("PUT", "/balloon", bad);
    EXPECT_EQ(refused.status, 400) << bad;
    EXPECT_TRUE(body_json(refused).contains("error")) << bad;
  }
  EXPECT_EQ(backend_.balloon_target, 128u);
}

TEST_F(ApiServerTest, UnknownPathIs404Json) {
  start();
  for (const char* path : {"/", "/vm/", "/vm/reboot", "/metrics/x", "/VM"}) {
    ApiReply reply = request("GET", path);
    EXPECT_EQ(reply.status, 404) << path;
    EXPECT_EQ(reply.content_type, "application/json");
    EXPECT_NE(body_json(reply)["error"].get<std::string>().find("no such endpoint"), std::string::npos);
  }
  EXPECT_EQ(request("PUT", "/nope", "{}").status, 404);
}

TEST_F(ApiServerTest, WrongMethodIs405WithAllow) {
  start();
  ApiReply get_pause = request("GET", "/vm/pause");
  EXPECT_EQ(get_pause.status, 405);
  EXPECT_EQ(get_pause.allow, "PUT");
  EXPECT_TRUE(body_json(get_pause).contains("error"));
  ApiReply put_vm = request("PUT", "/vm", "{}");
  EXPECT_EQ(put_vm.status, 405);
  EXPECT_EQ(put_vm.allow, "GET, HEAD");
  EXPECT_EQ(request("POST", "/vm/pause", "{}").status, 405);
  EXPECT_EQ(request("DELETE", "/balloon").status, 405);
  EXPECT_EQ(backend_.state(), VmState::running);
}

TEST_F(ApiServerTest, MalformedBodiesAre400AndTheServerGoesOn) {
  start();
  ApiReply reply = request("PUT", "/vm/shutdown", R"({"timeout_s": "soon"})");
  EXPECT_EQ(reply.status, 400);
  EXPECT_EQ(body_json(reply)["error"], "timeout_s must be a number of seconds, got string");
  EXPECT_EQ(request("PUT", "/vm/pause", "[]").status, 400);
  EXPECT_EQ(backend_.state(), VmState::running);
  EXPECT_EQ(request("GET", "/vm").status, 200);
}

TEST_F(ApiServerTest, HugeBodyIs413) {
  start();
  auto begin = std::chrono::steady_clock::now();
  std::string body = R"({"target_mib": 1, "pad": ")" + std::string(100 * 1024, 'x') + "\"}";
  std::string raw = raw_exchange(fmt::format("PUT /balloon HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                             "Content-Length: {}\r\n\r\n{}",
                                             body.size(), body));
  EXPECT_EQ(status_of(raw), 413) << raw.substr(0, 200);
  json error = json::parse(body_of(raw), nullptr, false);
  ASSERT_FALSE(error.is_discarded()) << raw;
  EXPECT_EQ(error["error"], "request body larger than 65536 bytes");
  EXPECT_FALSE(backend_.balloon_target);
  // A claimed length alone is enough: the body is not waited for.
  std::string claimed = raw_exchange("PUT /balloon HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n");
  EXPECT_EQ(status_of(claimed), 413) << claimed;
  // Through the client: it sends the whole body, then reads the refusal.
  ApiReply reply = request("PUT", "/balloon", body);
  EXPECT_EQ(reply.status, 413);
  EXPECT_EQ(body_json(reply)["error"], "request body larger than 65536 bytes");
  EXPECT_EQ(request("GET", "/vm").status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(3));
}

TEST_F(ApiServerTest, GarbageIs400Json) {
  start();
  std::string raw = raw_exchange("THIS IS NOT HTTP\r\n\r\n");
  EXPECT_EQ(status_of(raw), 400) << raw;
  json error = json::parse(body_of(raw), nullptr, false);
  ASSERT_FALSE(error.is_discarded()) << raw;
  EXPECT_EQ(error["error"], "malformed HTTP request");
  EXPECT_EQ(request("GET", "/vm").status, 200);
}

// curl -X PUT without data sends no Content-Length: served at once, not after a timeout.
TEST_F(ApiServerTest, PutWithoutContentLengthIsServedAtOnce) {
  start();
  auto begin = std::chrono::steady_clock::now();
  std::string raw = raw_exchange("PUT /vm/pause HTTP/1.1\r\nHost: localhost\r\n\r\n");
  EXPECT_EQ(status_of(raw), 200) << raw;
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(2));
  EXPECT_EQ(backend_.state(), VmState::paused);
}

TEST_F(ApiServerTest, SilentClientIsDroppedAndOthersServed) {
  ApiServerOptions options;
  options.io_timeout = milliseconds(200);
  start(options);
  auto silent = connect_unix_socket(socket_);
  ASSERT_TRUE(silent);
  EXPECT_EQ(request("GET", "/vm").status, 200);
}

TEST_F(ApiServerTest, TricklingClientHitsTheDeadline) {
  ApiServerOptions options;
  options.io_timeout = milliseconds(500);
  options.exchange_deadline = milliseconds(300);
  start(options);
  auto slow = connect_unix_socket(socket_);
  ASSERT_TRUE(slow);
  // One byte every 30 ms never lets the I/O timeout fire, but the exchange deadline does:
  // the server answers or hangs up, and serves the next client.
  auto begin = std::chrono::steady_clock::now();
  bool dropped = false;
  const std::string start_line = "GET /vm HTTP/1.1\r\nX-Slow: ";
  for (int i = 0; i < 100 && !dropped; ++i) {
    char c = i < static_cast<int>(start_line.size()) ? start_line[static_cast<size_t>(i)] : 'x';
    dropped = ::send(slow->get(), &c, 1, MSG_NOSIGNAL) != 1;
    std::this_thread::sleep_for(milliseconds(30));
  }
  EXPECT_TRUE(dropped);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(2));
  EXPECT_EQ(request("GET", "/vm").status, 200);
}

TEST_F(ApiServerTest, SlowClientDoesNotBlockStop) {
  start();  // 5 s I/O timeout
  auto silent = connect_unix_socket(socket_);
  ASSERT_TRUE(silent);
  ASSERT_EQ(::send(silent->get(), "GET", 3, MSG_NOSIGNAL), 3);
  std::this_thread::sleep_for(milliseconds(50));  // the server is now waiting for the rest
  auto begin = std::chrono::steady_clock::now();
  server_->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(1));
}

TEST_F(ApiServerTest, SocketIs0600AndRemovedOnStop) {
  start();
  struct stat info{};
  ASSERT_EQ(::lstat(socket_.c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  server_->stop();
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(socket_)));
  server_->stop();  // idempotent
}

TEST_F(ApiServerTest, SocketModeIgnoresAPermissiveUmask) {
  mode_t old = ::umask(0);
  start();
  ::umask(old);
  struct stat info{};
  ASSERT_EQ(::lstat(socket_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
}

TEST_F(ApiServerTest, StaleSocketIsReplaced) {
  {
    // A socket file left by a process that died without removing it.
    auto stale = listen_unix_socket(socket_);
    ASSERT_TRUE(stale) << stale.error().message();
  }  // closed, file kept
  ASSERT_TRUE(std::filesystem::exists(std::filesystem::symlink_status(socket_)));
  start();
  EXPECT_EQ(request("GET", "/vm").status, 200);
}

TEST_F(ApiServerTest, LiveSocketIsRefused) {
  start();
  FakeBackend other;
  auto second = ApiServer::start(socket_, other);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().message(), fmt::format("api.socket {} is in use by a running process (another VM?); stop it or choose another path", socket_.native()));
  // The first server is untouched.
  EXPECT_EQ(request("GET", "/vm").status, 200);
}

TEST_F(ApiServerTest, NonSocketFileIsLeftAlone) {
  { std::ofstream(socket_) << "precious"; }
  FakeBackend other;
  auto server = ApiServer::start(socket_, other);
  ASSERT_FALSE(server);
  EXPECT_NE(server.error().message().find("exists and is not a socket"), std::string::npos);
  std::ifstream in(socket_);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(ApiServerTest, ReplacedSocketIsNotRemovedByTheOldServer) {
  start();
  // Someone removed ours and a new server took the path; stopping the old one must not
  // delete the new socket.
  std::filesystem::remove(socket_);
  FakeBackend other;
  auto second = ApiServer::start(socket_, other);
  ASSERT_TRUE(second) << second.error().message();
  server_->stop();
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::symlink_status(socket_)));
  EXPECT_EQ(request("GET", "/vm").status, 200);
}

TEST_F(ApiServerTest, TooLongPathIsAClearError) {
  std::filesystem::path long_path = dir_ / std::string(120, 's');
  auto server = ApiServer::start(long_path, backend_);
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error().kind(), ErrorKind::kConfig);
  EXPECT_NE(server.error().message().find("a Unix socket path can have at most 107"), std::string::npos)
      << server.error().message();
}

TEST_F(ApiServerTest, ClientReportsMissingSocket) {
  auto reply = send_api_request(socket_, "GET", "/vm");
  ASSERT_FALSE(reply);
  EXPECT_NE(reply.error().message().find("no such socket"), std::string::npos) << reply.error().message();
  {
    auto stale = listen_unix_socket(socket_);
    ASSERT_TRUE(stale);
  }
  reply = send_api_request(socket_, "GET", "/vm");
  ASSERT_FALSE(reply);
  EXPECT_NE(reply.error().message().find("nothing is listening"), std::string::npos) << reply.error().message();
}

TEST_F(ApiServerTest, ManySequentialRequests) {
  start();
  for (int i = 0; i < 200; ++i) ASSERT_EQ(request(i % 2 ? "GET" : "HEAD", "/vm/stats").status, 200);
}

}  // namespace
}  // namespace skiff::api
