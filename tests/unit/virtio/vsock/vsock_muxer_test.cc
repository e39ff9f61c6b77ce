// SPDX-License-Identifier: Apache-2.0
// VsockMuxer on its own: guest packets in, packets for the guest out, host programs on real
// Unix sockets in a temporary directory. No device thread: each test drives the muxer step
// by step, with its own clock.
#include "virtio/vsock/vsock_muxer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "api/unix_socket.h"
#include "unit/config/spec_test_util.h"
#include "unit/virtio/vsock/vsock_test_util.h"

namespace skiff::virtio::vsock {
namespace {

using namespace testing;  // NOLINT: the vsock test helpers

struct GuestPacket {
  PacketHeader header;
  std::string payload;
};

class VsockMuxerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_path_ = dir_.path() / "vm.vsock";
    auto listener = api::listen_unix_socket(socket_path_);
    ASSERT_TRUE(listener) << listener.error().message();
    listener_ = std::move(*listener);
    auto muxer = VsockMuxer::create(kGuestCid, socket_path_, listener_.fd.get());
    ASSERT_TRUE(muxer) << muxer.error().message();
    muxer_ = std::move(*muxer);
  }

  // Lets the muxer handle the host side, then takes every packet it has for the guest, with
  // receive buffers of `capacity` bytes.
  std::vector<GuestPacket> pump(size_t capacity = kHeaderSize + kMaxPayload) {
    muxer_->on_host_events(now_);
    std::vector<GuestPacket> out;
    std::vector<uint8_t> buffer(capacity);
    while (muxer_->has_packet_for_guest()) {
      size_t size = muxer_->next_packet_for_guest(buffer);
      if (size == 0) break;
      EXPECT_GE(size, kHeaderSize);
      GuestPacket packet{decode_header(std::span<const uint8_t, kHeaderSize>(buffer.data(), kHeaderSize)), {}};
      packet.payload.assign(reinterpret_cast<const char*>(buffer.data()) + kHeaderSize, size - kHeaderSize);
      EXPECT_EQ(packet.header.len, packet.payload.size());
      // An RST answers from where the guest sent its packet (the CID it named), so the
      // guest's socket finds it; everything else comes from the host.
      if (packet.header.op != kOpRst) {
        EXPECT_EQ(packet.header.src_cid, kHostCid);
      }
      EXPECT_EQ(packet.header.dst_cid, kGuestCid);
      EXPECT_EQ(packet.header.type, kTypeStream);
      out.push_back(std::move(packet));
    }
    return out;
  }

  void send(const PacketHeader& header, std::string_view payload = {}) {
    muxer_->on_guest_packet(header, std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()),
                            now_);
  }
  void send_data(uint32_t guest_port, uint32_t host_port, std::string_view data, uint32_t fwd_cnt = 0) {
    send(guest_packet(kOpRw, guest_port, host_port, static_cast<uint32_t>(data.size()), 256 * 1024, fwd_cnt), data);
  }

  // A host program connects and asks for guest port `port`; returns the client and the
  // REQUEST the guest got.
  std::pair<UniqueFd, PacketHeader> host_connect(uint32_t port) {
    UniqueFd client = connect_to(socket_path_);
    write_all(client.get(), fmt::format("CONNECT {}\n", port));
    auto packets = pump();
    EXPECT_EQ(packets.size(), 1u);
    if (packets.empty()) return {std::move(client), PacketHeader{}};
    EXPECT_EQ(packets[0].header.op, kOpRequest);
    EXPECT_EQ(packets[0].header.dst_port, port);
    return {std::move(client), packets[0].header};
  }

  // host_connect, then the guest accepts; returns the client and the connection's host port.
  std::pair<UniqueFd, uint32_t> established(uint32_t port, uint32_t guest_buf_alloc = 256 * 1024) {
    auto [client, request] = host_connect(port);
    send(guest_packet(kOpResponse, port, request.src_port, 0, guest_buf_alloc));
    EXPECT_EQ(read_some(client.get(), fmt::format("OK {}\n", request.src_port).size()),
              fmt::format("OK {}\n", request.src_port));
    return {std::move(client), request.src_port};
  }

  // The guest connects to host port `port` where a program listens; returns the program's end.
  UniqueFd guest_connect(int listener, uint32_t guest_port, uint32_t port) {
    send(guest_packet(kOpRequest, guest_port, port));
    auto packets = pump();
    EXPECT_EQ(packets.size(), 1u);
    if (!packets.empty()) {
      EXPECT_EQ(packets[0].header.op, kOpResponse);
      EXPECT_EQ(packets[0].header.src_port, port);
      EXPECT_EQ(packets[0].header.dst_port, guest_port);
      EXPECT_EQ(packets[0].header.buf_alloc, kBufAlloc);
    }
    return accept_from(listener);
  }

  skiff::testing_util::TempDir dir_;
  std::filesystem::path socket_path_;
  api::UnixListener listener_;
  std::unique_ptr<VsockMuxer> muxer_;
  Clock::time_point now_ = Clock::now();
};

