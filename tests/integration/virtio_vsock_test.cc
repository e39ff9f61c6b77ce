// SPDX-License-Identifier: Apache-2.0
// Tier 2: the test guest drives skiff's virtio-vsock (virtio 1.2 §5.10) over virtio-pci and
// virtio-mmio on /dev/kvm (tests/guest/vsock.c; README.md "virtio-vsock" lists what it prints)
// while the test plays the host programs of docs/devices.md, "virtio-vsock":
//
//   guest → host   a thread listens on "<socket>_5000" and echoes what it reads until EOF;
//                  the guest connects (REQUEST/RESPONSE), sends 1000 bytes, reads them back,
//                  shuts down and gets the device's RST. Port 5001 has no listener: RST.
//   host → guest   when the guest prints "listen port=6000" a thread connects to the socket,
//                  sends "CONNECT 6000\n", reads "OK <port>\n", sends 700 bytes, reads them
//                  back reversed, looks at the VM's vsock statistics while the connection is
//                  open, then shutdown(SHUT_WR) and reads EOF (the guest answered the device's
//                  SHUTDOWN with its own, which the device closes with RST). Over virtio-mmio
//                  the 700 bytes go in the same write as the CONNECT line, before "OK" (the
//                  device must keep them for the guest).
//   violations     OP_RW from a CID that is not the guest's (dropped, no RST), OP_RW on no
//                  connection (RST), a REQUEST whose len claims bytes the chain lacks (RST).
//
// Afterwards the totals of Vm::stats().vsock are checked and the socket must be gone once the
// VM is.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "guest_runner.h"
#include "skiff/vm.h"

namespace skiff::test {
namespace {

using namespace std::chrono_literals;
using Bytes = std::vector<uint8_t>;

// What tests/guest/vsock.c uses (its k* constants).
constexpr uint32_t kGuestCid = 3;
constexpr uint32_t kEchoPort = 5000;
constexpr uint32_t kListenPort = 6000;
constexpr size_t kEchoBytes = 1000;
constexpr size_t kAcceptBytes = 700;
// The device's side (src/virtio/vsock/vsock_muxer.h): its buf_alloc, its first host port.
constexpr uint32_t kDeviceBufAlloc = 256 * 1024;
constexpr uint32_t kFirstHostPort = 1u << 30;
// VERSION_1 (32), EVENT_IDX (29), INDIRECT_DESC (28); the guest takes VERSION_1 and indirect.
constexpr uint64_t kDeviceFeatures = (1ull << 32) | (1ull << 29) | (1ull << 28);
constexpr uint64_t kDriverFeatures = (1ull << 32) | (1ull << 28);
constexpr int kGuestExitCode = 7;

Bytes echo_payload() {  // what the guest sends to port 5000
  Bytes bytes(kEchoBytes);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 11 + 5);
  return bytes;
}

Bytes accept_payload() {  // what the host sends to guest port 6000
  Bytes bytes(kAcceptBytes);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 13 + 1);
  return bytes;
}

std::string fnv_text(const Bytes& bytes) { return fmt::format("0x{:016x}", fnv1a(bytes.data(), bytes.size())); }

class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/skiff-vsock-XXXXXX";
    if (mkdtemp(name) != nullptr) path_ = name;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), std::min(path.size(), sizeof(address.sun_path) - 1));
  return address;
}

