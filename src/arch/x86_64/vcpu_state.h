// SPDX-License-Identifier: Apache-2.0
// One x86-64 vCPU's architectural state as a StateBlob: kind "vcpu", version 1.
//
// Fields:
//   id          the vCPU id (its APIC id); restore refuses a blob of another vCPU
//   regs        struct kvm_regs         (KVM_GET_REGS)
//   sregs       struct kvm_sregs        (KVM_GET_SREGS: segments, CRs, EFER, APIC base)
//   fpu         struct kvm_fpu          (KVM_GET_FPU: x87 and SSE, the legacy subset)
//   xsave       the XSAVE area          (KVM_GET_XSAVE2 / KVM_GET_XSAVE; 4096 bytes or more)
//   xcrs        struct kvm_xcrs         (KVM_GET_XCRS: XCR0)
//   lapic       struct kvm_lapic_state  (KVM_GET_LAPIC: the in-kernel local APIC's registers)
//   events      struct kvm_vcpu_events  (KVM_GET_VCPU_EVENTS: pending exception, interrupt,
//                                        NMI and SMI, interrupt shadow, SIPI vector)
//   mp_state    KVM_MP_STATE_* value    (KVM_GET_MP_STATE: runnable, halted, waiting for SIPI)
//   debugregs   struct kvm_debugregs    (KVM_GET_DEBUGREGS: DR0-3, DR6, DR7)
//   msr_indexes, msr_values  two parallel lists: every MSR of the given index list (the
//               KVM_GET_MSR_INDEX_LIST answer) that KVM could read
//
// The KVM structs are stored as byte strings of exactly their size: their layouts and
// sizes are part of KVM's ABI (arch/x86/include/uapi/asm/kvm.h), the same on every host
// of this architecture. Their contents are checked by KVM when they are set (it treats
// them as untrusted userspace input); restore checks sizes, the fields whose meaning it
// relies on, and the id.
//
// The vCPU must not be running (its thread parked outside KVM_RUN) during either call, and
// before a save the exit KVM_RUN last returned must be complete: "For KVM_EXIT_IO,
// KVM_EXIT_MMIO, ... the corresponding operations are complete (and guest state is
// consistent) only after userspace has re-entered the kernel with KVM_RUN" (api.rst,
// KVM_RUN); re-entering with kvm_run.immediate_exit set completes it without running on.
// Restore expects a vCPU configured as the VMM configures one (configure_vcpu: the same
// CPUID, since KVM checks XCR0 and some MSRs against it) that has not run yet.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "kvm/kvm_vcpu.h"
#include "skiff/error.h"
#include "state/state_blob.h"

namespace skiff::x86 {

inline constexpr std::string_view kVcpuStateKind = "vcpu";
inline constexpr uint32_t kVcpuStateVersion = 1;
// Bound on the MSR lists of a blob (KVM's index list holds a few hundred at most).
inline constexpr size_t kMaxVcpuStateMsrs = 4096;

// Reads the vCPU's state. MSRs that KVM lists but cannot read on this host are left out
// (logged at debug level).
Result<state::StateBlob> save_vcpu_state(const KvmVcpu& vcpu, std::span<const uint32_t> msr_indexes);

// Checks the whole blob, then writes the state into `vcpu`. An MSR that KVM refuses is
// logged as a warning (once per MSR index per process) and skipped, except the TSC and the
// syscall/swapgs MSRs a long-mode guest cannot run correctly without, which are errors.
Result<void> restore_vcpu_state(const KvmVcpu& vcpu, const state::StateBlob& blob);

}  // namespace skiff::x86
