// SPDX-License-Identifier: Apache-2.0
// The virtio-vsock packet header (virtio 1.2 §5.10.6) and its rules, as the device reads
// it from the guest's transmit queue and writes it into receive buffers.
//
// The header is 44 little-endian bytes at the start of every packet; `len` payload bytes
// follow it (OP_RW only). Everything in it comes from the guest: decode() only reads the
// bytes, and check_guest_header() says what is wrong with one before the connection code
// looks at it.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace skiff::virtio::vsock {

inline constexpr size_t kHeaderSize = 44;

// Well-known context IDs (the CID is 32 bits on Linux; the header carries 64).
inline constexpr uint64_t kHostCid = 2;

// virtio 1.2 §5.10.6: type.
inline constexpr uint16_t kTypeStream = 1;
inline constexpr uint16_t kTypeSeqpacket = 2;  // not offered (VIRTIO_VSOCK_F_SEQPACKET)

// op.
inline constexpr uint16_t kOpInvalid = 0;
inline constexpr uint16_t kOpRequest = 1;
inline constexpr uint16_t kOpResponse = 2;
inline constexpr uint16_t kOpRst = 3;
inline constexpr uint16_t kOpShutdown = 4;
inline constexpr uint16_t kOpRw = 5;
inline constexpr uint16_t kOpCreditUpdate = 6;
inline constexpr uint16_t kOpCreditRequest = 7;

// flags of OP_SHUTDOWN: the sender will receive no more / send no more.
inline constexpr uint32_t kShutdownRcv = 1;
inline constexpr uint32_t kShutdownSend = 2;
inline constexpr uint32_t kShutdownBoth = kShutdownRcv | kShutdownSend;

// The event queue's only event (§5.10.6.5): every connection is gone (after a restore).
inline constexpr uint32_t kEventTransportReset = 0;

// The largest payload skiff accepts in one packet and puts in one receive buffer: what
// Linux's driver sends at most (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
inline constexpr uint32_t kMaxPayload = 64 * 1024;

struct PacketHeader {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;
  uint16_t type = 0;
  uint16_t op = 0;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;
  uint32_t fwd_cnt = 0;
  bool operator==(const PacketHeader&) const = default;
};

// Exactly kHeaderSize bytes.
PacketHeader decode_header(std::span<const uint8_t, kHeaderSize> bytes);
std::array<uint8_t, kHeaderSize> encode_header(const PacketHeader& header);

// What is wrong with a header the guest sent, before any connection is looked up.
enum class HeaderProblem {
  kNone,
  kWrongSource,       // src_cid is not the guest's CID: dropped (an RST would go nowhere)
  kWrongDestination,  // dst_cid is not the host: answered with RST
  kWrongType,         // not a stream packet: RST
  kUnknownOp,         // op outside 1..7: RST
  kPayloadTooLarge,   // len above kMaxPayload: RST
  kPayloadMismatch,   // len says more than the descriptor chain carries: RST
  kPayloadOnControl,  // len non-zero on an op other than OP_RW: RST
};

// `carried`: the payload bytes the chain holds after the header. The guest's 64-bit CID
// fields are compared whole, so upper bits set make the packet wrong.
HeaderProblem check_guest_header(const PacketHeader& header, uint32_t guest_cid, uint64_t carried);

// For logs and counters ("wrong destination CID").
std::string_view describe(HeaderProblem problem);
std::string_view op_name(uint16_t op);

}  // namespace skiff::virtio::vsock
