// SPDX-License-Identifier: Apache-2.0
// An edge-triggered pin behind a KVM irqfd: virtio-mmio devices raise their interrupt from
// their worker thread with one eventfd write, no ioctl and no vCPU involved.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "bus/bus_device.h"
#include "common/unique_fd.h"
#include "kvm/kvm_vm.h"

namespace skiff {

// An edge-triggered interrupt pin driven through a KVM irqfd: a rising edge is one
// eventfd write, which KVM turns into an interrupt without any ioctl on the device thread.
class KvmIrqfdLine : public IrqLine {
 public:
  static Result<std::shared_ptr<KvmIrqfdLine>> create(const KvmVm& vm, uint32_t gsi) {
    UniqueFd event(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!event.valid()) return std::unexpected(errno_error(fmt::format("eventfd for GSI {}", gsi), errno));
    if (auto r = vm.register_irqfd(event.get(), gsi); !r) return std::unexpected(r.error());
    return std::shared_ptr<KvmIrqfdLine>(new KvmIrqfdLine(vm, gsi, std::move(event)));
  }
  ~KvmIrqfdLine() override { (void)vm_.unregister_irqfd(event_.get(), gsi_); }

  void set_level(bool high) override {
    if (!high) return;  // the falling edge is implicit in an irqfd injection
    uint64_t one = 1;
    if (::write(event_.get(), &one, sizeof(one)) != sizeof(one) && errno != EAGAIN) {
      spdlog::error("irqfd for GSI {}: {}", gsi_, std::strerror(errno));
    }
  }

 private:
  KvmIrqfdLine(const KvmVm& vm, uint32_t gsi, UniqueFd event) : vm_(vm), gsi_(gsi), event_(std::move(event)) {}
  const KvmVm& vm_;
  uint32_t gsi_;
  UniqueFd event_;
};

}  // namespace skiff
