// SPDX-License-Identifier: Apache-2.0
// <linux/kvm.h> plus C++-safe layouts for the KVM structs that end in a flexible array.
//
// Linux 6.1's uapi headers (Debian 12) declare those arrays with __DECLARE_FLEX_ARRAY, which
// in C++ wraps the array in a struct with an empty member: the empty member takes a byte, so
// sizeof(kvm_cpuid2) is 12 instead of 8, the array starts at the wrong offset, and every
// ioctl number derived from sizeof() is wrong (KVM answers EINVAL or ENOTTY). skiff uses
// these header structs, whose sizes match the C layout the kernel expects, with the entries
// placed right after them, and ioctl numbers computed from them.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace skiff::kvm_uapi {

struct Cpuid2Header {  // struct kvm_cpuid2 without its entries
  uint32_t nent;
  uint32_t padding;
};
struct MsrsHeader {  // struct kvm_msrs without its entries
  uint32_t nmsrs;
  uint32_t pad;
};
struct MsrListHeader {  // struct kvm_msr_list without its indices
  uint32_t nmsrs;
};
struct IrqRoutingHeader {  // struct kvm_irq_routing without its entries
  uint32_t nr;
  uint32_t flags;
};

static_assert(sizeof(Cpuid2Header) == 8 && alignof(kvm_cpuid_entry2) <= 8);
static_assert(sizeof(MsrsHeader) == 8 && alignof(kvm_msr_entry) == 8);
static_assert(sizeof(MsrListHeader) == 4);
static_assert(sizeof(IrqRoutingHeader) == 8 && alignof(kvm_irq_routing_entry) <= 8);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);

}  // namespace skiff::kvm_uapi
