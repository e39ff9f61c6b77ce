// SPDX-License-Identifier: Apache-2.0
#include "virtio/vsock/vsock_muxer.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff::virtio::vsock {

namespace {
enum class State : uint8_t { kAwaitingLine, kConnecting, kEstablished, kClosing };

const char* state_name(State state) {
  switch (state) {
    case State::kAwaitingLine:
    case State::kConnecting: return "connecting";
    case State::kEstablished: return "established";
    case State::kClosing: return "closing";
  }
  return "?";
}

// Parses "CONNECT <port>" (the line without its '\n'; one trailing '\r' is allowed, as
// telnet-style clients send it).
std::optional<uint32_t> parse_connect_line(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  constexpr std::string_view kVerb = "CONNECT";
  if (!line.starts_with(kVerb)) return std::nullopt;
  line.remove_prefix(kVerb.size());
  size_t spaces = 0;
  while (spaces < line.size() && line[spaces] == ' ') ++spaces;
  if (spaces == 0) return std::nullopt;
  line.remove_prefix(spaces);
  if (line.empty() || line.size() > 10) return std::nullopt;
  uint32_t port = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), port);
  if (ec != std::errc() || end != line.data() + line.size()) return std::nullopt;
  return port;
}
}  // namespace

struct VsockMuxer::Connection {
  uint64_t id = 0;
  UniqueFd fd;
  State state = State::kAwaitingLine;
  bool host_initiated = false;
  uint32_t host_port = 0;
  uint32_t guest_port = 0;
  std::optional<Clock::time_point> deadline;
  std::string line;  // the CONNECT line so far

  // Flow control, in the spec's free-running 32-bit counters.
  uint32_t peer_buf_alloc = 0;  // the guest's receive buffer
  uint32_t peer_fwd_cnt = 0;    // what the guest's application consumed
  uint32_t tx_cnt = 0;          // bytes sent to the guest
  uint32_t rx_cnt = 0;          // bytes received from the guest
  uint32_t fwd_cnt = 0;         // of those, written to the host socket
  uint32_t fwd_cnt_sent = 0;    // fwd_cnt as the guest last heard it

  std::string ok_line;          // "OK <port>\n" not yet written
  std::vector<uint8_t> to_host;  // guest data the host socket has not taken yet (<= kBufAlloc)
  size_t to_host_offset = 0;

  // What the guest should hear next (at most one of each).
  bool need_request = false;
  bool need_response = false;
  bool need_credit_update = false;
  uint32_t need_shutdown = 0;  // flags of an OP_SHUTDOWN to send
  bool credit_requested = false;  // asked once since the guest last gave credit
  bool queued = false;            // in rx_ready_

  bool host_readable = false;  // the socket has data (or EOF) the muxer has not read
  bool host_eof = false;       // read 0: the host program will send no more
  bool host_hup = false;       // epoll said HUP: the socket left the epoll set
  bool guest_shut_send = false;
  bool guest_shut_rcv = false;
  uint32_t polled = 0;  // the events registered in epoll; 0 also when not registered
  bool registered = false;

  std::atomic<State> public_state{State::kAwaitingLine};
  std::atomic<uint64_t> bytes_to_guest{0};
  std::atomic<uint64_t> bytes_to_host{0};

  size_t to_host_pending() const { return to_host.size() - to_host_offset; }
  void set_state(State next) {
    state = next;
    public_state.store(next, std::memory_order_relaxed);
  }
};

Result<std::unique_ptr<VsockMuxer>> VsockMuxer::create(uint32_t guest_cid, std::filesystem::path socket_path,
                                                       int listener) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return std::unexpected(errno_error("virtio-vsock: epoll_create1", errno));
  if (listener >= 0) {
    // accept4() drains the backlog until EAGAIN: the listener must not block.
    const int flags = fcntl(listener, F_GETFL);
    if (flags < 0 || fcntl(listener, F_SETFL, flags | O_NONBLOCK) != 0) {
      return std::unexpected(errno_error("virtio-vsock: making the listening socket non-blocking", errno));
    }
    epoll_event event{.events = EPOLLIN, .data = {.u64 = 0}};
    if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listener, &event) != 0) {
      return std::unexpected(errno_error("virtio-vsock: polling the listening socket", errno));
    }
  }
  return std::unique_ptr<VsockMuxer>(new VsockMuxer(guest_cid, std::move(socket_path), listener, std::move(epoll)));
}

