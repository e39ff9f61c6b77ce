// SPDX-License-Identifier: Apache-2.0
// MSI messages delivered through KVM irqfds: each distinct (address, data) pair a device
// signals gets a GSI above the IOAPIC's pins with an MSI route, and an eventfd registered as
// that GSI's irqfd. Delivering the message is then one eventfd write from the device thread.
// Routes are created when the guest programs an MSI-X entry (or on first use), kept in one
// KVM_SET_GSI_ROUTING table together with the PC routes, and capped: past the cap, messages
// go through KVM_SIGNAL_MSI instead.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "kvm/kvm_vm.h"
#include "skiff/error.h"

namespace skiff {

class MsiRoutes {
 public:
  // `base_routes` are installed with every update (the PC routes); MSI GSIs start at
  // `first_gsi`; at most `max_routes` MSI routes exist at once.
  MsiRoutes(const KvmVm& vm, std::vector<kvm_irq_routing_entry> base_routes, uint32_t first_gsi,
            size_t max_routes);

  // Makes sure a route exists for the message (e.g. when the guest unmasks an MSI-X entry).
  Result<void> prepare(uint64_t address, uint32_t data);
  // Delivers the message: through its irqfd, or KVM_SIGNAL_MSI when no route can be had.
  void deliver(uint64_t address, uint32_t data);

  size_t route_count() const;

 private:
  struct Route {
    uint32_t gsi;
    UniqueFd event;
  };
  // The route's eventfd, creating the route if needed; -1 when the table is full.
  Result<int> route_locked(uint64_t address, uint32_t data);

  const KvmVm& vm_;
  const std::vector<kvm_irq_routing_entry> base_routes_;
  const uint32_t first_gsi_;
  const size_t max_routes_;
  mutable std::mutex mutex_;
  std::map<std::pair<uint64_t, uint32_t>, Route> routes_;
};

}  // namespace skiff