// ---- Host-initiated ------------------------------------------------------------------------

TEST_F(VsockMuxerTest, HostConnectBecomesAGuestRequestAndOkOnResponse) {
  auto [client, request] = host_connect(1234);
  EXPECT_EQ(request.src_cid, kHostCid);
  EXPECT_GE(request.src_port, kFirstHostPort);
  EXPECT_EQ(request.buf_alloc, kBufAlloc);
  EXPECT_EQ(muxer_->stats().connections.size(), 1u);
  EXPECT_EQ(muxer_->stats().connections[0].state, "connecting");

  send(guest_packet(kOpResponse, 1234, request.src_port));
  EXPECT_EQ(read_some(client.get(), 64).substr(0, 3), "OK ");
  auto stats = muxer_->stats();
  EXPECT_EQ(stats.host_connections, 1u);
  ASSERT_EQ(stats.connections.size(), 1u);
  EXPECT_EQ(stats.connections[0].state, "established");
  EXPECT_TRUE(stats.connections[0].host_initiated);
}

TEST_F(VsockMuxerTest, DataFlowsBothWaysAfterTheHandshake) {
  auto [client, host_port] = established(5000);
  write_all(client.get(), "ping from host");
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpRw);
  EXPECT_EQ(packets[0].header.src_port, host_port);
  EXPECT_EQ(packets[0].header.dst_port, 5000u);
  EXPECT_EQ(packets[0].payload, "ping from host");

  send_data(5000, host_port, "pong from guest");
  EXPECT_EQ(read_some(client.get(), 15), "pong from guest");
  auto stats = muxer_->stats();
  EXPECT_EQ(stats.bytes_to_guest, 14u);
  EXPECT_EQ(stats.bytes_to_host, 15u);
  EXPECT_EQ(stats.connections[0].bytes_to_host, 15u);
}

TEST_F(VsockMuxerTest, ConnectLineMayArriveInPiecesAndDataMayFollowIt) {
  UniqueFd client = connect_to(socket_path_);
  write_all(client.get(), "CONN");
  EXPECT_TRUE(pump().empty());
  write_all(client.get(), "ECT 77\r\nearly bytes");
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpRequest);
  EXPECT_EQ(packets[0].header.dst_port, 77u);
  send(guest_packet(kOpResponse, 77, packets[0].header.src_port));
  packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].payload, "early bytes");  // not swallowed with the line
}

TEST_F(VsockMuxerTest, BadConnectLinesCloseTheSocket) {
  for (std::string line : {"HELLO 5\n", "CONNECT\n", "CONNECT x5\n", "CONNECT 5x\n", "CONNECT 4294967296\n",
                           "CONNECT -1\n", "connect 5\n"}) {
    UniqueFd client = connect_to(socket_path_);
    write_all(client.get(), line);
    EXPECT_TRUE(pump().empty()) << line;
    EXPECT_TRUE(sees_eof(client.get())) << line;
  }
  // No newline within the longest line allowed.
  UniqueFd client = connect_to(socket_path_);
  write_all(client.get(), std::string(kMaxConnectLine, '7'));
  EXPECT_TRUE(pump().empty());
  EXPECT_TRUE(sees_eof(client.get()));
  EXPECT_EQ(muxer_->connection_count(), 0u);
  EXPECT_EQ(muxer_->stats().refused, 8u);
}

