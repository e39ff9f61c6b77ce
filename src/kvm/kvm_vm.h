// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <span>

#include "common/unique_fd.h"
#include "kvm/kvm_vcpu.h"
#include "skiff/error.h"

namespace skiff {

// A VM file descriptor and the VM-wide ioctls skiff uses.
class KvmVm {
 public:
  KvmVm(UniqueFd fd, int vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}
  KvmVm(KvmVm&& other) noexcept = default;
  KvmVm& operator=(KvmVm&& other) noexcept = default;
  KvmVm(const KvmVm&) = delete;
  KvmVm& operator=(const KvmVm&) = delete;
  ~KvmVm();

  // With `enabled`, the destructor leaves KVM's teardown of the VM to a short-lived orphaned
  // process (close_vm_fd_in_background) instead of waiting for it: for a process that exits
  // once the VM is gone (VmOptions::background_kvm_teardown).
  void set_background_close(bool enabled) { background_close_ = enabled; }

  int fd() const { return fd_.get(); }

  // KVM_CHECK_EXTENSION on the VM: 0 when absent, otherwise a capability-specific value
  // (some capabilities, e.g. KVM_CAP_XSAVE2, answer for this VM only when asked here).
  int check_extension(int capability) const;

  Result<void> set_tss_address(uint64_t gpa) const;
  Result<void> set_identity_map_address(uint64_t gpa) const;
  Result<void> create_irqchip() const;
  Result<void> create_pit2() const;
  Result<void> set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                                      uint32_t flags = 0) const;
  // Sets the level of an in-kernel interrupt controller input (KVM_IRQ_LINE).
  Result<void> set_irq_line(uint32_t irq, bool level) const;
  // Replaces the whole GSI routing table (KVM_SET_GSI_ROUTING).
  Result<void> set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) const;
  Result<void> register_irqfd(int event_fd, uint32_t gsi, int resample_fd = -1) const;
  Result<void> unregister_irqfd(int event_fd, uint32_t gsi) const;
  Result<void> register_ioeventfd(int event_fd, uint64_t address, uint32_t length, bool pio,
                                  std::optional<uint64_t> datamatch = std::nullopt) const;
  Result<void> unregister_ioeventfd(int event_fd, uint64_t address, uint32_t length, bool pio,
                                    std::optional<uint64_t> datamatch = std::nullopt) const;
  Result<void> signal_msi(uint64_t address, uint32_t data) const;

  // State of the in-kernel devices (after create_irqchip / create_pit2).
  // `chip_id` is KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE or KVM_IRQCHIP_IOAPIC.
  Result<kvm_irqchip> get_irqchip(uint32_t chip_id) const;
  Result<void> set_irqchip(const kvm_irqchip& chip) const;
  Result<kvm_pit_state2> get_pit2() const;
  Result<void> set_pit2(const kvm_pit_state2& pit) const;
  // The kvmclock base of the VM (nanoseconds; KVM_GET_CLOCK / KVM_SET_CLOCK).
  Result<kvm_clock_data> get_clock() const;
  Result<void> set_clock(const kvm_clock_data& clock) const;

  Result<KvmVcpu> create_vcpu(uint32_t id) const;

 private:
  UniqueFd fd_;
  int vcpu_mmap_size_;
  bool background_close_ = false;
};

}  // namespace skiff
