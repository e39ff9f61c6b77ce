// SPDX-License-Identifier: Apache-2.0
// The "pc-irqchip" state seam against real KVM VMs: PIC, IOAPIC, PIT and kvmclock state
// put into one VM, saved, carried through the encoded form and restored into a second VM
// read back the same; bad blobs are refused.
#include <linux/kvm.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "arch/x86_64/irqchip_state.h"
#include "kvm_machine.h"

namespace skiff::test {
namespace {

using IrqchipStateTest = KvmMachineTest;

TEST_F(IrqchipStateTest, PicIoapicPitAndClockCarryOverToASecondVm) {
  Machine first = machine();
  ASSERT_TRUE(first.vm);

  auto ioapic = first.vm->get_irqchip(KVM_IRQCHIP_IOAPIC);
  ASSERT_TRUE(ioapic);
  EXPECT_EQ(ioapic->chip.ioapic.base_address, x86::kIoapicAddr);
  ioapic->chip.ioapic.redirtbl[4].fields.vector = 0x34;
  ioapic->chip.ioapic.redirtbl[4].fields.mask = 0;
  ioapic->chip.ioapic.redirtbl[4].fields.dest_id = 0;
  ioapic->chip.ioapic.redirtbl[9].fields.vector = 0x39;
  ioapic->chip.ioapic.redirtbl[9].fields.trig_mode = 1;  // level, as the SCI
  ASSERT_TRUE(first.vm->set_irqchip(*ioapic));
  auto master = first.vm->get_irqchip(KVM_IRQCHIP_PIC_MASTER);
  auto slave = first.vm->get_irqchip(KVM_IRQCHIP_PIC_SLAVE);
  ASSERT_TRUE(master && slave);
  master->chip.pic.imr = 0xb8;
  master->chip.pic.irq_base = 0x20;
  slave->chip.pic.imr = 0x5a;
  slave->chip.pic.irq_base = 0x28;
  ASSERT_TRUE(first.vm->set_irqchip(*master));
  ASSERT_TRUE(first.vm->set_irqchip(*slave));
  auto pit = first.vm->get_pit2();
  ASSERT_TRUE(pit);
  pit->channels[0].count = 0x1234;
  pit->channels[0].mode = 2;
  pit->channels[0].rw_mode = 3;  // low byte, then high byte
  pit->channels[0].gate = 1;
  ASSERT_TRUE(first.vm->set_pit2(*pit));
  auto clock_a = first.vm->get_clock();
  ASSERT_TRUE(clock_a);

  auto saved = x86::save_irqchip_state(*first.vm);
  ASSERT_TRUE(saved) << saved.error().message();
  EXPECT_EQ(saved->kind(), "pc-irqchip");
  EXPECT_EQ(saved->version(), 1u);
  const uint64_t saved_clock = *saved->u64("clock_ns");
  EXPECT_GE(saved_clock, clock_a->clock);

  Machine second = machine();
  ASSERT_TRUE(second.vm);
  auto restored = x86::restore_irqchip_state(*second.vm, through_bytes(*saved));
  ASSERT_TRUE(restored) << restored.error().message();

  for (uint32_t chip : {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC}) {
    auto a = first.vm->get_irqchip(chip);
    auto b = second.vm->get_irqchip(chip);
    ASSERT_TRUE(a && b);
    if (chip == KVM_IRQCHIP_PIC_MASTER) {
      // The PIT runs on in both VMs: each tick latches IRQ 0 in the master's IRR (edge
      // triggered, it stays until acknowledged), whenever it comes.
      a->chip.pic.irr &= 0xfe;
      b->chip.pic.irr &= 0xfe;
    }
    EXPECT_TRUE(same_bytes(*a, *b)) << "chip " << chip << [&] {
      std::string diff;
      const auto* pa = reinterpret_cast<const uint8_t*>(&*a);
      const auto* pb = reinterpret_cast<const uint8_t*>(&*b);
      for (size_t i = 0; i < sizeof(*a); ++i) {
        if (pa[i] != pb[i]) diff += fmt::format(" [{}] {:#x}/{:#x}", i, pa[i], pb[i]);
      }
      return diff;
    }();
  }
  auto ioapic_b = second.vm->get_irqchip(KVM_IRQCHIP_IOAPIC);
  ASSERT_TRUE(ioapic_b);
  EXPECT_EQ(ioapic_b->chip.ioapic.redirtbl[4].fields.vector, 0x34);
  EXPECT_EQ(ioapic_b->chip.ioapic.redirtbl[4].fields.mask, 0);
  auto master_b = second.vm->get_irqchip(KVM_IRQCHIP_PIC_MASTER);
  ASSERT_TRUE(master_b);
  EXPECT_EQ(master_b->chip.pic.imr, 0xb8);

  auto pit_a = first.vm->get_pit2();
  auto pit_b = second.vm->get_pit2();
  ASSERT_TRUE(pit_a && pit_b);
  EXPECT_EQ(pit_b->flags, pit_a->flags);
  for (int i = 0; i < 3; ++i) {
    // count_load_time is the host time of the last load: KVM_SET_PIT2 reloads the count.
    const kvm_pit_channel_state& ca = pit_a->channels[i];
    const kvm_pit_channel_state& cb = pit_b->channels[i];
    EXPECT_EQ(cb.count, ca.count) << "channel " << i;
    EXPECT_EQ(cb.mode, ca.mode) << "channel " << i;
    EXPECT_EQ(cb.rw_mode, ca.rw_mode) << "channel " << i;
    EXPECT_EQ(cb.read_state, ca.read_state) << "channel " << i;
    EXPECT_EQ(cb.write_state, ca.write_state) << "channel " << i;
    EXPECT_EQ(cb.gate, ca.gate) << "channel " << i;
    EXPECT_EQ(cb.bcd, ca.bcd) << "channel " << i;
  }
  EXPECT_EQ(pit_b->channels[0].count, 0x1234u);

  // kvmclock resumes at the saved value and runs on from there.
  auto clock_b = second.vm->get_clock();
  ASSERT_TRUE(clock_b);
  EXPECT_GE(clock_b->clock, saved_clock);
  EXPECT_LT(clock_b->clock - saved_clock, 10'000'000'000ull) << "within seconds of the saved clock";
}

TEST_F(IrqchipStateTest, RestoreRefusesBadBlobs) {
  Machine first = machine();
  ASSERT_TRUE(first.vm);
  auto saved = x86::save_irqchip_state(*first.vm);
  ASSERT_TRUE(saved) << saved.error().message();
  const auto refused = [&](const state::StateBlob& blob, const std::string& needle) {
    auto r = x86::restore_irqchip_state(*first.vm, blob);
    if (r) return ::testing::AssertionFailure() << "restore succeeded";
    if (r.error().message().find(needle) == std::string::npos) {
      return ::testing::AssertionFailure() << r.error().message();
    }
    return ::testing::AssertionSuccess();
  };
  EXPECT_TRUE(refused(state::StateBlob("vcpu", 1), "state of vcpu where pc-irqchip was expected"));
  EXPECT_TRUE(refused(state::StateBlob("pc-irqchip", 2), "version 2 is newer"));
  state::StateBlob blob = *saved;
  blob.put_bytes("ioapic", std::vector<uint8_t>(200, 0));
  EXPECT_TRUE(refused(blob, "field \"ioapic\" holds 200 bytes instead of 216"));
  auto ioapic = state::get_struct<kvm_ioapic_state>(*saved, "ioapic");
  ASSERT_TRUE(ioapic);
  ioapic->base_address = 0xfed00000;
  blob = *saved;
  state::put_struct(blob, "ioapic", *ioapic);
  EXPECT_TRUE(refused(blob, "field \"ioapic\" has base address 0xfed00000"));
  auto pit = state::get_struct<kvm_pit_state2>(*saved, "pit");
  ASSERT_TRUE(pit);
  pit->flags = 0x100;
  blob = *saved;
  state::put_struct(blob, "pit", *pit);
  EXPECT_TRUE(refused(blob, "field \"pit\" has unknown flags 0x100"));
  blob = *saved;
  blob.put_string("clock_ns", "soon");
  EXPECT_TRUE(refused(blob, "field \"clock_ns\" is not an unsigned integer"));
  EXPECT_TRUE(x86::restore_irqchip_state(*first.vm, through_bytes(*saved)));
}

}  // namespace
}  // namespace skiff::test
