// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "skiff/error.h"

namespace skiff {

// A vCPU file descriptor with its shared kvm_run page.
class KvmVcpu {
 public:
  KvmVcpu(UniqueFd fd, kvm_run* run, size_t run_size, uint32_t id)
      : fd_(std::move(fd)), run_(run), run_size_(run_size), id_(id) {}
  KvmVcpu(KvmVcpu&& other) noexcept;
  KvmVcpu& operator=(KvmVcpu&& other) = delete;
  KvmVcpu(const KvmVcpu&) = delete;
  ~KvmVcpu();

  int fd() const { return fd_.get(); }
  uint32_t id() const { return id_; }
  kvm_run* run_page() const { return run_; }

  // KVM_RUN. Returns false (no error) when interrupted by a signal (EINTR) or
  // immediate_exit; true when run_page()->exit_reason is valid.
  Result<bool> run() const;

  Result<kvm_regs> get_regs() const;
  Result<void> set_regs(const kvm_regs& regs) const;
  Result<kvm_sregs> get_sregs() const;
  Result<void> set_sregs(const kvm_sregs& sregs) const;
  Result<kvm_fpu> get_fpu() const;
  Result<void> set_fpu(const kvm_fpu& fpu) const;
  Result<kvm_lapic_state> get_lapic() const;
  Result<void> set_lapic(const kvm_lapic_state& lapic) const;
  Result<void> set_cpuid(std::span<const kvm_cpuid_entry2> entries) const;
  // Sets the MSRs; returns how many KVM accepted (it stops at the first it refuses).
  Result<size_t> set_msrs(std::span<const std::pair<uint32_t, uint64_t>> msrs) const;
  Result<kvm_mp_state> get_mp_state() const;

 private:
  UniqueFd fd_;
  kvm_run* run_;
  size_t run_size_;
  uint32_t id_;
};

}  // namespace skiff