VsockMuxer::VsockMuxer(uint32_t guest_cid, std::filesystem::path socket_path, int listener, UniqueFd epoll)
    : guest_cid_(guest_cid), socket_path_(std::move(socket_path)), listener_(listener), epoll_(std::move(epoll)) {}

// No epoll_ctl here or in close_connection(): closing an fd takes it out of every epoll set
// (none of these fds is ever duplicated), and the main thread that tears the VM down may not
// call epoll_ctl (docs/security.md). The listener belongs to the device; closing epoll_
// drops its registration.
VsockMuxer::~VsockMuxer() { close_all(); }

// ---- Host side ----------------------------------------------------------------------------

void VsockMuxer::on_host_events(Clock::time_point now) {
  std::array<epoll_event, 64> events;
  int count = epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), 0);
  if (count < 0) {
    if (errno != EINTR) spdlog::error("virtio-vsock: epoll_wait: {}", std::strerror(errno));
    return;
  }
  for (int i = 0; i < count; ++i) {
    if (events[i].data.u64 == 0) {
      accept_host_connections(now);
    } else if (Connection* connection = find_id(events[i].data.u64)) {
      on_connection_event(*connection, events[i].events, now);
    }
  }
}

void VsockMuxer::accept_host_connections(Clock::time_point now) {
  for (;;) {
    UniqueFd fd(accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        spdlog::warn("virtio-vsock: accept: {}", std::strerror(errno));
      }
      return;
    }
    if (connections_.size() >= kMaxConnections) {
      // Closing it at once is what the program sees: no "OK" line, then EOF.
      refused_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    auto connection = std::make_unique<Connection>();
    connection->id = next_id_++;
    connection->fd = std::move(fd);
    connection->host_initiated = true;
    connection->deadline = now + kConnectTimeout;
    Connection& added = *connection;
    {
      std::lock_guard lock(stats_mutex_);
      connections_.emplace(added.id, std::move(connection));
    }
    update_polling(added);
    // Programs usually write the line right after connecting: it may be here already.
    read_connect_line(added, now);
  }
}

void VsockMuxer::on_connection_event(Connection& connection, uint32_t events, Clock::time_point now) {
  // flush_to_host() may reset (and free) the connection: look it up again by id after it.
  const uint64_t id = connection.id;
  if (connection.state == State::kAwaitingLine) {
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_connect_line(connection, now);
    return;
  }
  if (events & EPOLLERR) {
    reset_connection(connection);
    return;
  }
  if (connection.state == State::kConnecting) {
    // The program hung up before the guest answered: the guest must drop its half.
    if (events & EPOLLHUP) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      reset_connection(connection);
    }
    return;
  }
  if (events & EPOLLOUT) {
    flush_to_host(connection);
    if (find_id(id) == nullptr) return;  // the write failed, or a closing connection is done
  }
  if (events & (EPOLLIN | EPOLLHUP)) {
    connection.host_readable = true;
    if (events & EPOLLHUP) {
      // HUP is reported whatever the mask says: leave the set so a connection waiting for
      // guest buffers does not spin the loop. The rest of the data and the EOF are read
      // when the guest has room; writes now fail and reset the connection.
      connection.host_hup = true;
      if (connection.to_host_pending() > 0) {
        flush_to_host(connection);
        if (find_id(id) == nullptr) return;
      }
    }
    mark_ready(connection);
  }
  update_polling(connection);
}

