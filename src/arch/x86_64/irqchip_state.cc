// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/irqchip_state.h"


#include <fmt/format.h>

#include "arch/x86_64/layout.h"
#include "state/field_checks.h"

namespace skiff::x86 {
namespace {

// The PIT flags KVM_GET_PIT2 reports and KVM_SET_PIT2 understands
// (arch/x86/include/uapi/asm/kvm.h).
constexpr uint32_t kKnownPitFlags = KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON;

Result<kvm_pic_state> get_pic(const KvmVm& vm, uint32_t chip_id) {
  auto chip = vm.get_irqchip(chip_id);
  if (!chip) return std::unexpected(chip.error());
  return chip->chip.pic;
}

}  // namespace

Result<state::StateBlob> save_irqchip_state(const KvmVm& vm) {
  auto pic_master = get_pic(vm, KVM_IRQCHIP_PIC_MASTER);
  auto pic_slave = get_pic(vm, KVM_IRQCHIP_PIC_SLAVE);
  auto ioapic = vm.get_irqchip(KVM_IRQCHIP_IOAPIC);
  auto pit = vm.get_pit2();
  auto clock = vm.get_clock();
  if (auto error = state::first_error(pic_master, pic_slave, ioapic, pit, clock)) {
    return std::unexpected(error->with_context("saving the in-kernel PIC, IOAPIC, PIT and clock"));
  }
  state::StateBlob blob(kIrqchipStateKind, kIrqchipStateVersion);
  state::put_struct(blob, "pic_master", *pic_master);
  state::put_struct(blob, "pic_slave", *pic_slave);
  state::put_struct(blob, "ioapic", ioapic->chip.ioapic);
  state::put_struct(blob, "pit", *pit);
  blob.put("clock_ns", clock->clock);
  return blob;
}

Result<void> restore_irqchip_state(const KvmVm& vm, const state::StateBlob& blob) {
  if (auto r = blob.expect(kIrqchipStateKind, kIrqchipStateVersion); !r) return r;
  const auto pic_master = state::get_struct<kvm_pic_state>(blob, "pic_master");
  const auto pic_slave = state::get_struct<kvm_pic_state>(blob, "pic_slave");
  const auto ioapic = state::get_struct<kvm_ioapic_state>(blob, "ioapic");
  const auto pit = state::get_struct<kvm_pit_state2>(blob, "pit");
  const auto clock_ns = blob.u64("clock_ns");
  if (auto error = state::first_error(pic_master, pic_slave, ioapic, pit, clock_ns)) return std::unexpected(*error);
  // KVM's IOAPIC sits at the architectural default and a guest cannot move it; KVM_SET_IRQCHIP
  // would take any base, and the guest's IOAPIC would vanish from where the MADT says it is.
  if (ioapic->base_address != kIoapicAddr) {
    return std::unexpected(state::field_error(
        blob, "ioapic", fmt::format("has base address {:#x}, not {:#x}", ioapic->base_address, kIoapicAddr)));
  }
  if ((pit->flags & ~kKnownPitFlags) != 0) {
    return std::unexpected(state::field_error(blob, "pit", fmt::format("has unknown flags {:#x}", pit->flags)));
  }

  kvm_irqchip master{};
  master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  master.chip.pic = *pic_master;
  kvm_irqchip slave{};
  slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  slave.chip.pic = *pic_slave;
  kvm_irqchip io{};
  io.chip_id = KVM_IRQCHIP_IOAPIC;
  io.chip.ioapic = *ioapic;
  // Flags 0: see the header on why KVM_CLOCK_REALTIME is not used.
  kvm_clock_data clock{};
  clock.clock = *clock_ns;

  const auto context = [](const Error& error) {
    return std::unexpected(error.with_context("restoring the in-kernel PIC, IOAPIC, PIT and clock"));
  };
  if (auto r = vm.set_irqchip(master); !r) return context(r.error());
  if (auto r = vm.set_irqchip(slave); !r) return context(r.error());
  if (auto r = vm.set_irqchip(io); !r) return context(r.error());
  if (auto r = vm.set_pit2(*pit); !r) return context(r.error());
  if (auto r = vm.set_clock(clock); !r) return context(r.error());
  return {};
}

}  // namespace skiff::x86
