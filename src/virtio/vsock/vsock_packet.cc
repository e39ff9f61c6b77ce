// SPDX-License-Identifier: Apache-2.0
#include "virtio/vsock/vsock_packet.h"

namespace skiff::virtio::vsock {
namespace {

// Little-endian fields at fixed offsets (§5.10.6: struct virtio_vsock_hdr, packed).
template <typename T>
T load(std::span<const uint8_t, kHeaderSize> bytes, size_t offset) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(static_cast<T>(bytes[offset + i]) << (8 * i));
  return value;
}

template <typename T>
void store(std::array<uint8_t, kHeaderSize>& bytes, size_t offset, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

constexpr size_t kSrcCid = 0;
constexpr size_t kDstCid = 8;
constexpr size_t kSrcPort = 16;
constexpr size_t kDstPort = 20;
constexpr size_t kLen = 24;
constexpr size_t kType = 28;
constexpr size_t kOp = 30;
constexpr size_t kFlags = 32;
constexpr size_t kBufAlloc = 36;
constexpr size_t kFwdCnt = 40;
static_assert(kFwdCnt + 4 == kHeaderSize);

}  // namespace

PacketHeader decode_header(std::span<const uint8_t, kHeaderSize> bytes) {
  return PacketHeader{.src_cid = load<uint64_t>(bytes, kSrcCid),
                      .dst_cid = load<uint64_t>(bytes, kDstCid),
                      .src_port = load<uint32_t>(bytes, kSrcPort),
                      .dst_port = load<uint32_t>(bytes, kDstPort),
                      .len = load<uint32_t>(bytes, kLen),
                      .type = load<uint16_t>(bytes, kType),
                      .op = load<uint16_t>(bytes, kOp),
                      .flags = load<uint32_t>(bytes, kFlags),
                      .buf_alloc = load<uint32_t>(bytes, kBufAlloc),
                      .fwd_cnt = load<uint32_t>(bytes, kFwdCnt)};
}

std::array<uint8_t, kHeaderSize> encode_header(const PacketHeader& header) {
  std::array<uint8_t, kHeaderSize> bytes{};
  store(bytes, kSrcCid, header.src_cid);
  store(bytes, kDstCid, header.dst_cid);
  store(bytes, kSrcPort, header.src_port);
  store(bytes, kDstPort, header.dst_port);
  store(bytes, kLen, header.len);
  store(bytes, kType, header.type);
  store(bytes, kOp, header.op);
  store(bytes, kFlags, header.flags);
  store(bytes, kBufAlloc, header.buf_alloc);
  store(bytes, kFwdCnt, header.fwd_cnt);
  return bytes;
}

HeaderProblem check_guest_header(const PacketHeader& header, uint32_t guest_cid, uint64_t carried) {
  if (header.src_cid != guest_cid) return HeaderProblem::kWrongSource;
  if (header.dst_cid != kHostCid) return HeaderProblem::kWrongDestination;
  if (header.type != kTypeStream) return HeaderProblem::kWrongType;
  if (header.op < kOpRequest || header.op > kOpCreditRequest) return HeaderProblem::kUnknownOp;
  if (header.len > kMaxPayload) return HeaderProblem::kPayloadTooLarge;
  if (header.len > carried) return HeaderProblem::kPayloadMismatch;
  if (header.len != 0 && header.op != kOpRw) return HeaderProblem::kPayloadOnControl;
  return HeaderProblem::kNone;
}

std::string_view describe(HeaderProblem problem) {
  switch (problem) {
    case HeaderProblem::kNone: return "none";
    case HeaderProblem::kWrongSource: return "source CID is not the guest's";
    case HeaderProblem::kWrongDestination: return "destination CID is not the host (2)";
    case HeaderProblem::kWrongType: return "not a stream packet";
    case HeaderProblem::kUnknownOp: return "unknown op";
    case HeaderProblem::kPayloadTooLarge: return "payload above 64 KiB";
    case HeaderProblem::kPayloadMismatch: return "len beyond the buffers the chain carries";
    case HeaderProblem::kPayloadOnControl: return "payload on a control packet";
  }
  return "?";
}

std::string_view op_name(uint16_t op) {
  switch (op) {
    case kOpRequest: return "REQUEST";
    case kOpResponse: return "RESPONSE";
    case kOpRst: return "RST";
    case kOpShutdown: return "SHUTDOWN";
    case kOpRw: return "RW";
    case kOpCreditUpdate: return "CREDIT_UPDATE";
    case kOpCreditRequest: return "CREDIT_REQUEST";
    default: return "INVALID";
  }
}

}  // namespace skiff::virtio::vsock
