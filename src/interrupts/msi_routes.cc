// SPDX-License-Identifier: Apache-2.0
#include "interrupts/msi_routes.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff {

namespace {

kvm_irq_routing_entry msi_entry(uint32_t gsi, uint64_t address, uint32_t data) {
  kvm_irq_routing_entry entry{};
  entry.gsi = gsi;
  entry.type = KVM_IRQ_ROUTING_MSI;
  entry.u.msi.address_lo = static_cast<uint32_t>(address);
  entry.u.msi.address_hi = static_cast<uint32_t>(address >> 32);
  entry.u.msi.data = data;
  return entry;
}

}  // namespace

MsiRoutes::MsiRoutes(const KvmVm& vm, std::vector<kvm_irq_routing_entry> base_routes, uint32_t first_gsi,
                     size_t max_routes)
    : vm_(vm), base_routes_(std::move(base_routes)), first_gsi_(first_gsi), max_routes_(max_routes) {}

MsiRoutes::~MsiRoutes() {
  std::lock_guard lock(mutex_);
  for (auto& [message, route] : routes_) {
    if (auto r = vm_.unregister_irqfd(route.event.get(), route.gsi); !r) spdlog::debug("{}", r.error().message());
  }
}

size_t MsiRoutes::route_count() const {
  std::lock_guard lock(mutex_);
  return routes_.size();
}

size_t MsiRoutes::held_route_count() const {
  std::lock_guard lock(mutex_);
  size_t held = 0;
  for (const auto& [message, route] : routes_) held += route.holders != 0 ? 1 : 0;
  return held;
}

// KVM_SET_GSI_ROUTING replaces the whole table: the PC routes, every MSI route, and the
// one being added.
Result<void> MsiRoutes::install_table_locked(const std::optional<std::pair<uint32_t, Message>>& extra) {
  std::vector<kvm_irq_routing_entry> table = base_routes_;
  for (const auto& [message, route] : routes_) table.push_back(msi_entry(route.gsi, message.first, message.second));
  if (extra) table.push_back(msi_entry(extra->first, extra->second.first, extra->second.second));
  return vm_.set_gsi_routing(table);
}

Result<size_t> MsiRoutes::reclaim_unheld_locked() {
  std::vector<std::pair<uint32_t, UniqueFd>> dropped;
  for (auto it = routes_.begin(); it != routes_.end();) {
    if (it->second.holders != 0) {
      ++it;
      continue;
    }
    dropped.emplace_back(it->second.gsi, std::move(it->second.event));
    it = routes_.erase(it);
  }
  if (dropped.empty()) return size_t{0};
  // Detach the irqfds before their GSIs leave the table; a write racing with this lands on
  // an eventfd that is about to close, which is harmless (the message was stale).
  for (const auto& [gsi, event] : dropped) {
    if (auto r = vm_.unregister_irqfd(event.get(), gsi); !r) return std::unexpected(r.error());
  }
  if (auto r = install_table_locked(std::nullopt); !r) return std::unexpected(r.error());
  spdlog::debug("MSI routes: reclaimed {} unused routes, {} remain", dropped.size(), routes_.size());
  return dropped.size();
}

Result<MsiRoutes::Route*> MsiRoutes::route_locked(const Message& message) {
  if (auto it = routes_.find(message); it != routes_.end()) return &it->second;
  if (routes_.size() >= max_routes_) {
    auto reclaimed = reclaim_unheld_locked();
    if (!reclaimed) return std::unexpected(reclaimed.error());
    if (*reclaimed == 0) return nullptr;
  }
  // The lowest GSI no route uses.
  std::vector<bool> used(max_routes_, false);
  for (const auto& [key, route] : routes_) used[route.gsi - first_gsi_] = true;
  uint32_t gsi = first_gsi_;
  while (used[gsi - first_gsi_]) ++gsi;

  UniqueFd event(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event.valid()) return std::unexpected(errno_error("eventfd for an MSI route", errno));
  if (auto r = install_table_locked(std::make_pair(gsi, message)); !r) return std::unexpected(r.error());
  if (auto r = vm_.register_irqfd(event.get(), gsi); !r) {
    (void)install_table_locked(std::nullopt);
    return std::unexpected(r.error());
  }
  auto [it, inserted] = routes_.emplace(message, Route{gsi, std::move(event), 0});
  return &it->second;
}

Result<void> MsiRoutes::prepare(uint64_t address, uint32_t data) {
  std::lock_guard lock(mutex_);
  auto route = route_locked({address, data});
  if (!route) return std::unexpected(route.error());
  return {};
}

Result<void> MsiRoutes::retain(uint64_t address, uint32_t data) {
  std::lock_guard lock(mutex_);
  auto route = route_locked({address, data});
  if (!route) return std::unexpected(route.error());
  if (*route != nullptr) ++(*route)->holders;
  return {};
}

void MsiRoutes::release(uint64_t address, uint32_t data) {
  std::lock_guard lock(mutex_);
  auto it = routes_.find({address, data});
  if (it != routes_.end() && it->second.holders != 0) --it->second.holders;
}

void MsiRoutes::deliver(uint64_t address, uint32_t data) {
  int fd = -1;
  {
    std::lock_guard lock(mutex_);
    auto routed = route_locked({address, data});
    if (!routed) {
      spdlog::warn("MSI {:#x}/{:#x}: {}; using KVM_SIGNAL_MSI", address, data, routed.error().message());
    } else if (*routed != nullptr) {
      fd = (*routed)->event.get();
    }
    if (fd >= 0) {
      // Written under the lock so a concurrent reclaim cannot close the eventfd first.
      uint64_t one = 1;
      if (::write(fd, &one, sizeof(one)) == sizeof(one) || errno == EAGAIN) return;
      spdlog::warn("MSI irqfd write: {}; using KVM_SIGNAL_MSI", std::strerror(errno));
    }
  }
  if (auto r = vm_.signal_msi(address, data); !r) spdlog::warn("{}", r.error().message());
}

MsixRouteTracker::~MsixRouteTracker() {
  std::lock_guard lock(mutex_);
  for (const auto& [vector, message] : held_) routes_->release(message.first, message.second);
}

Result<void> MsixRouteTracker::on_vector_changed(uint16_t vector, uint64_t address, uint32_t data, bool masked) {
  std::lock_guard lock(mutex_);
  const std::pair<uint64_t, uint32_t> message{address, data};
  if (auto it = held_.find(vector); it != held_.end()) {
    if (!masked && it->second == message) return {};
    routes_->release(it->second.first, it->second.second);
    held_.erase(it);
  }
  if (masked) return {};
  if (auto r = routes_->retain(address, data); !r) return r;
  held_.emplace(vector, message);
  return {};
}

}  // namespace skiff
