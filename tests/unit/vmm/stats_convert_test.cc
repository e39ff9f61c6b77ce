// SPDX-License-Identifier: Apache-2.0
#include "vmm/stats_convert.h"

#include <gtest/gtest.h>

namespace skiff {
namespace {

TEST(StatsConvert, VsockTotalsAndConnections) {
  virtio::vsock::MuxerStats muxer{.host_connections = 1,
                                  .guest_connections = 2,
                                  .refused = 3,
                                  .resets_sent = 4,
                                  .resets_received = 5,
                                  .bytes_to_guest = 6,
                                  .bytes_to_host = 7,
                                  .bad_packets = 8,
                                  .connections = {{.host_port = 9000,
                                                   .guest_port = 1025,
                                                   .host_initiated = false,
                                                   .state = "established",
                                                   .bytes_to_guest = 10,
                                                   .bytes_to_host = 11},
                                                  {.host_port = 1u << 30,
                                                   .guest_port = 22,
                                                   .host_initiated = true,
                                                   .state = "connecting",
                                                   .bytes_to_guest = 0,
                                                   .bytes_to_host = 0}}};
  VsockStats stats = to_vsock_stats(42, muxer);
  EXPECT_EQ(stats.guest_cid, 42u);
  EXPECT_EQ(stats.host_connections, 1u);
  EXPECT_EQ(stats.guest_connections, 2u);
  EXPECT_EQ(stats.refused, 3u);
  EXPECT_EQ(stats.resets_sent, 4u);
  EXPECT_EQ(stats.resets_received, 5u);
  EXPECT_EQ(stats.bytes_to_guest, 6u);
  EXPECT_EQ(stats.bytes_to_host, 7u);
  EXPECT_EQ(stats.bad_packets, 8u);
  ASSERT_EQ(stats.connections.size(), 2u);
  EXPECT_EQ(stats.connections[0], (VsockConnectionStats{9000, 1025, "guest", "established", 10, 11}));
  EXPECT_EQ(stats.connections[1].initiator, "host");
  EXPECT_EQ(stats.connections[1].state, "connecting");
}

}  // namespace
}  // namespace skiff