void VsockMuxer::read_connect_line(Connection& connection, Clock::time_point now) {
  std::array<char, kMaxConnectLine> peeked;
  const size_t room = kMaxConnectLine - connection.line.size();
  ssize_t got = recv(connection.fd.get(), peeked.data(), room, MSG_PEEK | MSG_DONTWAIT);
  if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (got <= 0) {  // gone before it said where to
    close_connection(connection.id);
    return;
  }
  const char* newline = static_cast<const char*>(std::memchr(peeked.data(), '\n', static_cast<size_t>(got)));
  // Take the line and not a byte more: what follows it is the connection's first data.
  const size_t take = newline != nullptr ? static_cast<size_t>(newline - peeked.data()) + 1 : static_cast<size_t>(got);
  ssize_t taken = recv(connection.fd.get(), peeked.data(), take, MSG_DONTWAIT);
  if (taken != static_cast<ssize_t>(take)) {
    close_connection(connection.id);
    return;
  }
  connection.line.append(peeked.data(), take);
  if (newline == nullptr) {
    if (connection.line.size() >= kMaxConnectLine) {
      spdlog::debug("virtio-vsock: a host connection sent no CONNECT line within {} bytes", kMaxConnectLine);
      refused_.fetch_add(1, std::memory_order_relaxed);
      close_connection(connection.id);
    }
    return;
  }
  connection.line.pop_back();  // '\n'
  auto port = parse_connect_line(connection.line);
  if (!port) {
    spdlog::debug("virtio-vsock: a host connection sent \"{}\" instead of CONNECT <port>",
                  fmt::format("{:.{}}", connection.line, kMaxConnectLine));
    refused_.fetch_add(1, std::memory_order_relaxed);
    close_connection(connection.id);
    return;
  }
  connection.line.clear();
  connection.host_port = allocate_host_port();
  connection.guest_port = *port;
  connection.deadline = now + kConnectTimeout;
  connection.set_state(State::kConnecting);
  connection.need_request = true;
  {
    std::lock_guard lock(stats_mutex_);
    by_key_.emplace(Key{connection.host_port, connection.guest_port}, connection.id);
  }
  update_polling(connection);
  mark_ready(connection);
}

