// SPDX-License-Identifier: Apache-2.0
// The VM-wide state of KVM's in-kernel PC devices as one StateBlob: kind "pc-irqchip",
// version 1, for a VM built with create_irqchip() and create_pit2().
//
// Fields:
//   pic_master  struct kvm_pic_state     (KVM_GET_IRQCHIP, chip KVM_IRQCHIP_PIC_MASTER)
//   pic_slave   struct kvm_pic_state     (KVM_GET_IRQCHIP, chip KVM_IRQCHIP_PIC_SLAVE)
//   ioapic      struct kvm_ioapic_state  (KVM_GET_IRQCHIP, chip KVM_IRQCHIP_IOAPIC)
//   pit         struct kvm_pit_state2    (KVM_GET_PIT2: three channels and the flags)
//   clock_ns    the kvmclock value       (KVM_GET_CLOCK's `clock`, nanoseconds)
//
// The chip states are stored without kvm_irqchip's chip_id and padding (the field name
// says which chip), each as a byte string of exactly its struct's size: the sizes and
// layouts are KVM's ABI (arch/x86/include/uapi/asm/kvm.h). KVM checks their contents
// itself when they are set; restore checks sizes and the fields it relies on.
//
// The clock: restore issues KVM_SET_CLOCK with the saved value and no flags, so kvmclock
// resumes exactly where it stood when saved; the guest sees no time pass while it was not
// running (its monotonic clocks continue, its wall clock is then behind by the pause and
// catches up by NTP or the guest's own means). KVM_CLOCK_REALTIME is not used: it would
// advance the clock by the host real time elapsed since the save, which is only right
// when the saving and restoring hosts' real-time clocks agree, a choice for live
// migration to make. KVM_CLOCK_TSC_STABLE is an output of KVM_GET_CLOCK only.
//
// Order: restore the legacy devices first (their restore_state re-asserts their IRQ lines)
// and this blob after them, before the first KVM_RUN. A device's line level reaches KVM's
// per-source line state, which KVM_GET_IRQCHIP does not carry and KVM_SET_IRQCHIP keeps;
// whatever the fresh chips latched from it is then replaced by the saved PIC and IOAPIC
// state (KVM_SET_IRQCHIP replays the saved IOAPIC IRR), so no edge is delivered twice. In
// the other order an edge-triggered IOAPIC pin whose interrupt had already been delivered
// would see the re-asserted level as a new edge.
#pragma once

#include <cstdint>
#include <string_view>

#include "kvm/kvm_vm.h"
#include "skiff/error.h"
#include "state/state_blob.h"

namespace skiff::x86 {

inline constexpr std::string_view kIrqchipStateKind = "pc-irqchip";
inline constexpr uint32_t kIrqchipStateVersion = 1;

Result<state::StateBlob> save_irqchip_state(const KvmVm& vm);

// Checks the whole blob, then sets the three chips, the PIT and the clock.
Result<void> restore_irqchip_state(const KvmVm& vm, const state::StateBlob& blob);

}  // namespace skiff::x86
