// SPDX-License-Identifier: Apache-2.0
// The connections of one virtio-vsock device, between guest packets and host Unix sockets
// (the "hybrid vsock" convention of Firecracker and Cloud Hypervisor; docs/devices.md):
//
//   host → guest   a program connects to the device's socket and writes "CONNECT <port>\n";
//                  the muxer picks a host port, sends the guest OP_REQUEST, and on the
//                  guest's OP_RESPONSE writes "OK <host port>\n" back: from then on the
//                  socket is the connection. The guest's RST, a bad line, or no answer
//                  within kConnectTimeout close the socket.
//   guest → host   the guest's OP_REQUEST to CID 2 port P connects to "<socket>_<P>"; a
//                  socket that is missing or refuses gets an RST back.
//
// Flow control (§5.10.6.3): every packet carries the sender's buf_alloc and fwd_cnt. The
// muxer offers each connection kBufAlloc bytes; what the guest sends is written to the host
// socket at once and only what the socket refuses is kept, so a connection buffers at most
// kBufAlloc bytes. A guest that sends beyond its credit gets an RST. Toward the guest the
// muxer sends no more than the guest's own credit allows and asks for credit when it runs
// out. With kMaxConnections connections the device holds at most kMaxConnections ×
// kBufAlloc bytes of guest data (64 MiB), plus one packet being built; RSTs wait in a queue
// of kMaxPendingResets (44 KiB) and are dropped beyond it.
//
// Threads: one device thread calls everything but stats(), which any thread may call (it
// takes stats_mutex_, as does every change to the connection table).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/unique_fd.h"
#include "skiff/error.h"
#include "virtio/vsock/vsock_packet.h"

namespace skiff::virtio::vsock {

using Clock = std::chrono::steady_clock;

inline constexpr uint32_t kBufAlloc = 256 * 1024;
inline constexpr size_t kMaxConnections = 256;
// RSTs waiting for receive buffers; beyond this they are dropped (only a guest that posts
// no receive buffers fills it).
inline constexpr size_t kMaxPendingResets = 1024;
// How long a host program's CONNECT waits for the guest to accept, and how long a new
// host connection may take to send its CONNECT line.
inline constexpr std::chrono::milliseconds kConnectTimeout{2000};
// The longest CONNECT line: "CONNECT 4294967295\n" with room for a few spaces.
inline constexpr size_t kMaxConnectLine = 32;
// Host ports the muxer gives host-initiated connections start here (as Firecracker's do),
// away from the well-known ports guests listen on.
inline constexpr uint32_t kFirstHostPort = 1u << 30;

// Totals over the device's life, and one entry per open connection.
struct ConnectionCounters {
  uint32_t host_port = 0;
  uint32_t guest_port = 0;
  bool host_initiated = false;
  std::string state;  // "connecting", "established", "closing"
  uint64_t bytes_to_guest = 0;
  uint64_t bytes_to_host = 0;
};
struct MuxerStats {
  uint64_t host_connections = 0;   // host programs' connections the guest accepted
  uint64_t guest_connections = 0;  // guest connections a host program accepted
  uint64_t refused = 0;            // connections refused either way, timed out, or over the limit
  uint64_t resets_sent = 0;
  uint64_t resets_received = 0;
  uint64_t bytes_to_guest = 0;
  uint64_t bytes_to_host = 0;
  uint64_t bad_packets = 0;        // guest packets with a HeaderProblem or a protocol violation
  std::vector<ConnectionCounters> connections;
};

class VsockMuxer {
 public:
  // `socket_path`: the device's listening socket; guest connections to port P go to
  // "<socket_path>_<P>". `listener`: that socket, listening, non-blocking (or invalid in
  // tests that only drive guest-initiated traffic). The muxer creates its own epoll set.
  static Result<std::unique_ptr<VsockMuxer>> create(uint32_t guest_cid, std::filesystem::path socket_path,
                                                    int listener);
  ~VsockMuxer();
  VsockMuxer(const VsockMuxer&) = delete;
  VsockMuxer& operator=(const VsockMuxer&) = delete;

