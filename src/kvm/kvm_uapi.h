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

#include <cstddef>
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

// struct kvm_xsave without its flexible `extra` array (in C++ sizeof(kvm_xsave) is 4100,
// which makes linux/kvm.h's KVM_GET_XSAVE, KVM_SET_XSAVE and KVM_GET_XSAVE2 numbers wrong):
// the 4096-byte legacy area the kernel's ioctl numbers are defined with.
// KVM_GET_XSAVE2 and KVM_SET_XSAVE transfer KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) bytes
// (at least 4096) from the start of this area (Documentation/virt/kvm/api.rst).
struct XsaveArea {
  uint32_t region[1024];
};
inline constexpr size_t kXsaveLegacySize = sizeof(XsaveArea);

static_assert(sizeof(Cpuid2Header) == 8 && alignof(kvm_cpuid_entry2) <= 8);
static_assert(sizeof(MsrsHeader) == 8 && alignof(kvm_msr_entry) == 8);
static_assert(sizeof(MsrListHeader) == 4);
static_assert(sizeof(IrqRoutingHeader) == 8 && alignof(kvm_irq_routing_entry) <= 8);
static_assert(sizeof(XsaveArea) == 4096);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveArea);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveArea);
inline constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, XsaveArea);

}  // namespace skiff::kvm_uapi
