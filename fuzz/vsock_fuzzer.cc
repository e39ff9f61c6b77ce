// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the virtio-vsock connection code: the packet header
// (src/virtio/vsock/vsock_packet.cc: encode/decode, check_guest_header) and VsockMuxer
// (src/virtio/vsock/vsock_muxer.cc), the state machine between guest packets and host Unix
// sockets. The muxer is driven synchronously, as its unit tests do (no device thread, a
// fake clock), by a list of operations that mix what the guest sends, what host programs do
// on real Unix sockets, pumps of packets for the guest and timer ticks.
//
// Once per process: a directory from mkdtemp under /tmp (short: sun_path is 108 bytes), the
// device's socket "v.sock" (api::listen_unix_socket, non-blocking) and a host program
// listening on "v.sock_1000" (guest connections to host port 1000 land there; "v.sock_1001"
// does not exist, so port 1001 is refused). Per input: a fresh VsockMuxer (guest CID 3) over
// the listener; at the end it is destroyed, every host fd is closed and both listeners'
// backlogs are drained, so inputs do not see each other.
//
// Input layout (fuzz/corpus/make_vsock_corpus.py writes seeds in this format): operations
// until the input ends (at most kMaxOps), each a u8 code (% 8, but 0xff is 8) and its arguments:
//   0 guest packet: u8 sel, u8 op, u8 credit, u8 payload, u16 len, then what these bits ask
//     for, in this order: ports, CIDs and type, op, flags, buf_alloc, fwd_cnt, u32 len, and
//     last the payload's argument:
//       sel bits 0-2: host port kHostPorts[n] (1000, 1001, kFirstHostPort + 0..3, ...),
//           bits 3-4: guest port 1 + n, bit 5: u32 guest port + u32 host port follow instead,
//           bit 6: u64 src_cid, u64 dst_cid, u16 type follow (else 3, 2, stream),
//           bit 7: u32 flags follows (else op bits 3-4, the SHUTDOWN flags)
//       op bits 0-2: the op (0 means RW), bits 3-4: SHUTDOWN flags, bit 7: u16 op follows
//       credit bits 0-1: buf_alloc = kBufAlloc / u16 follows / u32 follows / 0,
//              bits 2-3: fwd_cnt = the RW bytes the guest got on that connection (all
//              consumed) / that minus a u16 that follows / u32 follows / unchanged
//       payload bits 0-1: the bytes carried after the header: len bytes from the input
//              (fewer where the input ends) / len filler bytes / filler, len - 1 - u8 that
//              follows (short) / filler, len + u8 that follows (more than len);
//              bit 2: keep len on ops other than RW (else 0 there); bit 3: len is a u32
//              that follows, not the u16; bit 4: clamp an RW's len to the credit the muxer
//              last advertised for the connection (a well-behaved guest)
//   1 host client connects to v.sock: u8 mode: bits 0-1 "CONNECT <p>\n" / "CONNECT <p>\r\n" /
//     "CONNECT   <p>\n" / raw: u8 length + that many input bytes; <p> is guest port 1 + bits
//     2-3, or a u32 that follows with bit 4
//   2 the program on v.sock_1000 accepts: up to 1 + u8 % 4 pending connections
//   3 write to a host fd (clients and accepted programs, in creation order): u8 index, u8 mode,
//     u16 len: mode bit 0 filler of len << (mode bits 1-2) bytes, else len input bytes;
//     non-blocking, at most kMaxHostWriteBytes per input
//   4 u8 index, u8 how (% 4): shutdown(SHUT_WR) / close / shutdown(SHUT_RD) / shutdown(SHUT_RDWR)
//   5 pump: u8 mode, u8 count, then the capacity's argument: mode bits 0-1 capacity
//     44 + 65536 / 44 + u16 / 44 + u8 / u8 % 45 (below 44: nothing may come out);
//     bit 2 drain (until nothing is left, bounded, see drain_bound()), else at most 1 + count
//     packets; bit 3 skips on_host_events() first
//   6 clock: u16 milliseconds forward, then on_timer()
//   7 read from a host fd: u8 index, u16 max bytes (0: until it would block, at most 1 MiB)
//   8 a burst of well-formed guest REQUESTs from guest ports kBurstFirstPort + i, past a limit:
//     u8 mode: kMaxConnections + 1 + bits 1-2 of them to host port 1000, or with bit 0
//     kMaxPendingResets + 1 + bits 1-2 to port 1001 (each refused with an RST); one burst per
//     input (the others are no-ops): they take tens of milliseconds
// Filler bytes come from one pseudo-random stream per input, so a byte delivered out of
// order or twice does not match.
//
// Invariants, besides the sanitizers:
//   - headers: decode(encode(h)) == h for every guest header; check_guest_header() agrees
//     with an independent reading of §5.10.6 rules;
//   - every packet for the guest: kHeaderSize <= size <= capacity, len == size - 44,
//     len <= kMaxPayload, encode(decode(bytes)) == bytes, dst_cid 3, type stream, op 1..7,
//     src_cid 2 (except an RST answering a packet to another CID: that CID); REQUEST only for
//     a host-initiated connection (host port >= kFirstHostPort), once; RESPONSE only for a
//     guest-initiated one, once; RW/SHUTDOWN/CREDIT_* only for live connections, RW only
//     after the handshake and never beyond the credit the guest last advertised
//     (rx - fwd_cnt <= buf_alloc, free-running u32); CREDIT_REQUEST only when that credit
//     is 0; the muxer's fwd_cnt never decreases, never exceeds the bytes the guest sent and
//     is never below what the host program read;
//   - data: what the guest receives on a connection is a prefix of what its host program
//     wrote, and what a host program reads is a prefix of what the guest sent on it (for
//     programs accepted from v.sock_1000 and for clients that sent a full CONNECT line,
//     whose first bytes must be "OK <host port>\n", only after the guest's RESPONSE);
//   - tables: connection_count() <= kMaxConnections; stats() lists each (host port, guest
//     port) once, no more than connection_count(); its totals match what the guest got
//     (bytes_to_guest, resets_sent); after on_timer(now) no deadline is <= now;
//   - pumps: next_packet_for_guest() returning 0 ends a pump; a drain ends within
//     drain_bound() packets; a capacity below 44 gives 0;
//   - memory: no single allocation made while the muxer handles a call exceeds
//     kMaxMuxerAllocation (4 x kBufAlloc): a connection buffers at most kBufAlloc bytes of
//     guest data (vsock_muxer.h), so a buffer that grows past that grows without bound;
//   - no file descriptor is left open once the muxer is destroyed.

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <sanitizer/allocator_interface.h>