  // An epoll fd that is readable whenever a host socket (the listener included) needs the
  // muxer: the device thread waits on it and calls on_host_events().
  int poll_fd() const { return epoll_.get(); }
  // Handles what is ready on the host side without blocking: accepts new host
  // connections, reads CONNECT lines, flushes data the guest sent, notes sockets with data
  // for the guest.
  void on_host_events(Clock::time_point now);
  // Connections whose deadline passed (a CONNECT the guest never answered, a CONNECT line
  // that never came) are closed, with an RST to the guest where it knows them.
  void on_timer(Clock::time_point now);
  // The earliest deadline, for the device's timer; nullopt when none.
  std::optional<Clock::time_point> next_deadline() const;

  // One packet from the guest's transmit queue: its header and the payload bytes the chain
  // carries after it (at least header.len of them when the header is well-formed).
  void on_guest_packet(const PacketHeader& header, std::span<const uint8_t> payload, Clock::time_point now);

  // True when a packet for the guest is waiting (a reply, a reset, or host data the guest
  // has credit for).
  bool has_packet_for_guest() const { return !resets_.empty() || !rx_ready_.empty(); }
  // Builds the next packet for the guest into `out` (header + payload, at most
  // `capacity` bytes, capacity >= kHeaderSize) and returns its size; 0 when nothing was
  // ready after all (a socket had no data).
  size_t next_packet_for_guest(std::span<uint8_t> out);

  // Closes every connection (host programs see their socket close); for device reset.
  void close_all();

  MuxerStats stats() const;
  size_t connection_count() const;
  // A chain the device could not read a packet header from (or write one into).
  void count_bad_packet() { bad_packets_.fetch_add(1, std::memory_order_relaxed); }
  // The totals of a saved device (its connections are not restored).
  void restore_totals(const MuxerStats& totals);

 private:
  struct Connection;
  using Key = std::pair<uint32_t, uint32_t>;  // host port, guest port

  VsockMuxer(uint32_t guest_cid, std::filesystem::path socket_path, int listener, UniqueFd epoll);

  void accept_host_connections(Clock::time_point now);
  void on_connection_event(Connection& connection, uint32_t events, Clock::time_point now);
  void read_connect_line(Connection& connection, Clock::time_point now);
  void flush_to_host(Connection& connection);
  void guest_request(const PacketHeader& header, Clock::time_point now);
  void guest_response(Connection& connection);
  void guest_data(Connection& connection, const PacketHeader& header, std::span<const uint8_t> payload);
  void guest_shutdown(Connection& connection, uint32_t flags, Clock::time_point now);

  // The connection's interest in its host socket: readable while the guest can take data
  // and the connection waits for none of its own; writable while data waits for the socket.
  void update_polling(Connection& connection);
  void mark_ready(Connection& connection);
  // Sends the guest an RST for the connection and closes it.
  void reset_connection(Connection& connection);
  void close_connection(uint64_t id);
  // An RST for a packet that names no connection (bounded queue).
  void queue_reset(const PacketHeader& to);
  void push_reset(const PacketHeader& reset);
  uint32_t allocate_host_port();
  Connection* find(Key key);
  Connection* find_id(uint64_t id);
  PacketHeader header_for(const Connection& connection, uint16_t op);
  // Guest credit left for data from the host.
  static uint32_t guest_credit(const Connection& connection);

  const uint32_t guest_cid_;
  const std::filesystem::path socket_path_;
  const int listener_;
  UniqueFd epoll_;
  uint64_t next_id_ = 1;  // epoll token 0 is the listener
  uint32_t next_host_port_ = kFirstHostPort;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;
  std::map<Key, uint64_t> by_key_;
  std::deque<uint64_t> rx_ready_;  // connections with something for the guest, in order
  std::deque<PacketHeader> resets_;

  mutable std::mutex stats_mutex_;  // the connection table, for stats()
  std::atomic<uint64_t> host_connections_{0}, guest_connections_{0}, refused_{0}, resets_sent_{0},
      resets_received_{0}, bytes_to_guest_{0}, bytes_to_host_{0}, bad_packets_{0};
};

}  // namespace skiff::virtio::vsock
