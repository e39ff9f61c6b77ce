// SPDX-License-Identifier: Apache-2.0
// Per-vCPU architectural state skiff sets before the first KVM_RUN: CPUID, boot MSRs, FPU
// and the local APIC's LINT pins.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kvm/kvm_vcpu.h"
#include "skiff/error.h"

namespace skiff::x86 {

// MSR numbers (Intel SDM Vol. 4).
inline constexpr uint32_t kMsrIa32Tsc = 0x10;
inline constexpr uint32_t kMsrIa32SysenterCs = 0x174;
inline constexpr uint32_t kMsrIa32SysenterEsp = 0x175;
inline constexpr uint32_t kMsrIa32SysenterEip = 0x176;
inline constexpr uint32_t kMsrIa32MiscEnable = 0x1a0;
inline constexpr uint32_t kMsrMtrrDefType = 0x2ff;
inline constexpr uint32_t kMsrStar = 0xc0000081;
inline constexpr uint32_t kMsrLstar = 0xc0000082;
inline constexpr uint32_t kMsrCstar = 0xc0000083;
inline constexpr uint32_t kMsrSyscallMask = 0xc0000084;
inline constexpr uint32_t kMsrKernelGsBase = 0xc0000102;

// The boot values of the MSRs KVM lets us set, from those in `supported` (the
// KVM_GET_MSR_INDEX_LIST answer). MSRs outside that list are left alone.
std::vector<std::pair<uint32_t, uint64_t>> boot_msrs(std::span<const uint32_t> supported);

// Sets CPUID, MSRs, FPU and LAPIC LINT0 (ExtINT) / LINT1 (NMI) on one vCPU.
Result<void> configure_vcpu(const KvmVcpu& vcpu, std::span<const kvm_cpuid_entry2> cpuid,
                            std::span<const uint32_t> supported_msrs);

// A 32-bit register of a LAPIC state page at `offset` (Intel SDM Vol. 3A, table 11-1).
uint32_t read_apic_register(const kvm_lapic_state& lapic, size_t offset);
void write_apic_register(kvm_lapic_state& lapic, size_t offset, uint32_t value);

}  // namespace skiff::x86