// Waits until `fd` is readable (or at EOF / in error); false after `timeout`.
bool wait_readable(int fd, std::chrono::milliseconds timeout) {
  pollfd entry{.fd = fd, .events = POLLIN, .revents = 0};
  int ready = 0;
  do {
    ready = ::poll(&entry, 1, static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);
  return ready > 0;
}

bool write_all(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// ---- guest → host: the echo program on "<socket>_5000" ---------------------------------------

class EchoServer {
 public:
  struct Outcome {
    size_t connections = 0;
    Bytes received;
    bool eof = false;  // the connection ended with EOF (not a reset)
    std::vector<std::string> errors;
  };

  explicit EchoServer(const std::string& path) : path_(path) {
    listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const sockaddr_un address = unix_address(path);
    if (!listener_.valid() ||
        ::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
        ::listen(listener_.get(), 4) != 0) {
      error_ = fmt::format("listening on {}: {}", path, std::strerror(errno));
      return;
    }
    thread_ = std::thread([this] { run(); });
  }
  ~EchoServer() {
    stop();
    ::unlink(path_.c_str());
  }

  const std::string& error() const { return error_; }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  Outcome outcome() {
    std::lock_guard lock(mutex_);
    return outcome_;
  }

 private:
  void record_error(std::string what) {
    std::lock_guard lock(mutex_);
    outcome_.errors.push_back(std::move(what));
  }

  void run() {
    UniqueFd connection;
    while (!stop_) {
      pollfd entries[2] = {{.fd = listener_.get(), .events = POLLIN, .revents = 0},
                           {.fd = connection.get(), .events = POLLIN, .revents = 0}};
      int ready = ::poll(entries, connection.valid() ? 2 : 1, 50);
      if (ready <= 0) continue;
      if (entries[0].revents & POLLIN) {
        UniqueFd accepted(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (accepted.valid()) {
          std::lock_guard lock(mutex_);
          ++outcome_.connections;
          if (!connection.valid()) connection = std::move(accepted);  // a second one is closed
        }
      }
      if (connection.valid() && (entries[1].revents & (POLLIN | POLLHUP | POLLERR))) {
        uint8_t buffer[4096];
        ssize_t n = ::recv(connection.get(), buffer, sizeof(buffer), 0);
        if (n > 0) {
          {
            std::lock_guard lock(mutex_);
            outcome_.received.insert(outcome_.received.end(), buffer, buffer + n);
          }
          if (!write_all(connection.get(), buffer, static_cast<size_t>(n))) {
            record_error(fmt::format("echo write: {}", std::strerror(errno)));
          }
        } else if (n == 0) {
          std::lock_guard lock(mutex_);
          outcome_.eof = true;
          connection.reset();
        } else if (errno != EINTR && errno != EAGAIN) {
          record_error(fmt::format("echo read: {}", std::strerror(errno)));
          connection.reset();
        }
      }
    }
  }

  std::string path_;
  std::string error_;
  UniqueFd listener_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  Outcome outcome_;
};

// ---- host → guest: a program that CONNECTs to guest port 6000 --------------------------------

struct ClientOutcome {
  std::string ok_line;     // without its '\n'
  Bytes answer;            // what the guest sent back
  bool eof_after = false;  // EOF after the answer once we shut our sending side
  std::optional<VsockStats> stats_while_open;
  std::vector<std::string> errors;
};

// Reads exactly `size` bytes (each wait at most `timeout`); fewer on EOF, error or timeout.
Bytes read_bytes(int fd, size_t size, std::chrono::milliseconds timeout, std::vector<std::string>& errors) {
  Bytes out;
  while (out.size() < size) {
    if (!wait_readable(fd, timeout)) {
      errors.push_back(fmt::format("timed out after {} of {} bytes", out.size(), size));
      break;
    }
    uint8_t buffer[4096];
    ssize_t n = ::recv(fd, buffer, std::min(sizeof(buffer), size - out.size()), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      errors.push_back(n == 0 ? fmt::format("EOF after {} of {} bytes", out.size(), size)
                              : fmt::format("read: {}", std::strerror(errno)));
      break;
    }
    out.insert(out.end(), buffer, buffer + n);
  }
  return out;
}

ClientOutcome run_client(const std::string& socket_path, bool early_data, Vm& vm) {
  ClientOutcome out;
  const Bytes payload = accept_payload();
  // The device binds its socket when the VM is built; retry anyway, as a program would.
  UniqueFd fd;
  const sockaddr_un address = unix_address(socket_path);
  for (auto deadline = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < deadline;) {
    fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) break;
    fd.reset();
    std::this_thread::sleep_for(20ms);
  }
  if (!fd.valid()) {
    out.errors.push_back(fmt::format("cannot connect to {}: {}", socket_path, std::strerror(errno)));
    return out;
  }
  std::string connect = fmt::format("CONNECT {}\n", kListenPort);
  Bytes first(connect.begin(), connect.end());
  if (early_data) first.insert(first.end(), payload.begin(), payload.end());
  if (!write_all(fd.get(), first.data(), first.size())) {
    out.errors.push_back(fmt::format("writing CONNECT: {}", std::strerror(errno)));
    return out;
  }
  // The OK line, a byte at a time: nothing after it may be consumed here.
  std::vector<std::string> errors;
  for (;;) {
    Bytes byte = read_bytes(fd.get(), 1, 10s, errors);
    if (byte.empty()) {
      out.errors.push_back("no OK line (got \"" + out.ok_line + "\"): " + errors.back());
      return out;
    }
    if (byte[0] == '\n') break;
    out.ok_line.push_back(static_cast<char>(byte[0]));
    if (out.ok_line.size() > 32) {
      out.errors.push_back("no newline after \"" + out.ok_line + "\"");
      return out;
    }
  }
  if (!early_data && !write_all(fd.get(), payload.data(), payload.size())) {
    out.errors.push_back(fmt::format("writing the payload: {}", std::strerror(errno)));
    return out;
  }
  out.answer = read_bytes(fd.get(), payload.size(), 10s, out.errors);
  // The device counts bytes once send() has returned, so the program it wakes may read them
  // a moment before the connection's counter includes them: give the counter that moment.
  for (auto deadline = std::chrono::steady_clock::now() + 2s;;) {
    out.stats_while_open = vm.stats().vsock;
    if (!out.stats_while_open || out.stats_while_open->connections.size() != 1 ||
        out.stats_while_open->connections.front().bytes_to_host >= out.answer.size() ||
        std::chrono::steady_clock::now() >= deadline) {
      break;
    }
    std::this_thread::sleep_for(2ms);
  }
  if (::shutdown(fd.get(), SHUT_WR) != 0) {
    out.errors.push_back(fmt::format("shutdown(SHUT_WR): {}", std::strerror(errno)));
    return out;
  }
  if (!wait_readable(fd.get(), 10s)) {
    out.errors.push_back("no EOF within 10 s of shutdown(SHUT_WR)");
    return out;
  }
  uint8_t extra[64];
  ssize_t n = ::recv(fd.get(), extra, sizeof(extra), 0);
  out.eof_after = n == 0;
  if (n != 0) {
    out.errors.push_back(n > 0 ? fmt::format("{} more bytes instead of EOF", n)
                               : fmt::format("read after shutdown: {}", std::strerror(errno)));
  }
  return out;
}

// ---- the test ---------------------------------------------------------------------------------

struct VsockCase {
  std::string name;
  VirtioTransport transport;
  bool early_data;  // the host's payload in the same write as its CONNECT line
};

// ctest names the case by this, not by its bytes.
void PrintTo(const VsockCase& c, std::ostream* out) { *out << c.name; }

class VirtioVsock : public ::testing::TestWithParam<VsockCase> {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << "tier-2 tests need /dev/kvm: " << *reason;
  }
};

// The first line starting with `prefix`, as key=value fields (empty when there is none).
std::map<std::string, std::string> line_fields(const GuestReport& report, const std::string& prefix) {
  auto lines = report.lines_starting(prefix);
  return lines.empty() ? std::map<std::string, std::string>{} : report_fields(lines.front());
}

TEST_P(VirtioVsock, ConnectAcceptRefuseAndResetViolations) {
  const VsockCase& param = GetParam();
  TempDir dir;
  ASSERT_FALSE(dir.path().empty()) << "mkdtemp: " << std::strerror(errno);
  const std::string socket_path = dir.path() + "/vm.vsock";
  EchoServer echo(socket_path + "_" + std::to_string(kEchoPort));
  ASSERT_TRUE(echo.error().empty()) << echo.error();

  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF,
                         fmt::format("skiff.virtio=1 skiff.vsock=all skiff.exit={}", kGuestExitCode), 1, 64);
  VsockSpec vsock;
  vsock.guest_cid = kGuestCid;
  vsock.socket = socket_path;
  vsock.transport = param.transport;
  spec.vsock = vsock;
  spec.machine.mmio_cmdline = true;  // the test guest finds virtio-mmio slots on the command line

  const auto started = std::chrono::steady_clock::now();
  auto guest = std::make_unique<LiveGuest>(spec);
  ASSERT_FALSE(guest->error()) << *guest->error();
  struct stat info{};
  ASSERT_EQ(::stat(socket_path.c_str(), &info), 0) << socket_path << ": " << std::strerror(errno);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0600u);

  // A device call that never returns (a wedged worker joined by the guest's reset) keeps the
  // vCPU, and with it Vm::stop(), from ever finishing: such a VM is leaked, so that the test
  // fails now with the console rather than hanging until ctest's timeout.
  auto give_up = [&](const std::string& what) {
    if (guest->wait(30s)) return;
    ADD_FAILURE() << what << "; the VM does not stop (a device call hangs?): leaked\n" << guest->console();
    (void)guest.release();
  };
  auto listening = guest->next_line("virtio-vsock listen ", 90s);
  if (!listening) {
    ADD_FAILURE() << "no listen line\n" << guest->console();
    give_up("no listen line");
    return;
  }
  const auto listen_seen = std::chrono::steady_clock::now();
  ClientOutcome client;
  std::thread host([&] { client = run_client(socket_path, param.early_data, guest->vm()); });
  auto done = guest->next_line("virtio-vsock done ", 90s);
  host.join();
  const auto done_seen = std::chrono::steady_clock::now();
  auto exit = guest->wait(30s);
  echo.stop();
  if (!exit) {
    give_up(done ? "the guest did not finish" : "no done line");
    if (!guest) return;
    exit = guest->wait(0ms);
  }
  ASSERT_TRUE(done) << guest->console();
  ASSERT_TRUE(exit) << "the guest did not finish\n" << guest->console();
  EXPECT_EQ(exit->exit_code, kGuestExitCode) << exit->detail << "\n" << guest->console();
  std::printf("[ timing ] %s: start to listen %.2f s, host connection and the rest %.2f s\n", param.name.c_str(),
              std::chrono::duration<double>(listen_seen - started).count(),
              std::chrono::duration<double>(done_seen - listen_seen).count());

  const GuestReport r = parse_report(guest->console());
  const std::string transport = param.transport == VirtioTransport::kPci ? "pci" : "mmio";
  // Device set-up.
  auto device = line_fields(r, "virtio-vsock transport=" + transport + " ");
  EXPECT_EQ(device["features-ok"], "1") << r.console;
  EXPECT_EQ(device["device-features"], fmt::format("{:#x}", kDeviceFeatures)) << r.console;
  EXPECT_EQ(device["driver-features"], fmt::format("{:#x}", kDriverFeatures)) << r.console;
  EXPECT_EQ(line_fields(r, "virtio-vsock config ")["guest-cid"], std::to_string(kGuestCid)) << r.console;
  auto queues = line_fields(r, "virtio-vsock queues ");
  EXPECT_EQ(queues["status"], "15") << r.console;
  EXPECT_EQ(queues["queue-size"], "8") << r.console;

  // a. guest → host: connect, echo, close.
  auto connect = line_fields(r, "virtio-vsock connect ");
  EXPECT_EQ(connect["reply"], "response") << r.console;
  EXPECT_EQ(connect["host-buf-alloc"], std::to_string(kDeviceBufAlloc)) << r.console;
  auto echo_line = line_fields(r, "virtio-vsock echo ");
  EXPECT_EQ(echo_line["sent"], std::to_string(kEchoBytes)) << r.console;
  EXPECT_EQ(echo_line["received"], std::to_string(kEchoBytes)) << r.console;
  EXPECT_EQ(echo_line["fnv"], fnv_text(echo_payload())) << r.console;
  EXPECT_EQ(echo_line["match"], "1") << r.console;
  EXPECT_EQ(echo_line["indirect"], "1") << r.console;
  EXPECT_GE(field_u64(echo_line, "packets"), 1u) << r.console;
  EXPECT_EQ(echo_line.count("other"), 0u) << r.console;
  EXPECT_EQ(line_fields(r, "virtio-vsock close port=5000")["reply"], "rst") << r.console;
  auto echoed = echo.outcome();
  EXPECT_EQ(echoed.connections, 1u);
  EXPECT_EQ(echoed.received, echo_payload()) << echoed.received.size() << " bytes reached the host program";
  EXPECT_TRUE(echoed.eof) << "the guest's SHUTDOWN did not reach the host program as EOF";
  for (const auto& error : echoed.errors) ADD_FAILURE() << "echo program: " << error;

  // b. refused.
  EXPECT_EQ(line_fields(r, "virtio-vsock refused ")["reply"], "rst") << r.console;

  // c. host → guest.
  for (const auto& error : client.errors) ADD_FAILURE() << "host program: " << error << "\n" << r.console;
  auto accept = line_fields(r, "virtio-vsock accept ");
  EXPECT_EQ(accept["from-cid"], "2") << r.console;
  EXPECT_EQ(accept["answered"], "1") << r.console;
  EXPECT_EQ(accept["host-buf-alloc"], std::to_string(kDeviceBufAlloc)) << r.console;
  const uint64_t host_port = field_u64(accept, "from-port");
  EXPECT_GE(host_port, kFirstHostPort) << r.console;
  EXPECT_EQ(client.ok_line, fmt::format("OK {}", host_port));
  auto recv = line_fields(r, "virtio-vsock recv ");
  EXPECT_EQ(recv["received"], std::to_string(kAcceptBytes)) << r.console;
  EXPECT_EQ(recv["fnv"], fnv_text(accept_payload())) << r.console;
  Bytes reversed = accept_payload();
  std::reverse(reversed.begin(), reversed.end());
  EXPECT_EQ(line_fields(r, "virtio-vsock reply ")["fnv"], fnv_text(reversed)) << r.console;
  EXPECT_EQ(client.answer, reversed) << client.answer.size() << " bytes came back";
  EXPECT_TRUE(client.eof_after);
  auto peer_shutdown = line_fields(r, "virtio-vsock peer-shutdown ");
  EXPECT_EQ(peer_shutdown["reply"], "shutdown") << r.console;
  EXPECT_EQ(peer_shutdown["flags"], "2") << "SHUTDOWN(SEND) for the host's SHUT_WR\n" << r.console;
  EXPECT_EQ(line_fields(r, "virtio-vsock close port=6000")["reply"], "rst") << r.console;
  ASSERT_TRUE(client.stats_while_open.has_value()) << "Vm::stats() has no vsock object";
  ASSERT_EQ(client.stats_while_open->connections.size(), 1u) << "connections open while the host waited";
  const VsockConnectionStats& open = client.stats_while_open->connections.front();
  EXPECT_EQ(open.host_port, host_port);
  EXPECT_EQ(open.guest_port, kListenPort);
  EXPECT_EQ(open.initiator, "host");
  EXPECT_EQ(open.state, "established");
  EXPECT_EQ(open.bytes_to_guest, kAcceptBytes);
  EXPECT_EQ(open.bytes_to_host, kAcceptBytes);

  // d. violations.
  EXPECT_EQ(line_fields(r, "virtio-vsock violation wrong-source ")["reply"], "none") << r.console;
  EXPECT_EQ(line_fields(r, "virtio-vsock violation no-connection ")["reply"], "rst") << r.console;
  EXPECT_EQ(line_fields(r, "virtio-vsock violation short-payload ")["reply"], "rst") << r.console;

  auto end = line_fields(r, "virtio-vsock done ");
  EXPECT_EQ(end["unexpected"], "0") << r.console;
  EXPECT_EQ(end["leftover"], "0") << r.console;
  EXPECT_EQ(end["events"], "0") << "no transport reset without a restore\n" << r.console;
  EXPECT_EQ(end["reset-status"], "0") << r.console;
  EXPECT_TRUE(r.lines_starting("error").empty()) << r.console;

  // The device's totals.
  auto stats = guest->vm().stats().vsock;
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->guest_cid, kGuestCid);
  EXPECT_EQ(stats->guest_connections, 1u) << "port 5000";
  EXPECT_EQ(stats->host_connections, 1u) << "port 6000";
  EXPECT_EQ(stats->refused, 1u) << "port 5001";
  // close 5000, refused 5001, close 6000, no-connection, short-payload.
  EXPECT_EQ(stats->resets_sent, 5u);
  EXPECT_EQ(stats->resets_received, 0u);
  EXPECT_EQ(stats->bytes_to_host, kEchoBytes + kAcceptBytes);
  EXPECT_EQ(stats->bytes_to_guest, kEchoBytes + kAcceptBytes);
  EXPECT_EQ(stats->bad_packets, 2u) << "wrong source and short payload";
  EXPECT_TRUE(stats->connections.empty());

  guest.reset();
  EXPECT_FALSE(std::filesystem::exists(socket_path)) << "the socket outlived the VM";
}

INSTANTIATE_TEST_SUITE_P(Transports, VirtioVsock,
                         ::testing::Values(VsockCase{"pci", VirtioTransport::kPci, false},
                                           VsockCase{"mmio", VirtioTransport::kMmio, true}),
                         [](const ::testing::TestParamInfo<VsockCase>& param) { return param.param.name; });

}  // namespace
}  // namespace skiff::test