void VsockMuxer::flush_to_host(Connection& connection) {
  while (!connection.ok_line.empty()) {
    ssize_t sent = send(connection.fd.get(), connection.ok_line.data(), connection.ok_line.size(),
                        MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      reset_connection(connection);
      return;
    }
    connection.ok_line.erase(0, static_cast<size_t>(sent));
  }
  const uint32_t before = connection.fwd_cnt;
  while (connection.to_host_pending() > 0) {
    ssize_t sent = send(connection.fd.get(), connection.to_host.data() + connection.to_host_offset,
                        connection.to_host_pending(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      reset_connection(connection);
      return;
    }
    connection.to_host_offset += static_cast<size_t>(sent);
    connection.fwd_cnt += static_cast<uint32_t>(sent);
    connection.bytes_to_host.fetch_add(static_cast<uint64_t>(sent), std::memory_order_relaxed);
    bytes_to_host_.fetch_add(static_cast<uint64_t>(sent), std::memory_order_relaxed);
  }
  if (connection.to_host_pending() == 0) {
    connection.to_host.clear();
    connection.to_host_offset = 0;
    if (connection.guest_shut_send) shutdown(connection.fd.get(), SHUT_WR);
    if (connection.state == State::kClosing) {
      // Everything the guest sent before its full shutdown is out: answer it with RST.
      reset_connection(connection);
      return;
    }
  }
  // The guest stops sending when its view of our free space runs out; tell it about the
  // space once that view is below one full packet.
  if (connection.fwd_cnt != before) {
    const uint32_t unseen = connection.rx_cnt - connection.fwd_cnt_sent;
    if (kBufAlloc - std::min(unseen, kBufAlloc) < kMaxPayload) {
      connection.need_credit_update = true;
      mark_ready(connection);
    }
  }
}

// ---- Guest side ---------------------------------------------------------------------------

void VsockMuxer::on_guest_packet(const PacketHeader& header, std::span<const uint8_t> payload, Clock::time_point now) {
  const HeaderProblem problem = check_guest_header(header, guest_cid_, payload.size());
  if (problem != HeaderProblem::kNone) {
    bad_packets_.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("virtio-vsock: guest {} packet dropped: {}", op_name(header.op), describe(problem));
    // An RST answers everything but a packet from a CID the guest does not own, and an RST.
    if (problem != HeaderProblem::kWrongSource && header.op != kOpRst) {
      if (Connection* connection = find({header.dst_port, header.src_port})) {
        reset_connection(*connection);
      } else {
        queue_reset(header);
      }
    }
    return;
  }
  if (header.op == kOpRequest) {
    guest_request(header, now);
    return;
  }
  Connection* connection = find({header.dst_port, header.src_port});
  if (connection == nullptr) {
    if (header.op != kOpRst) queue_reset(header);  // §5.10.6.4: unknown connection
    return;
  }
  // The handlers below may reset (and free) the connection: after them, look it up by id.
  const uint64_t id = connection->id;
  // Every packet carries the guest's current credit.
  const uint32_t credit_before = guest_credit(*connection);
  connection->peer_buf_alloc = header.buf_alloc;
  connection->peer_fwd_cnt = header.fwd_cnt;
  if (guest_credit(*connection) > 0 && credit_before == 0) {
    connection->credit_requested = false;
    if (connection->host_readable) mark_ready(*connection);
  }
  switch (header.op) {
    case kOpResponse:
      guest_response(*connection);
      break;
    case kOpRst:
      resets_received_.fetch_add(1, std::memory_order_relaxed);
      if (connection->state == State::kConnecting) refused_.fetch_add(1, std::memory_order_relaxed);
      // Best effort for what the host has not taken yet (one try), then gone.
      if (connection->to_host_pending() > 0) {
        (void)send(connection->fd.get(), connection->to_host.data() + connection->to_host_offset,
                   connection->to_host_pending(), MSG_DONTWAIT | MSG_NOSIGNAL);
      }
      close_connection(connection->id);
      return;
    case kOpShutdown:
      guest_shutdown(*connection, header.flags, now);
      break;
    case kOpRw:
      guest_data(*connection, header, payload.first(header.len));
      break;
    case kOpCreditRequest:
      connection->need_credit_update = true;
      mark_ready(*connection);
      break;
    case kOpCreditUpdate:
      break;  // taken above
    default:
      break;
  }
  if (Connection* still = find_id(id)) update_polling(*still);
}

void VsockMuxer::guest_request(const PacketHeader& header, Clock::time_point) {
  const Key key{header.dst_port, header.src_port};
  if (Connection* existing = find(key)) {
    // A second REQUEST for a live connection: both sides are confused; start over.
    bad_packets_.fetch_add(1, std::memory_order_relaxed);
    reset_connection(*existing);
    return;
  }
  if (connections_.size() >= kMaxConnections) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    queue_reset(header);
    return;
  }
  const std::string path = fmt::format("{}_{}", socket_path_.string(), header.dst_port);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  UniqueFd fd;
  if (path.size() < sizeof(address.sun_path)) {
    std::memcpy(address.sun_path, path.data(), path.size());
    fd.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  }
  // Non-blocking: a Unix socket connects at once or refuses (EAGAIN: its backlog is full).
  if (!fd.valid() || connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    spdlog::debug("virtio-vsock: guest port {} → host port {}: {}: {}", header.src_port, header.dst_port, path,
                  std::strerror(errno));
    refused_.fetch_add(1, std::memory_order_relaxed);
    queue_reset(header);
    return;
  }
  auto connection = std::make_unique<Connection>();
  connection->id = next_id_++;
  connection->fd = std::move(fd);
  connection->host_port = header.dst_port;
  connection->guest_port = header.src_port;
  connection->peer_buf_alloc = header.buf_alloc;
  connection->peer_fwd_cnt = header.fwd_cnt;
  connection->set_state(State::kEstablished);
  connection->need_response = true;
  Connection& added = *connection;
  {
    std::lock_guard lock(stats_mutex_);
    by_key_.emplace(key, added.id);
    connections_.emplace(added.id, std::move(connection));
  }
  guest_connections_.fetch_add(1, std::memory_order_relaxed);
  update_polling(added);
  mark_ready(added);
}

void VsockMuxer::guest_response(Connection& connection) {
  if (!connection.host_initiated || connection.state != State::kConnecting) {
    bad_packets_.fetch_add(1, std::memory_order_relaxed);
    reset_connection(connection);
    return;
  }
  connection.set_state(State::kEstablished);
  connection.deadline.reset();
  connection.ok_line = fmt::format("OK {}\n", connection.host_port);
  host_connections_.fetch_add(1, std::memory_order_relaxed);
  flush_to_host(connection);
}

void VsockMuxer::guest_data(Connection& connection, const PacketHeader& header, std::span<const uint8_t> payload) {
  if (connection.state != State::kEstablished || connection.guest_shut_send) {
    bad_packets_.fetch_add(1, std::memory_order_relaxed);
    reset_connection(connection);
    return;
  }
  // The guest may have at most kBufAlloc bytes we have not forwarded (§5.10.6.3.1).
  const uint32_t outstanding = connection.rx_cnt - connection.fwd_cnt;
  if (outstanding > kBufAlloc || header.len > kBufAlloc - outstanding) {
    spdlog::debug("virtio-vsock: guest port {} sent {} bytes beyond its credit", connection.guest_port,
                  static_cast<uint64_t>(outstanding) + header.len - kBufAlloc);
    bad_packets_.fetch_add(1, std::memory_order_relaxed);
    reset_connection(connection);
    return;
  }
  connection.rx_cnt += header.len;
  if (payload.empty()) return;
  // Drop what the socket already took before keeping more, so the buffer holds only what is
  // pending (at most kBufAlloc, by the credit check above), however long the stream.
  if (connection.to_host_offset > 0) {
    connection.to_host.erase(connection.to_host.begin(),
                             connection.to_host.begin() + static_cast<std::ptrdiff_t>(connection.to_host_offset));
    connection.to_host_offset = 0;
  }
  connection.to_host.insert(connection.to_host.end(), payload.begin(), payload.end());
  flush_to_host(connection);
}

