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
  // `xsave_size` is KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM (0 when KVM lacks the
  // capability): the size of the XSAVE area get_xsave/set_xsave transfer.
  KvmVcpu(UniqueFd fd, kvm_run* run, size_t run_size, uint32_t id, size_t xsave_size = 0)
      : fd_(std::move(fd)), run_(run), run_size_(run_size), id_(id), xsave_size_(xsave_size) {}
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
  // Reads the MSRs `indexes` with one KVM_GET_MSRS. KVM stops at the first MSR it cannot
  // read, so the result holds the values of a prefix of `indexes`, perhaps all of them:
  // result.size() < indexes.size() means indexes[result.size()] could not be read.
  Result<std::vector<std::pair<uint32_t, uint64_t>>> get_msrs(std::span<const uint32_t> indexes) const;
  Result<kvm_mp_state> get_mp_state() const;
  Result<void> set_mp_state(const kvm_mp_state& state) const;
  // The XSAVE area (x87, SSE, AVX, ... in the layout CPUID leaf 0xD gives): xsave_size()
  // bytes, through KVM_GET_XSAVE2 when KVM has KVM_CAP_XSAVE2, else KVM_GET_XSAVE (4096).
  size_t xsave_size() const;
  Result<std::vector<uint8_t>> get_xsave() const;
  // `area` must hold exactly xsave_size() bytes.
  Result<void> set_xsave(std::span<const uint8_t> area) const;
  Result<kvm_xcrs> get_xcrs() const;
  Result<void> set_xcrs(const kvm_xcrs& xcrs) const;
  Result<kvm_vcpu_events> get_vcpu_events() const;
  Result<void> set_vcpu_events(const kvm_vcpu_events& events) const;
  Result<kvm_debugregs> get_debugregs() const;
  Result<void> set_debugregs(const kvm_debugregs& debugregs) const;

 private:
  UniqueFd fd_;
  kvm_run* run_;
  size_t run_size_;
  uint32_t id_;
  size_t xsave_size_;
};

}  // namespace skiff
