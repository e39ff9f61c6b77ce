// SPDX-License-Identifier: Apache-2.0
#include "virtio/net/mac.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace skiff::virtio::net {
namespace {

TEST(MacGenerate, StablePerVmAndNic) {
  EXPECT_EQ(generate_mac("vm1", "net0"), generate_mac("vm1", "net0"));
  EXPECT_NE(generate_mac("vm1", "net0"), generate_mac("vm1", "net1"));
  EXPECT_NE(generate_mac("vm1", "net0"), generate_mac("vm2", "net0"));
  // The separator keeps the two names apart.
  EXPECT_NE(generate_mac("ab", "c"), generate_mac("a", "bc"));
}

TEST(MacGenerate, FixedValueDoesNotChangeAcrossReleases) {
  // Guests keep DHCP leases and interface names by MAC: a change here renames NICs.
  EXPECT_EQ(format_mac(generate_mac("skiff", "net0")), "ea:00:64:17:1a:85");
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ull);
}

TEST(MacGenerate, LocallyAdministeredUnicastAndNeverZeroOrBroadcast) {
  std::set<MacAddress> seen;
  for (int vm = 0; vm < 50; ++vm) {
    for (int nic = 0; nic < 20; ++nic) {
      MacAddress mac = generate_mac("vm" + std::to_string(vm), "net" + std::to_string(nic));
      EXPECT_TRUE(is_locally_administered_unicast(mac)) << format_mac(mac);
      EXPECT_EQ(mac[0] & 0x01, 0) << format_mac(mac);
      EXPECT_EQ(mac[0] & 0x02, 0x02) << format_mac(mac);
      EXPECT_NE(mac, (MacAddress{}));
      EXPECT_NE(mac, (MacAddress{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
      seen.insert(mac);
    }
  }
  EXPECT_EQ(seen.size(), 1000u) << "collisions among 1000 generated addresses";
}

TEST(MacParse, RoundTripAndMalformed) {
  auto mac = parse_mac("52:54:00:AB:cd:0f");
  ASSERT_TRUE(mac);
  EXPECT_EQ(*mac, (MacAddress{0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f}));
  EXPECT_EQ(format_mac(*mac), "52:54:00:ab:cd:0f");
  EXPECT_EQ(parse_mac(format_mac(generate_mac("a", "b"))), generate_mac("a", "b"));
  for (const char* bad : {"", "52:54:00:ab:cd", "52:54:00:ab:cd:0f:11", "52-54-00-ab-cd-0f", "5254.00ab.cd0f",
                          "52:54:00:ab:cd:0g", "520:54:00:ab:cd:0f", "52:54:00:ab:cd:0f "}) {
    EXPECT_FALSE(parse_mac(bad)) << bad;
  }
}

TEST(MacParse, LocallyAdministeredCheck) {
  EXPECT_TRUE(is_locally_administered_unicast({0x52, 0x54, 0, 0, 0, 1}));  // 0x52: bit 1 set
  EXPECT_FALSE(is_locally_administered_unicast({0x00, 0x1b, 0x21, 0, 0, 1}));  // vendor OUI
  EXPECT_FALSE(is_locally_administered_unicast({0x03, 0, 0, 0, 0, 1}));        // multicast
}

}  // namespace
}  // namespace skiff::virtio::net