void VsockMuxer::guest_shutdown(Connection& connection, uint32_t flags, Clock::time_point now) {
  if (connection.state == State::kConnecting || connection.state == State::kAwaitingLine) {
    bad_packets_.fetch_add(1, std::memory_order_relaxed);
    reset_connection(connection);
    return;
  }
  if (flags & kShutdownSend) connection.guest_shut_send = true;
  if (flags & kShutdownRcv) connection.guest_shut_rcv = true;
  if (connection.guest_shut_rcv) shutdown(connection.fd.get(), SHUT_RD);
  if (connection.guest_shut_send && connection.guest_shut_rcv) {
    // The guest is closing: forward what is left, then answer with RST (Linux waits for it).
    connection.set_state(State::kClosing);
    connection.deadline = now + kConnectTimeout;
  }
  flush_to_host(connection);  // SHUT_WR once empty; RST when closing and empty
}

// ---- Packets for the guest ----------------------------------------------------------------

uint32_t VsockMuxer::guest_credit(const Connection& connection) {
  const uint32_t in_flight = connection.tx_cnt - connection.peer_fwd_cnt;
  return in_flight >= connection.peer_buf_alloc ? 0 : connection.peer_buf_alloc - in_flight;
}

PacketHeader VsockMuxer::header_for(const Connection& connection, uint16_t op) {
  return PacketHeader{.src_cid = kHostCid,
                      .dst_cid = guest_cid_,
                      .src_port = connection.host_port,
                      .dst_port = connection.guest_port,
                      .len = 0,
                      .type = kTypeStream,
                      .op = op,
                      .flags = 0,
                      .buf_alloc = kBufAlloc,
                      .fwd_cnt = connection.fwd_cnt};
}