TEST_F(VsockMuxerTest, GuestResetRefusesTheHostConnection) {
  auto [client, request] = host_connect(22);
  send(guest_packet(kOpRst, 22, request.src_port));
  EXPECT_TRUE(sees_eof(client.get()));  // no "OK" line: the program reads EOF
  EXPECT_EQ(muxer_->connection_count(), 0u);
  EXPECT_EQ(muxer_->stats().refused, 1u);
  EXPECT_EQ(muxer_->stats().resets_received, 1u);
}

TEST_F(VsockMuxerTest, UnansweredConnectTimesOutWithAResetToTheGuest) {
  auto [client, request] = host_connect(22);
  ASSERT_TRUE(muxer_->next_deadline());
  EXPECT_EQ(*muxer_->next_deadline(), now_ + kConnectTimeout);
  muxer_->on_timer(now_ + kConnectTimeout - std::chrono::milliseconds(1));
  EXPECT_EQ(muxer_->connection_count(), 1u);
  now_ += kConnectTimeout;
  muxer_->on_timer(now_);
  EXPECT_TRUE(sees_eof(client.get()));
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpRst);
  EXPECT_EQ(packets[0].header.src_port, request.src_port);
  EXPECT_EQ(packets[0].header.dst_port, 22u);
  EXPECT_FALSE(muxer_->next_deadline());
}

TEST_F(VsockMuxerTest, ConnectionThatNeverSendsItsLineTimesOut) {
  UniqueFd client = connect_to(socket_path_);
  EXPECT_TRUE(pump().empty());
  now_ += kConnectTimeout;
  muxer_->on_timer(now_);
  EXPECT_TRUE(sees_eof(client.get()));
  EXPECT_TRUE(pump().empty());  // the guest never heard of it: no RST
}

TEST_F(VsockMuxerTest, ProgramHangingUpBeforeTheGuestAnswersResetsTheGuest) {
  auto [client, request] = host_connect(22);
  client.reset();
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpRst);
  EXPECT_EQ(packets[0].header.dst_port, 22u);
}

TEST_F(VsockMuxerTest, HostPortsAreDistinctPerConnection) {
  auto [a, first] = established(80);
  auto [b, second] = established(80);
  EXPECT_NE(first, second);
  write_all(b.get(), "b");
  write_all(a.get(), "a");
  auto packets = pump();
  ASSERT_EQ(packets.size(), 2u);
  for (const auto& packet : packets) {
    EXPECT_EQ(packet.payload, packet.header.src_port == first ? "a" : "b");
  }
}

// ---- Guest-initiated ----------------------------------------------------------------------

TEST_F(VsockMuxerTest, GuestConnectReachesTheProgramListeningOnSocketUnderscorePort) {
  UniqueFd listener = listen_at(socket_path_.string() + "_9000");
  UniqueFd program = guest_connect(listener.get(), 1025, 9000);
  ASSERT_TRUE(program.valid());
  send_data(1025, 9000, "from guest");
  EXPECT_EQ(read_some(program.get(), 10), "from guest");
  write_all(program.get(), "from host");
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpRw);
  EXPECT_EQ(packets[0].payload, "from host");
  auto stats = muxer_->stats();
  EXPECT_EQ(stats.guest_connections, 1u);
  ASSERT_EQ(stats.connections.size(), 1u);
  EXPECT_FALSE(stats.connections[0].host_initiated);
  EXPECT_EQ(stats.connections[0].host_port, 9000u);
  EXPECT_EQ(stats.connections[0].guest_port, 1025u);
}

TEST_F(VsockMuxerTest, GuestConnectWithNobodyListeningGetsAReset) {
  send(guest_packet(kOpRequest, 1025, 9001));
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpRst);
  EXPECT_EQ(packets[0].header.src_port, 9001u);
  EXPECT_EQ(packets[0].header.dst_port, 1025u);
  EXPECT_EQ(muxer_->stats().refused, 1u);
  EXPECT_EQ(muxer_->connection_count(), 0u);
}

// ---- Flow control -------------------------------------------------------------------------

TEST_F(VsockMuxerTest, SendsNoMoreThanTheGuestsCreditAndAsksForMore) {
  auto [client, host_port] = established(5000, /*guest_buf_alloc=*/4096);
  write_all(client.get(), std::string(10000, 'x'));
  auto packets = pump();
  ASSERT_EQ(packets.size(), 2u);
  EXPECT_EQ(packets[0].header.op, kOpRw);
  EXPECT_EQ(packets[0].payload.size(), 4096u);
  EXPECT_EQ(packets[1].header.op, kOpCreditRequest);
  EXPECT_TRUE(pump().empty());  // asked once; waits
  // The guest's application read 4096 bytes.
  send(guest_packet(kOpCreditUpdate, 5000, host_port, 0, 4096, 4096));
  packets = pump();
  ASSERT_GE(packets.size(), 1u);
  EXPECT_EQ(packets[0].payload.size(), 4096u);
}

