// SPDX-License-Identifier: Apache-2.0
#include "virtio/net/mac.h"

namespace skiff::virtio::net {
namespace {
constexpr uint8_t kMulticastBit = 0x01;
constexpr uint8_t kLocallyAdministeredBit = 0x02;
}  // namespace

uint64_t fnv1a64(std::string_view data, uint64_t hash) {
  constexpr uint64_t kPrime = 0x100000001b3ull;
  for (char c : data) {
    hash ^= static_cast<uint8_t>(c);
    hash *= kPrime;
  }
  return hash;
}

MacAddress generate_mac(std::string_view vm_name, std::string_view nic_id) {
  // A NUL between the two keeps ("ab", "c") and ("a", "bc") apart.
  uint64_t hash = fnv1a64(vm_name);
  hash = fnv1a64(std::string_view("\0", 1), hash);
  hash = fnv1a64(nic_id, hash);
  MacAddress mac{};
  for (size_t i = 0; i < mac.size(); ++i) mac[i] = static_cast<uint8_t>(hash >> (8 * i));
  // Locally administered unicast: set bit 1, clear bit 0 of the first byte. With bit 1 set
  // the address cannot be 00:00:00:00:00:00; with bit 0 clear it cannot be broadcast.
  mac[0] = static_cast<uint8_t>((mac[0] | kLocallyAdministeredBit) & ~kMulticastBit);
  return mac;
}

bool is_locally_administered_unicast(const MacAddress& mac) {
  return (mac[0] & kLocallyAdministeredBit) != 0 && (mac[0] & kMulticastBit) == 0;
}

}  // namespace skiff::virtio::net
