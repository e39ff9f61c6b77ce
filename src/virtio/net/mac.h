// SPDX-License-Identifier: Apache-2.0
// MAC addresses for NICs whose spec gives none.
#pragma once

#include <cstdint>
#include <string_view>

#include "skiff/spec.h"

namespace skiff::virtio::net {

// A MAC address derived from the VM name and the NIC id: the same pair always gives the
// same address (so a guest keeps its DHCP lease and udev names across restarts), different
// pairs almost surely differ. The address is locally administered (bit 1 of the first byte
// set) and unicast (bit 0 clear), so it is never all-zero, never broadcast and never
// collides with a vendor-assigned address.
MacAddress generate_mac(std::string_view vm_name, std::string_view nic_id);

// True for a locally administered unicast address.
bool is_locally_administered_unicast(const MacAddress& mac);

// 64-bit FNV-1a (the variant with the offset basis 0xcbf29ce484222325 and the prime
// 0x100000001b3), continuing from `hash`.
uint64_t fnv1a64(std::string_view data, uint64_t hash = 0xcbf29ce484222325ull);

}  // namespace skiff::virtio::net