TEST_F(VsockMuxerTest, PacketsNeverExceedTheReceiveBuffer) {
  auto [client, host_port] = established(5000);
  write_all(client.get(), std::string(1000, 'y'));
  auto packets = pump(kHeaderSize + 100);
  size_t total = 0;
  for (const auto& packet : packets) {
    EXPECT_LE(packet.payload.size(), 100u);
    total += packet.payload.size();
  }
  EXPECT_EQ(total, 1000u);
}

TEST_F(VsockMuxerTest, AnswersCreditRequests) {
  auto [client, host_port] = established(5000);
  send_data(5000, host_port, "abc");
  ASSERT_EQ(read_some(client.get(), 3), "abc");
  send(guest_packet(kOpCreditRequest, 5000, host_port));
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpCreditUpdate);
  EXPECT_EQ(packets[0].header.buf_alloc, kBufAlloc);
  EXPECT_EQ(packets[0].header.fwd_cnt, 3u);
}

TEST_F(VsockMuxerTest, GuestThatIgnoresCreditIsResetAndBufferingStaysBounded) {
  UniqueFd listener = listen_at(socket_path_.string() + "_7000");
  UniqueFd program = guest_connect(listener.get(), 2000, 7000);  // never reads
  const std::string chunk(kMaxPayload, 'z');
  bool reset = false;
  uint64_t sent = 0;
  for (int i = 0; i < 64 && !reset; ++i) {
    send_data(2000, 7000, chunk);
    sent += chunk.size();
    for (const auto& packet : pump()) reset = reset || packet.header.op == kOpRst;
  }
  ASSERT_TRUE(reset) << "the muxer kept taking data past the guest's credit";
  // What the socket did not take is at most one credit window.
  EXPECT_LE(sent - muxer_->stats().bytes_to_host, uint64_t{kBufAlloc} + kMaxPayload);
  EXPECT_EQ(muxer_->connection_count(), 0u);
  EXPECT_GE(muxer_->stats().bad_packets, 1u);
}

TEST_F(VsockMuxerTest, DataTheSocketRefusesIsForwardedWhenItDrains) {
  UniqueFd listener = listen_at(socket_path_.string() + "_7001");
  UniqueFd program = guest_connect(listener.get(), 2001, 7001);
  const std::string chunk(kMaxPayload, 'q');
  // Three chunks fit in a credit window whatever the socket takes.
  for (int i = 0; i < 3; ++i) send_data(2001, 7001, chunk);
  std::string got = read_some(program.get(), 3 * chunk.size() / 2);
  // The muxer forwards the rest as the socket drains.
  for (int i = 0; i < 50 && got.size() < 3 * chunk.size(); ++i) {
    pump();
    got += read_some(program.get(), 3 * chunk.size() - got.size());
  }
  EXPECT_EQ(got.size(), 3 * chunk.size());
  EXPECT_EQ(muxer_->stats().bytes_to_host, 3 * chunk.size());
}

// ---- Shutdown and reset -------------------------------------------------------------------

TEST_F(VsockMuxerTest, GuestShutdownSendEndsTheProgramsReads) {
  auto [client, host_port] = established(5000);
  send_data(5000, host_port, "last words");
  PacketHeader shutdown = guest_packet(kOpShutdown, 5000, host_port);
  shutdown.flags = kShutdownSend;
  send(shutdown);
  EXPECT_EQ(read_some(client.get(), 100), "last words");  // then EOF
  // The program may still send.
  write_all(client.get(), "reply");
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].payload, "reply");
}

TEST_F(VsockMuxerTest, GuestFullShutdownIsAnsweredWithResetAndCloses) {
  auto [client, host_port] = established(5000);
  PacketHeader shutdown = guest_packet(kOpShutdown, 5000, host_port);
  shutdown.flags = kShutdownBoth;
  send(shutdown);
  auto packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpRst);
  EXPECT_TRUE(sees_eof(client.get()));
  EXPECT_EQ(muxer_->connection_count(), 0u);
}

