// SPDX-License-Identifier: Apache-2.0
#include "virtio/vsock/vsock_packet.h"

#include <gtest/gtest.h>

#include <array>

namespace skiff::virtio::vsock {
namespace {

TEST(VsockPacket, EncodesTheSpecLayoutLittleEndian) {
  PacketHeader header{.src_cid = 0x0102030405060708,
                      .dst_cid = 2,
                      .src_port = 0x11223344,
                      .dst_port = 0x55667788,
                      .len = 0x99aabbcc,
                      .type = kTypeStream,
                      .op = kOpRw,
                      .flags = kShutdownBoth,
                      .buf_alloc = 0x00040000,
                      .fwd_cnt = 0xdeadbeef};
  auto bytes = encode_header(header);
  EXPECT_EQ(bytes[0], 0x08);   // src_cid, low byte first
  EXPECT_EQ(bytes[7], 0x01);
  EXPECT_EQ(bytes[8], 2);      // dst_cid
  EXPECT_EQ(bytes[16], 0x44);  // src_port
  EXPECT_EQ(bytes[20], 0x88);  // dst_port
  EXPECT_EQ(bytes[24], 0xcc);  // len
  EXPECT_EQ(bytes[28], kTypeStream);
  EXPECT_EQ(bytes[30], kOpRw);
  EXPECT_EQ(bytes[32], kShutdownBoth);
  EXPECT_EQ(bytes[38], 0x04);  // buf_alloc 0x40000
  EXPECT_EQ(bytes[43], 0xde);  // fwd_cnt, high byte last
  EXPECT_EQ(decode_header(bytes), header);
}

PacketHeader good(uint16_t op = kOpRw, uint32_t len = 0) {
  return PacketHeader{.src_cid = 3, .dst_cid = kHostCid, .src_port = 1, .dst_port = 2, .len = len,
                      .type = kTypeStream, .op = op};
}

TEST(VsockPacket, AcceptsEveryOpFromTheGuestToTheHost) {
  for (uint16_t op = kOpRequest; op <= kOpCreditRequest; ++op) {
    EXPECT_EQ(check_guest_header(good(op), 3, 0), HeaderProblem::kNone) << op_name(op);
  }
  EXPECT_EQ(check_guest_header(good(kOpRw, kMaxPayload), 3, kMaxPayload), HeaderProblem::kNone);
}

TEST(VsockPacket, NamesEachProblem) {
  PacketHeader h = good();
  h.src_cid = 4;
  EXPECT_EQ(check_guest_header(h, 3, 0), HeaderProblem::kWrongSource);
  h = good();
  h.src_cid = (uint64_t{1} << 32) | 3;  // upper bits of the 64-bit field set
  EXPECT_EQ(check_guest_header(h, 3, 0), HeaderProblem::kWrongSource);
  h = good();
  h.dst_cid = 3;
  EXPECT_EQ(check_guest_header(h, 3, 0), HeaderProblem::kWrongDestination);
  h = good();
  h.type = kTypeSeqpacket;
  EXPECT_EQ(check_guest_header(h, 3, 0), HeaderProblem::kWrongType);
  EXPECT_EQ(check_guest_header(good(kOpInvalid), 3, 0), HeaderProblem::kUnknownOp);
  EXPECT_EQ(check_guest_header(good(8), 3, 0), HeaderProblem::kUnknownOp);
  EXPECT_EQ(check_guest_header(good(kOpRw, kMaxPayload + 1), 3, kMaxPayload + 1), HeaderProblem::kPayloadTooLarge);
  EXPECT_EQ(check_guest_header(good(kOpRw, 100), 3, 99), HeaderProblem::kPayloadMismatch);
  EXPECT_EQ(check_guest_header(good(kOpRequest, 4), 3, 4), HeaderProblem::kPayloadOnControl);
  EXPECT_EQ(describe(HeaderProblem::kWrongDestination), "destination CID is not the host (2)");
  EXPECT_EQ(op_name(kOpCreditRequest), "CREDIT_REQUEST");
  EXPECT_EQ(op_name(99), "INVALID");
}

}  // namespace
}  // namespace skiff::virtio::vsock
