// SPDX-License-Identifier: Apache-2.0
#include "vmm/msi_routes.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff {

MsiRoutes::MsiRoutes(const KvmVm& vm, std::vector<kvm_irq_routing_entry> base_routes, uint32_t first_gsi,
                     size_t max_routes)
    : vm_(vm), base_routes_(std::move(base_routes)), first_gsi_(first_gsi), max_routes_(max_routes) {}

size_t MsiRoutes::route_count() const {
  std::lock_guard lock(mutex_);
  return routes_.size();
}

Result<int> MsiRoutes::route_locked(uint64_t address, uint32_t data) {
  const auto key = std::make_pair(address, data);
  if (auto it = routes_.find(key); it != routes_.end()) return it->second.event.get();
  if (routes_.size() >= max_routes_) return -1;

  const uint32_t gsi = first_gsi_ + static_cast<uint32_t>(routes_.size());
  UniqueFd event(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event.valid()) return std::unexpected(errno_error("eventfd for an MSI route", errno));

  // KVM_SET_GSI_ROUTING replaces the whole table: the PC routes, every MSI route so far,
  // and the new one.
  std::vector<kvm_irq_routing_entry> table = base_routes_;
  auto msi_entry = [](uint32_t entry_gsi, uint64_t entry_address, uint32_t entry_data) {
    kvm_irq_routing_entry entry{};
    entry.gsi = entry_gsi;
    entry.type = KVM_IRQ_ROUTING_MSI;
    entry.u.msi.address_lo = static_cast<uint32_t>(entry_address);
    entry.u.msi.address_hi = static_cast<uint32_t>(entry_address >> 32);
    entry.u.msi.data = entry_data;
    return entry;
  };
  for (const auto& [message, route] : routes_) table.push_back(msi_entry(route.gsi, message.first, message.second));
  table.push_back(msi_entry(gsi, address, data));
  if (auto r = vm_.set_gsi_routing(table); !r) return std::unexpected(r.error());
  if (auto r = vm_.register_irqfd(event.get(), gsi); !r) return std::unexpected(r.error());
  int fd = event.get();
  routes_.emplace(key, Route{gsi, std::move(event)});
  return fd;
}

Result<void> MsiRoutes::prepare(uint64_t address, uint32_t data) {
  std::lock_guard lock(mutex_);
  auto fd = route_locked(address, data);
  if (!fd) return std::unexpected(fd.error());
  return {};
}

void MsiRoutes::deliver(uint64_t address, uint32_t data) {
  int fd = -1;
  {
    std::lock_guard lock(mutex_);
    auto routed = route_locked(address, data);
    if (!routed) {
      spdlog::warn("MSI {:#x}/{:#x}: {}; using KVM_SIGNAL_MSI", address, data, routed.error().message());
    } else {
      fd = *routed;
    }
  }
  if (fd >= 0) {
    uint64_t one = 1;
    if (::write(fd, &one, sizeof(one)) == sizeof(one) || errno == EAGAIN) return;
    spdlog::warn("MSI irqfd write: {}; using KVM_SIGNAL_MSI", std::strerror(errno));
  }
  if (auto r = vm_.signal_msi(address, data); !r) spdlog::warn("{}", r.error().message());
}

}  // namespace skiff