TEST_F(VsockMuxerTest, ProgramClosingItsEndTellsTheGuestNoMoreData) {
  auto [client, host_port] = established(5000);
  write_all(client.get(), "bye");
  ::shutdown(client.get(), SHUT_WR);
  auto packets = pump();
  ASSERT_EQ(packets.size(), 2u);
  EXPECT_EQ(packets[0].payload, "bye");
  EXPECT_EQ(packets[1].header.op, kOpShutdown);
  EXPECT_EQ(packets[1].header.flags, kShutdownSend);
  EXPECT_TRUE(pump().empty());  // EOF is not read again and again
  // The guest closes its side too: RST, gone.
  PacketHeader shutdown = guest_packet(kOpShutdown, 5000, host_port);
  shutdown.flags = kShutdownBoth;
  send(shutdown);
  packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpRst);
}

TEST_F(VsockMuxerTest, ProgramVanishingWithDataInFlightStillDeliversItThenShutsDown) {
  auto [client, host_port] = established(5000, 4);  // tiny guest credit: data waits
  write_all(client.get(), "12345678");
  client.reset();
  auto packets = pump();
  ASSERT_GE(packets.size(), 1u);
  EXPECT_EQ(packets[0].payload, "1234");
  send(guest_packet(kOpCreditUpdate, 5000, host_port, 0, 4, 4));
  packets = pump();
  ASSERT_GE(packets.size(), 1u);
  EXPECT_EQ(packets[0].payload, "5678");
  send(guest_packet(kOpCreditUpdate, 5000, host_port, 0, 4, 8));
  packets = pump();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, kOpShutdown);
}

TEST_F(VsockMuxerTest, GuestResetClosesAnEstablishedConnection) {
  auto [client, host_port] = established(5000);
  send(guest_packet(kOpRst, 5000, host_port));
  EXPECT_TRUE(sees_eof(client.get()));
  EXPECT_TRUE(pump().empty());  // an RST is never answered
}

// ---- Protocol violations ------------------------------------------------------------------

TEST_F(VsockMuxerTest, EveryViolationIsAnsweredWithResetButAWrongSource) {
  auto expect_reset = [&](const PacketHeader& header, std::string_view what, std::string_view payload = {}) {
    send(header, payload);
    auto packets = pump();
    ASSERT_EQ(packets.size(), 1u) << what;
    EXPECT_EQ(packets[0].header.op, kOpRst) << what;
    EXPECT_EQ(packets[0].header.dst_port, header.src_port) << what;
    EXPECT_EQ(packets[0].header.src_port, header.dst_port) << what;
  };
  PacketHeader h = guest_packet(kOpRequest, 1, 2);
  h.dst_cid = 7;
  send(h);
  auto from_seven = pump();
  ASSERT_EQ(from_seven.size(), 1u);
  EXPECT_EQ(from_seven[0].header.op, kOpRst);
  EXPECT_EQ(from_seven[0].header.src_cid, 7u) << "the RST comes from the CID the guest tried to reach";
  h = guest_packet(kOpRequest, 1, 2);
  h.type = kTypeSeqpacket;
  expect_reset(h, "seqpacket");
  expect_reset(guest_packet(9, 1, 2), "unknown op");
  expect_reset(guest_packet(kOpRw, 1, 2, 3), "data for no connection", "abc");
  expect_reset(guest_packet(kOpResponse, 1, 2), "response for no connection");
  expect_reset(guest_packet(kOpShutdown, 1, 2), "shutdown for no connection");
  expect_reset(guest_packet(kOpCreditUpdate, 1, 2), "credit for no connection");
  // len says more than the chain carries.
  send(guest_packet(kOpRw, 1, 2, 10), "short");
  ASSERT_EQ(pump().size(), 1u);

  h = guest_packet(kOpRequest, 1, 2);
  h.src_cid = 99;
  send(h);
  EXPECT_TRUE(pump().empty()) << "a packet from another CID is dropped, not answered";
  send(guest_packet(kOpRst, 1, 2));
  EXPECT_TRUE(pump().empty()) << "an RST is never answered";
  EXPECT_EQ(muxer_->stats().bad_packets, 5u);  // not the packets for unknown connections
}

