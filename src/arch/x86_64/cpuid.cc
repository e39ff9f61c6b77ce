// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/cpuid.h"

namespace skiff::x86 {
namespace {

// CPUID leaf 1 (Intel SDM Vol. 2A, CPUID instruction).
constexpr uint32_t kLeaf1EcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf1EdxHtt = 1u << 28;
// Leaf 0xB/0x1F level types.
constexpr uint32_t kLevelTypeSmt = 1;
constexpr uint32_t kLevelTypeCore = 2;

}  // namespace

uint32_t topology_shift(uint32_t count) {
  uint32_t shift = 0;
  while ((1u << shift) < count) ++shift;
  return shift;
}

std::vector<kvm_cpuid_entry2> build_vcpu_cpuid(std::span<const kvm_cpuid_entry2> supported,
                                                uint32_t vcpu_index, uint32_t vcpu_count) {
  std::vector<kvm_cpuid_entry2> entries(supported.begin(), supported.end());
  const uint32_t apic_id = vcpu_index;
  const uint32_t core_shift = topology_shift(vcpu_count);

  for (kvm_cpuid_entry2& entry : entries) {
    switch (entry.function) {
      case 0x1:
        // EBX[31:24] initial APIC id, EBX[23:16] addressable logical processors per package.
        entry.ebx = (entry.ebx & 0x0000ffffu) | (apic_id << 24) |
                    ((vcpu_count > 1 ? (1u << core_shift) : 1u) << 16);
        entry.ecx |= kLeaf1EcxHypervisor;
        if (vcpu_count > 1) {
          entry.edx |= kLeaf1EdxHtt;
        } else {
          entry.edx &= ~kLeaf1EdxHtt;
        }
        break;
      case 0x4: {
        // Deterministic cache parameters: EAX[31:26] cores per package - 1; EAX[25:14]
        // logical processors sharing the cache - 1 (1 for L1/L2, all cores for L3).
        uint32_t cache_level = (entry.eax >> 5) & 0x7;
        uint32_t sharing = cache_level >= 3 ? (1u << core_shift) - 1 : 0;
        entry.eax = (entry.eax & 0x3fffu) | (sharing << 14) | (((1u << core_shift) - 1) << 26);
        break;
      }
      case 0x6:
        // Thermal and power management is not virtualised: hide it.
        entry.eax = entry.ebx = entry.ecx = entry.edx = 0;
        break;
      case 0xa:
        // No PMU is exposed (KVM reports none on our hosts anyway): keep guests from probing.
        entry.eax = entry.ebx = entry.ecx = entry.edx = 0;
        break;
      case 0xb:
      case 0x1f:
        // Extended topology: level 0 = SMT (one thread per core), level 1 = core.
        entry.edx = apic_id;
        if (entry.index == 0) {
          entry.eax = 0;
          entry.ebx = 1;
          entry.ecx = (kLevelTypeSmt << 8) | 0;
        } else if (entry.index == 1) {
          entry.eax = core_shift;
          entry.ebx = vcpu_count;
          entry.ecx = (kLevelTypeCore << 8) | 1;
        } else {
          entry.eax = entry.ebx = 0;
          entry.ecx = entry.index;  // level type 0: invalid, ends the enumeration
        }
        break;
      case 0x80000008:
        // AMD: ECX[7:0] number of cores - 1, ECX[15:12] APIC id size.
        entry.ecx = (entry.ecx & ~0xf0ffu) | (core_shift << 12) | (vcpu_count - 1);
        break;
      default:
        break;
    }
  }
  return entries;
}

}  // namespace skiff::x86
