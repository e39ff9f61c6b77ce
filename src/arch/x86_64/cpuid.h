// SPDX-License-Identifier: Apache-2.0
// The CPUID table each vCPU sees: what KVM supports, with this vCPU's APIC id, the VM's
// topology (one socket, one thread per core, `vcpu_count` cores) and the hypervisor bit.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

namespace skiff::x86 {

std::vector<kvm_cpuid_entry2> build_vcpu_cpuid(std::span<const kvm_cpuid_entry2> supported,
                                                uint32_t vcpu_index, uint32_t vcpu_count);

// Bits needed to hold ids 0..count-1 (the x2APIC topology shift): 0 for 1, 1 for 2, 2 for 3..4.
uint32_t topology_shift(uint32_t count);

}  // namespace skiff::x86