size_t VsockMuxer::next_packet_for_guest(std::span<uint8_t> out) {
  if (out.size() < kHeaderSize) return 0;
  auto emit = [&](const PacketHeader& header) {
    auto bytes = encode_header(header);
    std::copy(bytes.begin(), bytes.end(), out.begin());
    return kHeaderSize + header.len;
  };
  // Each connection queued now gets one turn at most, so a connection that cannot use this
  // buffer (no room for data in it) does not keep the loop going.
  size_t turns = rx_ready_.size();
  for (;;) {
    if (!resets_.empty()) {
      PacketHeader reset = resets_.front();
      resets_.pop_front();
      resets_sent_.fetch_add(1, std::memory_order_relaxed);
      return emit(reset);
    }
    if (rx_ready_.empty() || turns == 0) return 0;
    --turns;
    const uint64_t id = rx_ready_.front();
    rx_ready_.pop_front();
    Connection* connection = find_id(id);
    if (connection == nullptr) continue;
    connection->queued = false;
    std::optional<PacketHeader> packet;
    bool retry_later = false;
    if (connection->need_request) {
      connection->need_request = false;
      packet = header_for(*connection, kOpRequest);
    } else if (connection->need_response) {
      connection->need_response = false;
      packet = header_for(*connection, kOpResponse);
    } else if (connection->need_credit_update) {
      connection->need_credit_update = false;
      packet = header_for(*connection, kOpCreditUpdate);
    } else if (connection->host_readable && connection->state == State::kEstablished && !connection->guest_shut_rcv &&
               !connection->host_eof) {
      const uint32_t credit = guest_credit(*connection);
      const size_t room = std::min<size_t>({out.size() - kHeaderSize, kMaxPayload, credit});
      if (credit == 0) {
        if (!connection->credit_requested) {
          connection->credit_requested = true;
          packet = header_for(*connection, kOpCreditRequest);
        }
      } else if (room == 0) {
        retry_later = true;  // a buffer with no room past the header: the next one may have
      } else {
        ssize_t got = recv(connection->fd.get(), out.data() + kHeaderSize, room, MSG_DONTWAIT);
        if (got > 0) {
          PacketHeader data = header_for(*connection, kOpRw);
          data.len = static_cast<uint32_t>(got);
          connection->tx_cnt += data.len;
          connection->bytes_to_guest.fetch_add(data.len, std::memory_order_relaxed);
          bytes_to_guest_.fetch_add(data.len, std::memory_order_relaxed);
          packet = data;
        } else if (got == 0) {
          // The program will send no more: the guest's reads end after what it has.
          connection->host_readable = false;
          connection->host_eof = true;
          connection->need_shutdown |= kShutdownSend;
        } else if (errno == EAGAIN || errno == EINTR) {
          connection->host_readable = false;
        } else {
          reset_connection(*connection);  // its RST is next
          continue;
        }
      }
    }
    if (!packet && connection->need_shutdown != 0) {
      PacketHeader shutdown_packet = header_for(*connection, kOpShutdown);
      shutdown_packet.flags = connection->need_shutdown;
      connection->need_shutdown = 0;
      packet = shutdown_packet;
    }
    if (connection->guest_shut_rcv) connection->host_readable = false;
    if (packet) connection->fwd_cnt_sent = connection->fwd_cnt;
    // More to say (or to read): back of the line, so connections take turns.
    // Host data waits on the guest's credit: with some left, or a CREDIT_REQUEST still to
    // send, the connection comes round again.
    const bool data_waiting = connection->host_readable && connection->state == State::kEstablished &&
                              (guest_credit(*connection) > 0 || !connection->credit_requested);
    if (retry_later || connection->need_request || connection->need_response || connection->need_credit_update ||
        connection->need_shutdown != 0 || data_waiting) {
      mark_ready(*connection);
    }
    update_polling(*connection);
    if (packet) return emit(*packet);
  }
}

// ---- Bookkeeping --------------------------------------------------------------------------

void VsockMuxer::update_polling(Connection& connection) {
  uint32_t wanted = 0;
  if (connection.state == State::kAwaitingLine) {
    wanted = EPOLLIN;
  } else if (connection.state == State::kEstablished || connection.state == State::kClosing) {
    if (!connection.host_readable && !connection.host_eof && !connection.guest_shut_rcv &&
        guest_credit(connection) > 0 && connection.state == State::kEstablished) {
      wanted |= EPOLLIN;
    }
    if (connection.to_host_pending() > 0 || !connection.ok_line.empty()) wanted |= EPOLLOUT;
  }
  // kConnecting: nothing but HUP, which epoll reports with an empty mask too.
  if (connection.host_hup) {
    // Only writes are still worth waiting for; HUP would repeat forever otherwise.
    if (connection.registered && (wanted & EPOLLOUT) == 0) {
      epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, connection.fd.get(), nullptr);
      connection.registered = false;
    }
    return;
  }
  if (connection.registered && connection.polled == wanted) return;
  epoll_event event{.events = wanted, .data = {.u64 = connection.id}};
  const int op = connection.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(epoll_.get(), op, connection.fd.get(), &event) != 0) {
    spdlog::error("virtio-vsock: epoll_ctl for host port {}: {}", connection.host_port, std::strerror(errno));
    return;
  }
  connection.registered = true;
  connection.polled = wanted;
}

void VsockMuxer::mark_ready(Connection& connection) {
  if (connection.queued) return;
  connection.queued = true;
  rx_ready_.push_back(connection.id);
}

void VsockMuxer::reset_connection(Connection& connection) {
  // A connection still waiting for its CONNECT line is unknown to the guest.
  if (connection.state != State::kAwaitingLine) push_reset(header_for(connection, kOpRst));
  close_connection(connection.id);
}

void VsockMuxer::queue_reset(const PacketHeader& to) {
  // From where the guest sent it, back to the sender.
  push_reset(PacketHeader{.src_cid = to.dst_cid,
                          .dst_cid = guest_cid_,
                          .src_port = to.dst_port,
                          .dst_port = to.src_port,
                          .len = 0,
                          .type = kTypeStream,
                          .op = kOpRst,
                          .flags = 0,
                          .buf_alloc = 0,
                          .fwd_cnt = 0});
}

