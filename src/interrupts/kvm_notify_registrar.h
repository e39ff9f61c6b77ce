// SPDX-License-Identifier: Apache-2.0
// The other direction of kvm_irqfd_line.h: a guest's queue-notify write becomes a KVM
// ioeventfd, so it wakes the device's worker thread without an exit to user space.
#pragma once

#include <spdlog/spdlog.h>

#include "kvm/kvm_vm.h"
#include "virtio/transport/notify_registrar.h"

namespace skiff {

// Queue notifications as KVM ioeventfds on the MMIO bus.
class KvmNotifyRegistrar : public virtio::NotifyRegistrar {
 public:
  explicit KvmNotifyRegistrar(const KvmVm& vm) : vm_(vm) {}
  Result<void> add(int event_fd, uint64_t address, uint32_t length, std::optional<uint64_t> datamatch) override {
    return vm_.register_ioeventfd(event_fd, address, length, /*pio=*/false, datamatch);
  }
  void remove(int event_fd, uint64_t address, uint32_t length, std::optional<uint64_t> datamatch) override {
    if (auto r = vm_.unregister_ioeventfd(event_fd, address, length, false, datamatch); !r) {
      spdlog::warn("{}", r.error().message());
    }
  }

 private:
  const KvmVm& vm_;
};

}  // namespace skiff