#include "api/unix_socket.h"
#include "common/unique_fd.h"
#include "fuzz_support.h"
#include "virtio/vsock/vsock_muxer.h"
#include "virtio/vsock/vsock_packet.h"

namespace {

using namespace skiff::virtio::vsock;
using skiff::UniqueFd;
using skiff::fuzz::check;
using skiff::fuzz::FuzzReader;

constexpr uint32_t kGuestCid = 3;
constexpr uint32_t kProgramPort = 1000;  // "v.sock_1000" listens; 1001 has no socket
// The host ports a guest packet names (sel bits 0-2): the program's, a port nobody listens on,
// and the first host-initiated connections' (the muxer hands them out from kFirstHostPort).
constexpr std::array<uint32_t, 8> kHostPorts = {
    kProgramPort, 1001, kFirstHostPort, kFirstHostPort + 1, kFirstHostPort + 2, kFirstHostPort + 3,
    kProgramPort, kFirstHostPort};
constexpr size_t kMaxOps = 256;
constexpr size_t kMaxHostFds = 32;
constexpr size_t kMaxHostWriteBytes = 256 * 1024;         // written by host programs, per input
constexpr size_t kMaxGuestPayloadBytes = 4 * 1024 * 1024;  // carried by guest packets, per input
constexpr size_t kMaxCarried = kMaxPayload + 256;          // one guest packet's payload
constexpr size_t kMaxReadBytes = 1024 * 1024;              // one read op
constexpr size_t kMaxPumpCapacity = kHeaderSize + kMaxPayload;
constexpr uint32_t kBurstFirstPort = 1u << 20;  // guest ports of a burst, away from 1..4
// Room for a vector of kBufAlloc bytes plus a packet, grown by doubling, and then some.
constexpr size_t kMaxMuxerAllocation = 4 * size_t{kBufAlloc};

// ---- Allocations made inside the muxer -----------------------------------------------------

// Set while the muxer handles a call: the fuzzer's own logs grow large and are not the
// muxer's. The hook traps at once, so the stack names the allocation.
bool inside_muxer = false;

void on_malloc(const volatile void* /*pointer*/, size_t size) {
  if (inside_muxer) check(size <= kMaxMuxerAllocation);
}
void on_free(const volatile void* /*pointer*/) {}

class InMuxer {
 public:
  InMuxer() { inside_muxer = true; }
  ~InMuxer() { inside_muxer = false; }
  InMuxer(const InMuxer&) = delete;
  InMuxer& operator=(const InMuxer&) = delete;
};

// ---- Once per process ------------------------------------------------------------------------

struct Host {
  std::string dir;
  std::filesystem::path socket_path;
  skiff::api::UnixListener listener;
  UniqueFd program_listener;  // "<socket>_1000"
};

Host* host = nullptr;

void remove_host_files() {
  if (host == nullptr) return;
  std::error_code ignored;
  std::filesystem::remove_all(host->dir, ignored);
}

void set_nonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  check(flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0);
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  check(path.size() < sizeof(address.sun_path));
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

void set_up_host() {
  std::string pattern = "/tmp/vsockfz-XXXXXX";
  check(mkdtemp(pattern.data()) != nullptr);
  host = new Host;
  host->dir = pattern;
  host->socket_path = std::filesystem::path(pattern) / "v.sock";
  auto listener = skiff::api::listen_unix_socket(host->socket_path);
  check(listener.has_value());
  host->listener = std::move(*listener);
  // Non-blocking (VsockMuxer::create() makes it so too): drain_backlog() accepts until EAGAIN.
  set_nonblocking(host->listener.fd.get());

  host->program_listener.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const sockaddr_un address = unix_address(fmt::format("{}_{}", host->socket_path.string(), kProgramPort));
  check(host->program_listener.valid() &&
        bind(host->program_listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0 &&
        listen(host->program_listener.get(), 512) == 0);  // room for kMaxConnections
  std::atexit(remove_host_files);
}

// Accepts and closes whatever waits in a listener's backlog.
void drain_backlog(int listener) {
  for (;;) {
    const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    close(fd);
  }
}

size_t open_fd_count() {
  size_t count = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;  // includes the DIR's own fd, on both sides of a comparison
}

// ---- The model: connections as the guest and the host programs see them ---------------------

using Key = std::pair<uint32_t, uint32_t>;  // host port, guest port (the muxer's key)

// A byte log shared by a host fd and the connection it belongs to (the fd may close first).
using ByteLog = std::shared_ptr<std::vector<uint8_t>>;

struct Conn {
  Key key;
  bool host_initiated = false;
  bool request_seen = false;     // the muxer sent its REQUEST (host-initiated)
  bool response_seen = false;    // the muxer sent its RESPONSE (guest-initiated)
  bool guest_responded = false;  // a well-formed RESPONSE from the guest reached it (host-initiated)
  bool mapped = false;           // a host fd is known to be its other end
  // The guest's credit as the muxer last heard it, and what the guest received.
  uint32_t peer_buf_alloc = 0;
  uint32_t peer_fwd_cnt = 0;
  uint32_t rx = 0;                 // RW bytes to the guest (the muxer's tx_cnt)
  uint64_t rx_total = 0;
  uint32_t last_guest_fwd_cnt = 0;  // the fwd_cnt the guest last sent (mode "unchanged")
  // The muxer's fwd_cnt as the guest last saw it.
  uint32_t muxer_fwd_cnt = 0;
  std::vector<uint8_t> to_guest;  // RW payloads received, in order
  std::vector<uint8_t> to_host;   // RW payloads the guest sent while the connection was live
  ByteLog host_written;           // what the host program wrote (once mapped)
  uint64_t host_read = 0;         // bytes the mapped host program read
};
using ConnPtr = std::shared_ptr<Conn>;

struct HostFd {
  UniqueFd fd;
  bool program = false;  // accepted from v.sock_1000; else a client of v.sock
  bool tracked = false;  // a client that sent a full CONNECT line: its guest port is known
  uint32_t guest_port = 0;
  std::string ok_line;   // a tracked client's first bytes, up to the '\n'
  bool ok_done = false;
  ConnPtr conn;
  ByteLog written = std::make_shared<std::vector<uint8_t>>();  // data bytes written
};

// §5.10.6 rules, read independently of check_guest_header().
HeaderProblem expected_problem(const PacketHeader& h, uint64_t carried) {
  if (h.src_cid != kGuestCid) return HeaderProblem::kWrongSource;
  if (h.dst_cid != kHostCid) return HeaderProblem::kWrongDestination;
  if (h.type != kTypeStream) return HeaderProblem::kWrongType;
  if (h.op == kOpInvalid || h.op > kOpCreditRequest) return HeaderProblem::kUnknownOp;
  if (h.len > kMaxPayload) return HeaderProblem::kPayloadTooLarge;
  if (h.len > carried) return HeaderProblem::kPayloadMismatch;
  if (h.op != kOpRw && h.len != 0) return HeaderProblem::kPayloadOnControl;
  return HeaderProblem::kNone;
}

class Session {
 public:
  explicit Session(FuzzReader& in) : in_(in) {
    auto muxer = VsockMuxer::create(kGuestCid, host->socket_path, host->listener.fd.get());
    check(muxer.has_value());
    muxer_ = std::move(*muxer);
  }

  void run() {
    for (size_t op = 0; op < kMaxOps && !in_.empty(); ++op) {
      const uint8_t code = in_.u8();
      switch (code == 0xff ? 8 : code % 8) {
        case 0: guest_packet(); break;
        case 1: host_connect(); break;
        case 2: accept_programs(); break;
        case 3: host_write(); break;
        case 4: host_shutdown(); break;
        case 5: pump(); break;
        case 6: advance_clock(); break;
        case 7: host_read(); break;
        case 8: guest_burst(); break;
      }
    }
  }

  void finish() {
    sync();
    muxer_.reset();
    fds_.clear();
  }

 private:
  // ---- Guest packets ----

  uint8_t filler() {
    const uint32_t x = static_cast<uint32_t>(filler_index_++) * 2654435761u;
    return static_cast<uint8_t>(x >> 24);
  }

  ConnPtr live(Key key) {
    auto it = live_.find(key);
    return it == live_.end() ? nullptr : it->second;
  }

  void guest_packet() {
    const uint8_t sel = in_.u8();
    const uint8_t opb = in_.u8();
    const uint8_t credit = in_.u8();
    const uint8_t mode = in_.u8();
    uint64_t len = in_.u16();
    PacketHeader h{.src_cid = kGuestCid,
                   .dst_cid = kHostCid,
                   .src_port = 1u + ((sel >> 3) & 3),
                   .dst_port = kHostPorts[sel & 7],
                   .len = 0,
                   .type = kTypeStream,
                   .op = static_cast<uint16_t>((opb & 7) == 0 ? kOpRw : (opb & 7)),
                   .flags = static_cast<uint32_t>((opb >> 3) & 3),
                   .buf_alloc = kBufAlloc,
                   .fwd_cnt = 0};
    if (sel & 0x20) {
      h.src_port = in_.u32();
      h.dst_port = in_.u32();
    }
    if (sel & 0x40) {
      h.src_cid = in_.u64();
      h.dst_cid = in_.u64();
      h.type = in_.u16();
    }
    if (opb & 0x80) h.op = in_.u16();
    if (sel & 0x80) h.flags = in_.u32();
    if (h.op != kOpShutdown && (sel & 0x80) == 0) h.flags = 0;
    const Key key{h.dst_port, h.src_port};
    ConnPtr conn = live(key);
    switch (credit & 3) {
      case 0: h.buf_alloc = kBufAlloc; break;
      case 1: h.buf_alloc = in_.u16(); break;
      case 2: h.buf_alloc = in_.u32(); break;
      case 3: h.buf_alloc = 0; break;
    }
    const uint32_t received = conn ? conn->rx : 0;
    switch ((credit >> 2) & 3) {
      case 0: h.fwd_cnt = received; break;
      case 1: h.fwd_cnt = received - in_.u16(); break;
      case 2: h.fwd_cnt = in_.u32(); break;
      case 3: h.fwd_cnt = conn ? conn->last_guest_fwd_cnt : 0; break;
    }
    if (mode & 8) len = in_.u32();
    if ((mode & 0x10) && h.op == kOpRw && conn) {
      // What the muxer offered: kBufAlloc minus what it has not reported forwarded.
      const uint32_t outstanding = static_cast<uint32_t>(conn->to_host.size()) - conn->muxer_fwd_cnt;
      len = std::min<uint64_t>(len, kBufAlloc - std::min(outstanding, kBufAlloc));
    }
    if (h.op != kOpRw && (mode & 4) == 0) len = 0;
    h.len = static_cast<uint32_t>(len);

    std::vector<uint8_t> payload;
    switch (mode & 3) {
      case 0: {
        auto bytes = in_.bytes(std::min<uint64_t>(len, kMaxCarried));
        payload.assign(bytes.begin(), bytes.end());
        break;
      }
      case 1: payload.resize(std::min<uint64_t>(len, kMaxCarried)); break;
      case 2: payload.resize(std::min<uint64_t>(len - std::min<uint64_t>(len, 1 + in_.u8()), kMaxCarried)); break;
      case 3: payload.resize(std::min<uint64_t>(len + in_.u8(), kMaxCarried)); break;
    }
    if ((mode & 3) != 0) {
      if (guest_payload_bytes_ + payload.size() > kMaxGuestPayloadBytes) payload.clear();
      for (auto& byte : payload) byte = filler();
    }
    guest_payload_bytes_ += payload.size();

    // The header code itself.
    check(decode_header(encode_header(h)) == h);
    const HeaderProblem problem = check_guest_header(h, kGuestCid, payload.size());
    check(problem == expected_problem(h, payload.size()));
    if (problem == HeaderProblem::kWrongDestination) wrong_destinations_.insert(h.dst_cid);

    // The model: a well-formed packet for a live connection updates the guest's credit;
    // RW data counts as sent (the muxer may still refuse it and reset: the extra bytes are
    // then only at the end of what the host can read, which the prefix check allows).
    if (problem == HeaderProblem::kNone && conn && h.op != kOpRequest) {
      conn->peer_buf_alloc = h.buf_alloc;
      conn->peer_fwd_cnt = h.fwd_cnt;
      conn->last_guest_fwd_cnt = h.fwd_cnt;
      if (h.op == kOpRw) conn->to_host.insert(conn->to_host.end(), payload.begin(), payload.begin() + h.len);
      if (h.op == kOpResponse && conn->host_initiated) conn->guest_responded = true;
    }
    spdlog::debug("vsock_fuzzer: guest {} {}:{} -> {}:{} len {} carried {} buf_alloc {} fwd_cnt {} flags {}: {}",
                  op_name(h.op), h.src_cid, h.src_port, h.dst_cid, h.dst_port, h.len, payload.size(), h.buf_alloc,
                  h.fwd_cnt, h.flags, describe(problem));
    {
      InMuxer guard;
      muxer_->on_guest_packet(h, payload, now_);
    }
    const bool may_create = problem == HeaderProblem::kNone && h.op == kOpRequest && !conn;
    sync(may_create ? std::optional<PacketHeader>(h) : std::nullopt);
  }

  void guest_burst() {
    const uint8_t mode = in_.u8();
    if (burst_done_) return;
    burst_done_ = true;
    const size_t count = ((mode & 1) ? kMaxPendingResets : kMaxConnections) + 1 + ((mode >> 1) & 3);
    const uint32_t port = (mode & 1) ? 1001 : kProgramPort;
    for (size_t i = 0; i < count; ++i) {
      const PacketHeader h{.src_cid = kGuestCid,
                           .dst_cid = kHostCid,
                           .src_port = kBurstFirstPort + static_cast<uint32_t>(i),
                           .dst_port = port,
                           .len = 0,
                           .type = kTypeStream,
                           .op = kOpRequest,
                           .flags = 0,
                           .buf_alloc = kBufAlloc,
                           .fwd_cnt = 0};
      // stats() after each of hundreds of REQUESTs would dominate the run time: the count says
      // what happened (a new connection, a refusal, or a second REQUEST resetting one), and one
      // sync() at the end compares the result with the muxer's table.
      const Key key{h.dst_port, h.src_port};
      const size_t before = muxer_->connection_count();
      {
        InMuxer guard;
        muxer_->on_guest_packet(h, {}, now_);
      }
      const size_t after = muxer_->connection_count();
      if (after == before + 1) {
        check(live(key) == nullptr);
        live_[key] = new_guest_conn(key, h);
      } else if (after + 1 == before) {
        check(live_.erase(key) == 1);
      } else {
        check(after == before);
      }
    }
    sync();
    spdlog::debug("vsock_fuzzer: {} guest REQUESTs to port {}: {} connections", count, port,
                  muxer_->connection_count());
  }

  // ---- Host programs ----

  void host_connect() {
    const uint8_t mode = in_.u8();
    uint32_t port = 1u + ((mode >> 2) & 3);
    if (mode & 0x10) port = in_.u32();
    std::string line;
    bool tracked = true;
    switch (mode & 3) {
      case 0: line = fmt::format("CONNECT {}\n", port); break;
      case 1: line = fmt::format("CONNECT {}\r\n", port); break;
      case 2: line = fmt::format("CONNECT   {}\n", port); break;
      case 3: line = in_.string(64); tracked = false; break;
    }
    if (fds_.size() >= kMaxHostFds) return;
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    check(fd.valid());
    const sockaddr_un address = unix_address(host->socket_path.string());
    // A full backlog refuses at once (EAGAIN) on a non-blocking Unix socket.
    if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) return;
    auto entry = std::make_unique<HostFd>();
    entry->fd = std::move(fd);
    entry->tracked = tracked;
    entry->guest_port = port;
    if (!line.empty()) {
      // A fresh socket's buffer takes a few dozen bytes whole.
      const ssize_t sent = send(entry->fd.get(), line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      check(sent == static_cast<ssize_t>(line.size()));
      host_written_ += line.size();
    }
    spdlog::debug("vsock_fuzzer: host client {} connects, {} bytes{}", fds_.size(), line.size(),
                  tracked ? fmt::format(" (CONNECT {})", port) : "");
    fds_.push_back(std::move(entry));
  }

  void accept_programs() {
    const size_t count = 1 + in_.u8() % 4;
    for (size_t i = 0; i < count && fds_.size() < kMaxHostFds; ++i) {
      UniqueFd fd(accept4(host->program_listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd.valid()) return;
      // The backlog is first in, first out: this is the oldest guest connection to port 1000
      // not accepted yet.
      check(!pending_accepts_.empty());
      auto entry = std::make_unique<HostFd>();
      entry->fd = std::move(fd);
      entry->program = true;
      entry->conn = pending_accepts_.front();
      pending_accepts_.pop_front();
      spdlog::debug("vsock_fuzzer: program {} accepted for guest port {}", fds_.size(), entry->conn->key.second);
      map(*entry);
      fds_.push_back(std::move(entry));
    }
  }

  HostFd* pick_fd() {
    const uint8_t index = in_.u8();
    return fds_.empty() ? nullptr : fds_[index % fds_.size()].get();
  }

  void host_write() {
    HostFd* fd = pick_fd();
    const uint8_t mode = in_.u8();
    const size_t len = in_.u16();
    std::vector<uint8_t> data;
    if (mode & 1) {
      data.resize(std::min(len << ((mode >> 1) & 3), kMaxHostWriteBytes - host_written_));
      for (auto& byte : data) byte = filler();
    } else {
      auto bytes = in_.bytes(len);
      data.assign(bytes.begin(), bytes.begin() + std::min(bytes.size(), kMaxHostWriteBytes - host_written_));
    }
    if (fd == nullptr || data.empty()) return;
    const ssize_t sent = send(fd->fd.get(), data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    spdlog::debug("vsock_fuzzer: host fd writes {} bytes: {}", data.size(), sent);
    if (sent <= 0) return;
    host_written_ += static_cast<size_t>(sent);
    fd->written->insert(fd->written->end(), data.begin(), data.begin() + sent);
    if (fd->conn) check_to_guest(*fd->conn);
  }

  void host_shutdown() {
    const uint8_t index = in_.u8();
    const uint8_t how = in_.u8() % 4;
    if (fds_.empty()) return;
    const size_t at = index % fds_.size();
    spdlog::debug("vsock_fuzzer: host fd {}: {}", at, how == 1 ? "close" : "shutdown");
    if (how == 1) {
      fds_.erase(fds_.begin() + static_cast<ptrdiff_t>(at));
    } else {
      shutdown(fds_[at]->fd.get(), how == 0 ? SHUT_WR : how == 2 ? SHUT_RD : SHUT_RDWR);
    }
  }

  void host_read() {
    HostFd* fd = pick_fd();
    size_t limit = in_.u16();
    if (limit == 0) limit = kMaxReadBytes;
    if (fd == nullptr) return;
    std::vector<uint8_t> buffer(std::min<size_t>(limit, 64 * 1024));
    size_t total = 0;
    while (total < limit) {
      const ssize_t got = recv(fd->fd.get(), buffer.data(), std::min(buffer.size(), limit - total), MSG_DONTWAIT);
      if (got <= 0) break;
      total += static_cast<size_t>(got);
      received_by_host(*fd, std::span(buffer.data(), static_cast<size_t>(got)));
    }
    spdlog::debug("vsock_fuzzer: host fd read {} bytes", total);
  }

  void received_by_host(HostFd& fd, std::span<const uint8_t> bytes) {
    if (!fd.program && !fd.tracked) return;  // a raw client: its bytes mean nothing to us
    if (!fd.program && !fd.ok_done) {
      // "OK <host port>\n" comes first, and only once the guest accepted.
      while (!bytes.empty() && !fd.ok_done) {
        const char c = static_cast<char>(bytes.front());
        bytes = bytes.subspan(1);
        if (c != '\n') {
          fd.ok_line.push_back(c);
          check(fd.ok_line.size() <= 13);  // "OK 4294967295"
          continue;
        }
        fd.ok_done = true;
        check(fd.ok_line.size() > 3 && fd.ok_line.starts_with("OK "));
        uint64_t port = 0;
        for (char digit : std::string_view(fd.ok_line).substr(3)) {
          check(digit >= '0' && digit <= '9');
          port = port * 10 + static_cast<uint64_t>(digit - '0');
        }
        check(port >= kFirstHostPort && port <= UINT32_MAX);
        auto it = host_initiated_.find(static_cast<uint32_t>(port));
        check(it != host_initiated_.end());
        ConnPtr conn = it->second;
        check(conn->key.second == fd.guest_port && conn->guest_responded && !conn->mapped);
        fd.conn = conn;
        map(fd);
      }
      if (bytes.empty()) return;
    }
    // A program accepted from v.sock_1000 or a client past its OK line: guest data.
    check(fd.conn != nullptr);
    Conn& conn = *fd.conn;
    check(conn.host_read + bytes.size() <= conn.to_host.size());
    check(std::memcmp(conn.to_host.data() + conn.host_read, bytes.data(), bytes.size()) == 0);
    conn.host_read += bytes.size();
  }

  // The host fd is now known to be the connection's other end.
  void map(HostFd& fd) {
    fd.conn->mapped = true;
    fd.conn->host_written = fd.written;
    check_to_guest(*fd.conn);
  }

  // What the guest received is a prefix of what the host program wrote.
  void check_to_guest(const Conn& conn) {
    if (!conn.host_written) return;
    const auto& written = *conn.host_written;
    check(conn.to_guest.size() <= written.size());
    check(std::equal(conn.to_guest.begin(), conn.to_guest.end(), written.begin()));
  }

  // ---- Packets for the guest ----

  // How many packets one drain (on_host_events() not called in between) can produce at
  // most. next_packet_for_guest() returns at most one packet per call, and:
  //   - RSTs already queued: at most kMaxPendingResets (push_reset drops beyond);
  //   - per connection alive at the start (no connection is created while draining), at most
  //     one each of REQUEST, RESPONSE and CREDIT_UPDATE (their need_ flags are only set by
  //     guest packets and host events), one CREDIT_REQUEST (credit_requested is only
  //     cleared by a guest packet), one SHUTDOWN (need_shutdown is only set when recv() reads
  //     EOF, after which host_eof stops the reads) and one RST (reset_connection closes it):
  //     6 packets;
  //   - RW packets carry at least one byte each, read from a host socket: at most the bytes
  //     host programs wrote and the guest did not receive yet.
  // A call that returns 0 (a connection closed while queued, data that needs a larger
  // buffer) ends the drain. Anything beyond the bound is a loop that does not make progress.
  size_t drain_bound() const {
    return kMaxPendingResets + 6 * muxer_->connection_count() + (host_written_ - bytes_to_guest_);
  }

  void pump() {
    const uint8_t mode = in_.u8();
    const size_t count = 1 + in_.u8();
    size_t capacity = kMaxPumpCapacity;
    switch (mode & 3) {
      case 0: capacity = kHeaderSize + kMaxPayload; break;
      case 1: capacity = kHeaderSize + in_.u16(); break;
      case 2: capacity = kHeaderSize + in_.u8(); break;
      case 3: capacity = in_.u8() % (kHeaderSize + 1); break;
    }
    if ((mode & 8) == 0) {
      {
        InMuxer guard;
        muxer_->on_host_events(now_);
      }
      sync();
    }
    const bool drain = (mode & 4) != 0;
    const size_t limit = drain ? drain_bound() : count;
    buffer_.assign(capacity, 0xa5);
    size_t packets = 0;
    for (;;) {
      if (!drain && packets == limit) break;
      // has_packet_for_guest() may be true with nothing to send after all (a connection that
      // closed while queued, data that needs a larger buffer): next_packet_for_guest() then
      // returns 0, which ends the pump.
      if (!muxer_->has_packet_for_guest()) break;
      size_t size = 0;
      {
        InMuxer guard;
        size = muxer_->next_packet_for_guest(buffer_);
      }
      if (capacity < kHeaderSize) check(size == 0);
      if (size == 0) break;
      ++packets;
      check(!drain || packets <= limit);  // a drain that does not end
      packet_for_guest(std::span(buffer_.data(), size), capacity);
      // Building packets never opens a connection, and closes one only with an RST: the
      // table only needs a look when the count changed (bursts leave hundreds open).
      if (muxer_->connection_count() != count_at_sync_) sync();
    }
    sync();
    spdlog::debug("vsock_fuzzer: pump (capacity {}, {}): {} packets", capacity, drain ? "drain" : "bounded", packets);
  }

  void packet_for_guest(std::span<const uint8_t> bytes, size_t capacity) {
    check(bytes.size() >= kHeaderSize && bytes.size() <= capacity);
    const PacketHeader h = decode_header(bytes.first<kHeaderSize>());
    const auto encoded = encode_header(h);
    check(std::equal(encoded.begin(), encoded.end(), bytes.begin()));
    check(h.len == bytes.size() - kHeaderSize && h.len <= kMaxPayload);
    check(h.dst_cid == kGuestCid && h.type == kTypeStream);
    check(h.op >= kOpRequest && h.op <= kOpCreditRequest);
    spdlog::debug("vsock_fuzzer: for the guest: {} {}:{} -> {}:{} len {} buf_alloc {} fwd_cnt {} flags {}",
                  op_name(h.op), h.src_cid, h.src_port, h.dst_cid, h.dst_port, h.len, h.buf_alloc, h.fwd_cnt, h.flags);
    if (h.op == kOpRst) {
      ++resets_;
      // An RST answering a packet to another CID comes from that CID.
      check(h.src_cid == kHostCid || wrong_destinations_.contains(h.src_cid));
      return;
    }
    check(h.src_cid == kHostCid && h.buf_alloc == kBufAlloc);
    const Key key{h.src_port, h.dst_port};
    ConnPtr conn = live(key);
    check(conn != nullptr);  // anything but an RST is about a live connection
    // fwd_cnt: what the muxer wrote to the host socket: never back, never more than the guest
    // sent, never less than the host program read (both stay far below 2^32 per input).
    check(h.fwd_cnt >= conn->muxer_fwd_cnt && h.fwd_cnt <= conn->to_host.size() && h.fwd_cnt >= conn->host_read);
    conn->muxer_fwd_cnt = h.fwd_cnt;
    if (h.op != kOpRw) check(h.len == 0);
    switch (h.op) {
      case kOpRequest:
        check(conn->host_initiated && !conn->request_seen && h.src_port >= kFirstHostPort);
        conn->request_seen = true;
        break;
      case kOpResponse:
        check(!conn->host_initiated && !conn->response_seen);
        conn->response_seen = true;
        break;
      case kOpShutdown:
        check(h.flags != 0 && (h.flags & ~kShutdownBoth) == 0);
        break;
      case kOpRw: {
        check(h.len > 0);
        check(conn->host_initiated ? conn->guest_responded : conn->response_seen);
        conn->rx += h.len;
        conn->rx_total += h.len;
        bytes_to_guest_ += h.len;
        // Never beyond the guest's credit (§5.10.6.3.1), in free-running u32 counters.
        check(static_cast<uint32_t>(conn->rx - conn->peer_fwd_cnt) <= conn->peer_buf_alloc);
        conn->to_guest.insert(conn->to_guest.end(), bytes.begin() + kHeaderSize, bytes.end());
        check_to_guest(*conn);
        break;
      }
      case kOpCreditRequest:
        // Only when the guest's credit ran out.
        check(static_cast<uint32_t>(conn->rx - conn->peer_fwd_cnt) >= conn->peer_buf_alloc);
        break;
      default:
        break;
    }
  }

  // ---- Time ----

  void advance_clock() {
    now_ += std::chrono::milliseconds(in_.u16());
    {
      InMuxer guard;
      muxer_->on_timer(now_);
    }
    sync();
    const auto next = muxer_->next_deadline();
    check(!next || *next > now_);
  }

  // ---- The model against the muxer's table ----

  // Brings live_ in line with stats(): connections that left are dead, new ones are added.
  // `request`: the well-formed REQUEST just handed over, the only way a guest-initiated
  // connection appears.
  void sync(std::optional<PacketHeader> request = std::nullopt) {
    MuxerStats stats = muxer_->stats();
    const size_t count = muxer_->connection_count();
    count_at_sync_ = count;
    check(count <= kMaxConnections);
    check(stats.connections.size() <= count);
    check(stats.bytes_to_guest == bytes_to_guest_);
    check(stats.resets_sent == resets_);
    check(bytes_to_guest_ <= host_written_);
    // A merge of two sorted lists (stats() walks the muxer's by-key map, so it usually is
    // sorted already): bursts keep hundreds of connections open and this runs after every call.
    auto by_key = [](const ConnectionCounters& a, const ConnectionCounters& b) {
      return Key{a.host_port, a.guest_port} < Key{b.host_port, b.guest_port};
    };
    if (!std::is_sorted(stats.connections.begin(), stats.connections.end(), by_key)) {
      std::sort(stats.connections.begin(), stats.connections.end(), by_key);
    }
    auto it = live_.begin();
    auto forget_until = [&](const Key* key) {  // connections the muxer no longer has
      while (it != live_.end() && (key == nullptr || it->first < *key)) it = live_.erase(it);
    };
    std::optional<Key> previous;
    for (const ConnectionCounters& c : stats.connections) {
      const Key key{c.host_port, c.guest_port};
      check(!previous || *previous < key);  // each connection once
      previous = key;
      check(c.state == "connecting" || c.state == "established" || c.state == "closing");
      forget_until(&key);
      ConnPtr conn;
      if (it != live_.end() && it->first == key) {
        conn = it->second;
      } else {
        if (c.host_initiated) {
          check(c.host_port >= kFirstHostPort && !host_initiated_.contains(c.host_port));
          conn = std::make_shared<Conn>();
          conn->key = key;
          conn->host_initiated = true;
          host_initiated_[c.host_port] = conn;
        } else {
          check(request && key == Key{request->dst_port, request->src_port});
          conn = new_guest_conn(key, *request);
        }
        it = live_.emplace_hint(it, key, conn);
      }
      ++it;
      check(conn->host_initiated == c.host_initiated);
      check(c.bytes_to_guest == conn->rx_total);
      check(c.bytes_to_host <= conn->to_host.size());
    }
    forget_until(nullptr);
  }

  // A connection the guest's well-formed REQUEST just opened.
  ConnPtr new_guest_conn(Key key, const PacketHeader& request) {
    auto conn = std::make_shared<Conn>();
    conn->key = key;
    conn->peer_buf_alloc = request.buf_alloc;
    conn->peer_fwd_cnt = request.fwd_cnt;
    conn->last_guest_fwd_cnt = request.fwd_cnt;
    // It connected to "<socket>_1000": the program accepts connections in this order.
    if (key.first == kProgramPort) pending_accepts_.push_back(conn);
    return conn;
  }

  FuzzReader& in_;
  std::unique_ptr<VsockMuxer> muxer_;
  Clock::time_point now_ = Clock::time_point(std::chrono::hours(1));
  std::vector<std::unique_ptr<HostFd>> fds_;
  std::map<Key, ConnPtr> live_;
  std::map<uint32_t, ConnPtr> host_initiated_;  // by host port: unique within one muxer
  std::deque<ConnPtr> pending_accepts_;         // guest connections to port 1000, in order
  std::set<uint64_t> wrong_destinations_;
  std::vector<uint8_t> buffer_;
  bool burst_done_ = false;
  size_t count_at_sync_ = 0;  // connection_count() when sync() last ran
  size_t host_written_ = 0;
  size_t guest_payload_bytes_ = 0;
  uint64_t bytes_to_guest_ = 0;
  uint64_t resets_ = 0;
  uint64_t filler_index_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  skiff::fuzz::quiet_logs_unless_verbose();
  set_up_host();
  __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const size_t fds_before = open_fd_count();
  {
    FuzzReader in(data, size);
    Session session(in);
    session.run();
    session.finish();
  }
  drain_backlog(host->listener.fd.get());
  drain_backlog(host->program_listener.get());
  check(open_fd_count() == fds_before);
  return 0;
}