void VsockMuxer::push_reset(const PacketHeader& reset) {
  // Full only while the guest posts no receive buffers: what it then misses is its loss.
  if (resets_.size() >= kMaxPendingResets) return;
  resets_.push_back(reset);
}

void VsockMuxer::close_connection(uint64_t id) {
  std::unique_ptr<Connection> gone;
  {
    std::lock_guard lock(stats_mutex_);
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    gone = std::move(it->second);
    connections_.erase(it);
    auto key = by_key_.find(Key{gone->host_port, gone->guest_port});
    if (key != by_key_.end() && key->second == id) by_key_.erase(key);
  }
  // Closing the fd (gone's destructor) removes it from the epoll set. rx_ready_ may still
  // name it, and so may events already returned by epoll_wait: both look ids up and skip
  // the ones that are gone.
}

void VsockMuxer::close_all() {
  std::vector<uint64_t> ids;
  for (const auto& [id, connection] : connections_) ids.push_back(id);
  for (uint64_t id : ids) close_connection(id);
  rx_ready_.clear();
  resets_.clear();
}

void VsockMuxer::on_timer(Clock::time_point now) {
  std::vector<uint64_t> expired;
  for (const auto& [id, connection] : connections_) {
    if (connection->deadline && *connection->deadline <= now) expired.push_back(id);
  }
  for (uint64_t id : expired) {
    Connection* connection = find_id(id);
    if (connection == nullptr) continue;
    if (connection->state != State::kClosing) refused_.fetch_add(1, std::memory_order_relaxed);
    reset_connection(*connection);  // no RST for a line that never came: the guest never heard of it
  }
}

std::optional<Clock::time_point> VsockMuxer::next_deadline() const {
  std::optional<Clock::time_point> earliest;
  for (const auto& [id, connection] : connections_) {
    if (connection->deadline && (!earliest || *connection->deadline < *earliest)) earliest = connection->deadline;
  }
  return earliest;
}

uint32_t VsockMuxer::allocate_host_port() {
  // Skip ports a live connection still uses (after 2^31 connections the counter wraps).
  for (;;) {
    const uint32_t port = next_host_port_++;
    if (next_host_port_ == 0) next_host_port_ = kFirstHostPort;
    bool used = false;
    for (auto it = by_key_.lower_bound(Key{port, 0}); it != by_key_.end() && it->first.first == port; ++it) {
      used = true;
      break;
    }
    if (!used) return port;
  }
}

VsockMuxer::Connection* VsockMuxer::find(Key key) {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : find_id(it->second);
}

VsockMuxer::Connection* VsockMuxer::find_id(uint64_t id) {
  auto it = connections_.find(id);
  return it == connections_.end() ? nullptr : it->second.get();
}

size_t VsockMuxer::connection_count() const {
  std::lock_guard lock(stats_mutex_);
  return connections_.size();
}

void VsockMuxer::restore_totals(const MuxerStats& totals) {
  host_connections_.store(totals.host_connections);
  guest_connections_.store(totals.guest_connections);
  refused_.store(totals.refused);
  resets_sent_.store(totals.resets_sent);
  resets_received_.store(totals.resets_received);
  bytes_to_guest_.store(totals.bytes_to_guest);
  bytes_to_host_.store(totals.bytes_to_host);
  bad_packets_.store(totals.bad_packets);
}

MuxerStats VsockMuxer::stats() const {
  MuxerStats stats{.host_connections = host_connections_.load(),
                   .guest_connections = guest_connections_.load(),
                   .refused = refused_.load(),
                   .resets_sent = resets_sent_.load(),
                   .resets_received = resets_received_.load(),
                   .bytes_to_guest = bytes_to_guest_.load(),
                   .bytes_to_host = bytes_to_host_.load(),
                   .bad_packets = bad_packets_.load(),
                   .connections = {}};
  std::lock_guard lock(stats_mutex_);
  for (const auto& [key, id] : by_key_) {
    auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    const Connection& connection = *it->second;
    stats.connections.push_back(ConnectionCounters{.host_port = key.first,
                                                   .guest_port = key.second,
                                                   .host_initiated = connection.host_initiated,
                                                   .state = state_name(connection.public_state.load()),
                                                   .bytes_to_guest = connection.bytes_to_guest.load(),
                                                   .bytes_to_host = connection.bytes_to_host.load()});
  }
  return stats;
}

}  // namespace skiff::virtio::vsock
