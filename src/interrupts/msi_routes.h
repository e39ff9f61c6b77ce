// SPDX-License-Identifier: Apache-2.0
// MSI messages delivered through KVM irqfds: each distinct (address, data) pair a device
// signals gets a GSI above the IOAPIC's pins with an MSI route, and an eventfd registered as
// that GSI's irqfd. Delivering the message is then one eventfd write from the device thread.
// Routes are created when the guest programs an MSI-X entry (or on first use), kept in one
// KVM_SET_GSI_ROUTING table together with the PC routes, and capped.
//
// Guests reprogram MSI-X entries (Linux moves an interrupt to another CPU by rewriting its
// message), so routes are counted by the vectors that hold them (retain/release). Routes no
// vector holds are reclaimed when the table is full, before a new route would be refused;
// only when every route is held do messages go through KVM_SIGNAL_MSI instead.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "kvm/kvm_vm.h"
#include "skiff/error.h"

namespace skiff {

class MsiRoutes {
 public:
  // `base_routes` are installed with every update (the PC routes); MSI GSIs are taken from
  // [first_gsi, first_gsi + max_routes).
  MsiRoutes(const KvmVm& vm, std::vector<kvm_irq_routing_entry> base_routes, uint32_t first_gsi,
            size_t max_routes);
  ~MsiRoutes();
  MsiRoutes(const MsiRoutes&) = delete;
  MsiRoutes& operator=(const MsiRoutes&) = delete;

  // Makes sure a route exists for the message, without holding it.
  Result<void> prepare(uint64_t address, uint32_t data);
  // A vector now uses the message: makes sure its route exists and keeps it from being
  // reclaimed until the matching release(). A full table is not an error (deliver() falls
  // back to KVM_SIGNAL_MSI).
  Result<void> retain(uint64_t address, uint32_t data);
  // A vector no longer uses the message.
  void release(uint64_t address, uint32_t data);
  // Delivers the message: through its irqfd, or KVM_SIGNAL_MSI when no route can be had.
  void deliver(uint64_t address, uint32_t data);

  size_t route_count() const;
  // Routes some vector holds.
  size_t held_route_count() const;

 private:
  using Message = std::pair<uint64_t, uint32_t>;
  struct Route {
    uint32_t gsi;
    UniqueFd event;
    uint32_t holders = 0;
  };
  // The message's route, creating it (reclaiming unheld routes first when the table is
  // full) if needed; nullptr when every route is held.
  Result<Route*> route_locked(const Message& message);
  // Drops every route no vector holds; returns how many went.
  Result<size_t> reclaim_unheld_locked();
  Result<void> install_table_locked(const std::optional<std::pair<uint32_t, Message>>& extra);

  const KvmVm& vm_;
  const std::vector<kvm_irq_routing_entry> base_routes_;
  const uint32_t first_gsi_;
  const size_t max_routes_;
  mutable std::mutex mutex_;
  std::map<Message, Route> routes_;
};

// Follows one MSI-X table's vectors for MsiRoutes: retains the message of each unmasked
// vector and releases it when the vector is masked, reprogrammed or the tracker goes away.
// Feed it from MsixTable's vector-changed hook.
class MsixRouteTracker {
 public:
  explicit MsixRouteTracker(std::shared_ptr<MsiRoutes> routes) : routes_(std::move(routes)) {}
  ~MsixRouteTracker();
  MsixRouteTracker(const MsixRouteTracker&) = delete;
  MsixRouteTracker& operator=(const MsixRouteTracker&) = delete;

  // Returns the error of a failed route creation (the vector still works through
  // KVM_SIGNAL_MSI).
  Result<void> on_vector_changed(uint16_t vector, uint64_t address, uint32_t data, bool masked);

 private:
  std::shared_ptr<MsiRoutes> routes_;
  std::mutex mutex_;
  std::map<uint16_t, std::pair<uint64_t, uint32_t>> held_;
};

}  // namespace skiff