TEST_F(VsockMuxerTest, ViolationsOnALiveConnectionResetIt) {
  UniqueFd listener = listen_at(socket_path_.string() + "_6000");
  {
    UniqueFd program = guest_connect(listener.get(), 3000, 6000);
    send(guest_packet(kOpRequest, 3000, 6000));  // the same connection again
    auto packets = pump();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.op, kOpRst);
    EXPECT_TRUE(sees_eof(program.get()));
  }
  {
    UniqueFd program = guest_connect(listener.get(), 3001, 6000);
    send(guest_packet(kOpResponse, 3001, 6000));  // a guest-initiated connection needs none
    EXPECT_EQ(pump().size(), 1u);
    EXPECT_TRUE(sees_eof(program.get()));
  }
  {
    auto [client, request] = host_connect(44);
    send_data(44, request.src_port, "too early");  // before RESPONSE
    auto packets = pump();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.op, kOpRst);
    EXPECT_TRUE(sees_eof(client.get()));
  }
  {
    auto [client, host_port] = established(45);
    PacketHeader shutdown = guest_packet(kOpShutdown, 45, host_port);
    shutdown.flags = kShutdownSend;
    send(shutdown);
    send_data(45, host_port, "after shutdown");
    auto packets = pump();
    ASSERT_EQ(packets.size(), 1u);
    EXPECT_EQ(packets[0].header.op, kOpRst);
  }
  EXPECT_EQ(muxer_->connection_count(), 0u);
}

// ---- Limits -------------------------------------------------------------------------------

TEST_F(VsockMuxerTest, ConnectionsBeyondTheLimitAreRefused) {
  UniqueFd listener = listen_at(socket_path_.string() + "_8000", static_cast<int>(kMaxConnections) + 8);
  for (uint32_t port = 0; port < kMaxConnections; ++port) send(guest_packet(kOpRequest, 10000 + port, 8000));
  EXPECT_EQ(muxer_->connection_count(), kMaxConnections);
  send(guest_packet(kOpRequest, 20000, 8000));
  EXPECT_EQ(muxer_->connection_count(), kMaxConnections);
  UniqueFd client = connect_to(socket_path_);  // host programs too
  auto packets = pump();
  ASSERT_EQ(packets.size(), kMaxConnections + 1);
  EXPECT_EQ(packets.front().header.op, kOpRst);  // resets go first
  EXPECT_EQ(packets.front().header.dst_port, 20000u);
  EXPECT_TRUE(sees_eof(client.get()));
  EXPECT_EQ(muxer_->stats().refused, 2u);
}

TEST_F(VsockMuxerTest, ResetsWaitingForReceiveBuffersAreBounded) {
  for (uint32_t i = 0; i < 3 * kMaxPendingResets; ++i) send(guest_packet(kOpRw, i, 1, 0));
  muxer_->on_host_events(now_);
  std::vector<uint8_t> buffer(kHeaderSize);
  size_t resets = 0;
  while (muxer_->next_packet_for_guest(buffer) != 0) ++resets;
  EXPECT_EQ(resets, kMaxPendingResets);
}

TEST_F(VsockMuxerTest, ManyConcurrentConnectionsKeepTheirDataApart) {
  constexpr int kCount = 20;
  std::vector<std::pair<UniqueFd, uint32_t>> clients;
  for (int i = 0; i < kCount; ++i) clients.push_back(established(100 + i));
  for (int i = 0; i < kCount; ++i) write_all(clients[i].first.get(), fmt::format("host {}", i));
  auto packets = pump();
  ASSERT_EQ(packets.size(), static_cast<size_t>(kCount));
  for (const auto& packet : packets) {
    EXPECT_EQ(packet.payload, fmt::format("host {}", packet.header.dst_port - 100));
  }
  for (int i = 0; i < kCount; ++i) send_data(100 + i, clients[i].second, fmt::format("guest {}", i));
  for (int i = 0; i < kCount; ++i) {
    EXPECT_EQ(read_some(clients[i].first.get(), fmt::format("guest {}", i).size()), fmt::format("guest {}", i));
  }
  EXPECT_EQ(muxer_->stats().connections.size(), static_cast<size_t>(kCount));
  muxer_->close_all();
  for (auto& [client, port] : clients) EXPECT_TRUE(sees_eof(client.get()));
}

}  // namespace
}  // namespace skiff::virtio::vsock
