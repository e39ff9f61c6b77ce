// SPDX-License-Identifier: Apache-2.0
// The vCPU state seam against real KVM VMs: registers, FPU/XSAVE, LAPIC, MSRs, events and
// MP state put into one VM's vCPU, saved, carried through the encoded form and restored
// into a second VM built the same way read back the same; a vCPU stopped between two port
// writes of a tiny guest program continues in the second VM to the same next exit; bad
// blobs are refused.
#include <linux/kvm.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "arch/x86_64/irqchip_state.h"
#include "arch/x86_64/vcpu_setup.h"
#include "arch/x86_64/vcpu_state.h"
#include "kvm_machine.h"

namespace skiff::test {
namespace {

constexpr uint32_t kMsrTscAux = 0xc0000103;

// Local APIC register offsets (Intel SDM Vol. 3A, table 11-1).
constexpr size_t kApicTpr = 0x80;
constexpr size_t kApicSvr = 0xf0;
constexpr size_t kApicLvtTimer = 0x320;
constexpr size_t kApicTimerDivide = 0x3e0;


bool listed(std::span<const uint32_t> list, uint32_t index) {
  return std::find(list.begin(), list.end(), index) != list.end();
}

using VcpuStateTest = KvmMachineTest;

TEST_F(VcpuStateTest, CarriesOverToASecondVm) {
  Machine first = machine();
  ASSERT_TRUE(first.vcpu);
  kvm_regs boot_regs{};
  ASSERT_TRUE(enter_long_mode(first, &boot_regs));

  // General registers: every one distinct.
  kvm_regs regs = boot_regs;
  __u64* gprs[] = {&regs.rax, &regs.rbx, &regs.rcx, &regs.rdx, &regs.rsi, &regs.rdi, &regs.rbp,
                      &regs.r8,  &regs.r9,  &regs.r10, &regs.r11, &regs.r12, &regs.r13, &regs.r14, &regs.r15};
  for (size_t i = 0; i < std::size(gprs); ++i) *gprs[i] = 0x1111111100000000ull * (i + 1) + i;
  regs.rsp = 0x8000;
  regs.rip = kProgramAddr + 0x40;
  regs.rflags = 0x2 | 0x40 | 0x4 | 0x1;  // ZF, PF, CF
  ASSERT_TRUE(first.vcpu->set_regs(regs));

  // FPU/SSE: an XMM register and the x87 control word.
  auto fpu = first.vcpu->get_fpu();
  ASSERT_TRUE(fpu);
  for (int i = 0; i < 16; ++i) fpu->xmm[1][i] = static_cast<uint8_t>(0xa0 + i);
  fpu->fcw = 0x27f;
  ASSERT_TRUE(first.vcpu->set_fpu(*fpu));

  // MSRs the guest kernel programs at boot.
  std::vector<std::pair<uint32_t, uint64_t>> msrs = {
      {x86::kMsrStar, 0x0023001000000000ull},
      {x86::kMsrLstar, 0xffffffff81a00000ull},
      {x86::kMsrSyscallMask, 0x47700},
      {x86::kMsrKernelGsBase, 0xffff888003c00000ull},
  };
  if (listed(msr_list_, kMsrTscAux)) msrs.push_back({kMsrTscAux, 0x1234});
  auto set = first.vcpu->set_msrs(msrs);
  ASSERT_TRUE(set);
  ASSERT_EQ(*set, msrs.size());

  // LAPIC: enabled, TPR, a masked periodic timer LVT, a divider.
  auto lapic = first.vcpu->get_lapic();
  ASSERT_TRUE(lapic);
  x86::write_apic_register(*lapic, kApicSvr, 0x1ff);
  x86::write_apic_register(*lapic, kApicTpr, 0x20);
  x86::write_apic_register(*lapic, kApicLvtTimer, (1u << 17) | (1u << 16) | 0xec);
  x86::write_apic_register(*lapic, kApicTimerDivide, 0x3);
  ASSERT_TRUE(first.vcpu->set_lapic(*lapic));

  // Debug registers, NMI masking and an interrupt shadow, and a halted vCPU.
  auto debugregs = first.vcpu->get_debugregs();
  ASSERT_TRUE(debugregs);
  for (int i = 0; i < 4; ++i) debugregs->db[i] = 0x10000 + 0x1000 * static_cast<uint64_t>(i);
  ASSERT_TRUE(first.vcpu->set_debugregs(*debugregs));
  auto events = first.vcpu->get_vcpu_events();
  ASSERT_TRUE(events);
  events->nmi.masked = 1;
  events->flags = KVM_VCPUEVENT_VALID_SHADOW;
  events->interrupt.shadow = 1;  // KVM_X86_SHADOW_INT_MOV_SS
  ASSERT_TRUE(first.vcpu->set_vcpu_events(*events));
  ASSERT_TRUE(first.vcpu->set_mp_state(kvm_mp_state{KVM_MP_STATE_HALTED}));

  auto saved = x86::save_vcpu_state(*first.vcpu, msr_list_);
  ASSERT_TRUE(saved) << saved.error().message();
  EXPECT_EQ(saved->kind(), "vcpu");
  EXPECT_EQ(saved->version(), 1u);
  const state::StateBlob blob = through_bytes(*saved);

  Machine second = machine();
  ASSERT_TRUE(second.vcpu);
  auto restored = x86::restore_vcpu_state(*second.vcpu, blob);
  ASSERT_TRUE(restored) << restored.error().message();

  // Everything reads back as the first VM reports it.
  auto regs_a = first.vcpu->get_regs();
  auto regs_b = second.vcpu->get_regs();
  ASSERT_TRUE(regs_a && regs_b);
  EXPECT_TRUE(same_bytes(*regs_a, *regs_b));
  EXPECT_EQ(regs_b->rip, kProgramAddr + 0x40);
  EXPECT_EQ(regs_b->r15, regs.r15);
  EXPECT_EQ(regs_b->rflags, regs.rflags);

  auto sregs_a = first.vcpu->get_sregs();
  auto sregs_b = second.vcpu->get_sregs();
  ASSERT_TRUE(sregs_a && sregs_b);
  EXPECT_EQ(sregs_b->cr0, sregs_a->cr0);
  EXPECT_EQ(sregs_b->cr3, sregs_a->cr3);
  EXPECT_EQ(sregs_b->cr4, sregs_a->cr4);
  EXPECT_EQ(sregs_b->efer, sregs_a->efer);
  EXPECT_NE(sregs_b->efer & x86::kEferLma, 0u) << "long mode";
  EXPECT_EQ(sregs_b->apic_base, sregs_a->apic_base);
  EXPECT_EQ(sregs_b->cs.selector, x86::kBootCode64Selector);
  EXPECT_EQ(sregs_b->cs.l, 1);
  EXPECT_EQ(sregs_b->gdt.base, sregs_a->gdt.base);
  EXPECT_TRUE(same_bytes(*sregs_a, *sregs_b));

  auto fpu_b = second.vcpu->get_fpu();
  ASSERT_TRUE(fpu_b);
  EXPECT_EQ(fpu_b->fcw, 0x27f);
  EXPECT_EQ(fpu_b->xmm[1][15], 0xaf);
  auto xsave_a = first.vcpu->get_xsave();
  auto xsave_b = second.vcpu->get_xsave();
  ASSERT_TRUE(xsave_a && xsave_b);
  EXPECT_EQ(*xsave_a, *xsave_b);
  auto xcrs_a = first.vcpu->get_xcrs();
  auto xcrs_b = second.vcpu->get_xcrs();
  ASSERT_TRUE(xcrs_a && xcrs_b);
  EXPECT_TRUE(same_bytes(*xcrs_a, *xcrs_b));

  for (const auto& [index, value] : msrs) EXPECT_EQ(read_msr(*second.vcpu, index), value) << "MSR " << std::hex << index;
  // The TSC resumes from the saved value (it keeps counting from there).
  const uint64_t saved_tsc = [&] {
    auto indexes = blob.u64s("msr_indexes", x86::kMaxVcpuStateMsrs);
    auto values = blob.u64s("msr_values", x86::kMaxVcpuStateMsrs);
    for (size_t i = 0; indexes && values && i < indexes->size(); ++i) {
      if ((*indexes)[i] == x86::kMsrIa32Tsc) return (*values)[i];
    }
    return uint64_t{0};
  }();
  ASSERT_NE(saved_tsc, 0u) << "the TSC is saved";
  const uint64_t tsc_b = read_msr(*second.vcpu, x86::kMsrIa32Tsc);
  EXPECT_GE(tsc_b, saved_tsc);
  EXPECT_LT(tsc_b - saved_tsc, 100'000'000'000ull) << "within a few seconds of the saved TSC";

  auto lapic_a = first.vcpu->get_lapic();
  auto lapic_b = second.vcpu->get_lapic();
  ASSERT_TRUE(lapic_a && lapic_b);
  EXPECT_EQ(x86::read_apic_register(*lapic_b, kApicTpr), 0x20u);
  EXPECT_EQ(x86::read_apic_register(*lapic_b, kApicLvtTimer), (1u << 17) | (1u << 16) | 0xec);
  EXPECT_EQ(x86::read_apic_register(*lapic_b, kApicTimerDivide), 0x3u);
  EXPECT_TRUE(same_bytes(*lapic_a, *lapic_b));

  auto debugregs_b = second.vcpu->get_debugregs();
  ASSERT_TRUE(debugregs_b);
  EXPECT_EQ(debugregs_b->db[3], 0x13000u);
  auto events_a = first.vcpu->get_vcpu_events();
  auto events_b = second.vcpu->get_vcpu_events();
  ASSERT_TRUE(events_a && events_b);
  EXPECT_EQ(events_b->nmi.masked, 1);
  EXPECT_EQ(events_b->interrupt.shadow, events_a->interrupt.shadow);
  EXPECT_TRUE(same_bytes(*events_a, *events_b));
  auto mp_b = second.vcpu->get_mp_state();
  ASSERT_TRUE(mp_b);
  EXPECT_EQ(mp_b->mp_state, static_cast<uint32_t>(KVM_MP_STATE_HALTED));

  // Saving the second vCPU gives the first's blob back, but for the MSRs that count time.
  auto resaved = x86::save_vcpu_state(*second.vcpu, msr_list_);
  ASSERT_TRUE(resaved) << resaved.error().message();
  for (const char* field : {"regs", "sregs", "fpu", "xsave", "xcrs", "lapic", "events", "debugregs"}) {
    EXPECT_EQ(*resaved->bytes(field, 1 << 20), *saved->bytes(field, 1 << 20)) << field;
  }
  EXPECT_EQ(*resaved->u64("mp_state"), *saved->u64("mp_state"));
  const auto indexes = *saved->u64s("msr_indexes", x86::kMaxVcpuStateMsrs);
  const auto values_a = *saved->u64s("msr_values", x86::kMaxVcpuStateMsrs);
  ASSERT_EQ(*resaved->u64s("msr_indexes", x86::kMaxVcpuStateMsrs), indexes);
  const auto values_b = *resaved->u64s("msr_values", x86::kMaxVcpuStateMsrs);
  ASSERT_EQ(values_b.size(), values_a.size());
  std::set<uint64_t> differing;
  for (size_t i = 0; i < indexes.size(); ++i) {
    if (values_a[i] != values_b[i]) differing.insert(indexes[i]);
  }
  // The TSC counts on; every other MSR KVM let us read comes back as saved.
  differing.erase(x86::kMsrIa32Tsc);
  for (uint64_t index : differing) ADD_FAILURE() << "MSR " << std::hex << index << " differs after the restore";
  std::cout << "saved " << indexes.size() << " of " << msr_list_.size() << " listed MSRs, XSAVE area "
            << xsave_a->size() << " bytes\n";
}

// A few instructions in 64-bit mode: two port writes with arithmetic around them.
const std::vector<uint8_t> kProgram = {
    0x48, 0x05, 0x02, 0x00, 0x00, 0x00,  // add rax, 2
    0xe6, 0x10,                          // out 0x10, al
    0x48, 0x83, 0xc0, 0x05,              // add rax, 5
    0x48, 0x89, 0xc3,                    // mov rbx, rax
    0x48, 0xff, 0xc1,                    // inc rcx
    0xe6, 0x11,                          // out 0x11, al
    0xf4,                                // hlt
};

struct PortWrite {
  uint16_t port = 0;
  uint8_t value = 0;
};

// Runs until the next exit and returns it as a port write (KVM_EXIT_IO, out, one byte).
std::optional<PortWrite> run_to_port_write(const KvmVcpu& vcpu) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto ran = vcpu.run();
    EXPECT_TRUE(ran) << ran.error().message();
    if (!ran) return std::nullopt;
    if (!*ran) continue;  // interrupted: enter again
    kvm_run* run = vcpu.run_page();
    EXPECT_EQ(run->exit_reason, static_cast<uint32_t>(KVM_EXIT_IO)) << "exit reason " << run->exit_reason;
    if (run->exit_reason != KVM_EXIT_IO) return std::nullopt;
    EXPECT_EQ(run->io.direction, KVM_EXIT_IO_OUT);
    EXPECT_EQ(run->io.size, 1);
    PortWrite write;
    write.port = run->io.port;
    // SAFETY: data_offset points inside the mapped kvm_run area for an I/O exit.
    write.value = *(reinterpret_cast<const uint8_t*>(run) + run->io.data_offset);
    return write;
  }
  ADD_FAILURE() << "KVM_RUN kept being interrupted";
  return std::nullopt;
}

// api.rst: after KVM_EXIT_IO the instruction is complete only once userspace re-enters
// KVM_RUN; with immediate_exit set, KVM completes it and returns EINTR without running more.
void complete_pending_io(const KvmVcpu& vcpu) {
  vcpu.run_page()->immediate_exit = 1;
  auto ran = vcpu.run();
  vcpu.run_page()->immediate_exit = 0;
  ASSERT_TRUE(ran) << ran.error().message();
  EXPECT_FALSE(*ran) << "immediate_exit returns at once";
}

TEST_F(VcpuStateTest, AVcpuStoppedMidProgramContinuesInASecondVm) {
  Machine first = machine();
  ASSERT_TRUE(first.vcpu);
  ASSERT_TRUE(enter_long_mode(first));
  ASSERT_TRUE(first.memory.write(kProgramAddr, kProgram));
  auto regs = first.vcpu->get_regs();
  ASSERT_TRUE(regs);
  regs->rax = 1;
  regs->rcx = 10;
  ASSERT_TRUE(first.vcpu->set_regs(*regs));

  auto exit = run_to_port_write(*first.vcpu);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->port, 0x10);
  EXPECT_EQ(exit->value, 3);
  complete_pending_io(*first.vcpu);

  auto vcpu_blob = x86::save_vcpu_state(*first.vcpu, msr_list_);
  ASSERT_TRUE(vcpu_blob) << vcpu_blob.error().message();
  auto chip_blob = x86::save_irqchip_state(*first.vm);
  ASSERT_TRUE(chip_blob) << chip_blob.error().message();

  Machine second = machine();
  ASSERT_TRUE(second.vcpu);
  auto ram_a = first.memory.slice(0, kRamSize);
  auto ram_b = second.memory.slice(0, kRamSize);
  ASSERT_TRUE(ram_a && ram_b);
  std::memcpy(ram_b->data(), ram_a->data(), kRamSize);
  auto r = x86::restore_irqchip_state(*second.vm, through_bytes(*chip_blob));
  ASSERT_TRUE(r) << r.error().message();
  r = x86::restore_vcpu_state(*second.vcpu, through_bytes(*vcpu_blob));
  ASSERT_TRUE(r) << r.error().message();

  auto next_a = run_to_port_write(*first.vcpu);
  auto next_b = run_to_port_write(*second.vcpu);
  ASSERT_TRUE(next_a && next_b);
  EXPECT_EQ(next_a->port, 0x11);
  EXPECT_EQ(next_a->value, 8);
  EXPECT_EQ(next_b->port, next_a->port);
  EXPECT_EQ(next_b->value, next_a->value);
  complete_pending_io(*first.vcpu);
  complete_pending_io(*second.vcpu);
  auto regs_a = first.vcpu->get_regs();
  auto regs_b = second.vcpu->get_regs();
  ASSERT_TRUE(regs_a && regs_b);
  EXPECT_EQ(regs_b->rax, 8u);
  EXPECT_EQ(regs_b->rbx, 8u);
  EXPECT_EQ(regs_b->rcx, 11u);
  EXPECT_EQ(regs_b->rip, kProgramAddr + kProgram.size() - 1);
  EXPECT_TRUE(same_bytes(*regs_a, *regs_b));
}

TEST_F(VcpuStateTest, RestoreRefusesBadBlobs) {
  Machine first = machine();
  ASSERT_TRUE(first.vcpu);
  auto saved = x86::save_vcpu_state(*first.vcpu, msr_list_);
  ASSERT_TRUE(saved) << saved.error().message();
  Machine second = machine();
  ASSERT_TRUE(second.vcpu);
  const auto refused = [&](const state::StateBlob& blob, const std::string& needle) {
    auto r = x86::restore_vcpu_state(*second.vcpu, blob);
    if (r) return ::testing::AssertionFailure() << "restore succeeded";
    if (r.error().message().find(needle) == std::string::npos) {
      return ::testing::AssertionFailure() << r.error().message();
    }
    return ::testing::AssertionSuccess();
  };

  EXPECT_TRUE(refused(state::StateBlob("serial", 1), "state of serial where vcpu was expected"));
  EXPECT_TRUE(refused(state::StateBlob("vcpu", 2), "version 2 is newer"));
  state::StateBlob blob = *saved;
  blob.put_bytes("regs", std::vector<uint8_t>(100, 0));
  EXPECT_TRUE(refused(blob, "field \"regs\" holds 100 bytes instead of 144"));
  blob = *saved;
  blob.put("id", 1);
  EXPECT_TRUE(refused(blob, "field \"id\" is 1, but this is vCPU 0"));
  blob = *saved;
  blob.put("mp_state", 7);
  EXPECT_TRUE(refused(blob, "field \"mp_state\" is 7"));
  blob = *saved;
  blob.put_u64s("msr_values", std::vector<uint64_t>{1, 2});
  EXPECT_TRUE(refused(blob, "field \"msr_values\" has 2 values for"));
  blob = *saved;
  blob.put_u64s("msr_indexes", std::vector<uint64_t>(x86::kMaxVcpuStateMsrs + 1, 0x10));
  EXPECT_TRUE(refused(blob, "field \"msr_indexes\" has 4097 items"));
  blob = *saved;
  blob.put_bytes("xsave", std::vector<uint8_t>(second.vcpu->xsave_size() + 1, 0));
  EXPECT_TRUE(refused(blob, "field \"xsave\" holds"));
  blob = *saved;
  blob.put_bytes("xsave", std::vector<uint8_t>(512, 0));
  EXPECT_TRUE(refused(blob, "field \"xsave\" holds 512 bytes, fewer than the 4096"));
  auto events = state::get_struct<kvm_vcpu_events>(*saved, "events");
  ASSERT_TRUE(events);
  events->flags |= 0x80000000u;
  blob = *saved;
  state::put_struct(blob, "events", *events);
  EXPECT_TRUE(refused(blob, "field \"events\" has unknown flags"));

  // The refusals left the vCPU untouched; the real blob still restores.
  auto r = x86::restore_vcpu_state(*second.vcpu, through_bytes(*saved));
  EXPECT_TRUE(r) << r.error().message();
}

TEST_F(VcpuStateTest, RestoreSkipsARefusedMsrUnlessALongModeGuestNeedsIt) {
  Machine first = machine();
  ASSERT_TRUE(first.vcpu);
  auto saved = x86::save_vcpu_state(*first.vcpu, msr_list_);
  ASSERT_TRUE(saved) << saved.error().message();
  auto indexes = *saved->u64s("msr_indexes", x86::kMaxVcpuStateMsrs);
  auto values = *saved->u64s("msr_values", x86::kMaxVcpuStateMsrs);

  // An MSR this KVM does not know, in the middle of the list: a warning, and the MSRs
  // after it are still restored.
  state::StateBlob blob = *saved;
  std::vector<uint64_t> more_indexes = indexes;
  std::vector<uint64_t> more_values = values;
  more_indexes.insert(more_indexes.begin(), 0x4b564dff);
  more_values.insert(more_values.begin(), 1);
  more_indexes.push_back(x86::kMsrKernelGsBase);
  more_values.push_back(0xffff888000001000ull);
  blob.put_u64s("msr_indexes", more_indexes).put_u64s("msr_values", more_values);
  Machine second = machine();
  ASSERT_TRUE(second.vcpu);
  auto r = x86::restore_vcpu_state(*second.vcpu, through_bytes(blob));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(read_msr(*second.vcpu, x86::kMsrKernelGsBase), 0xffff888000001000ull);

  // LSTAR with a non-canonical address: KVM refuses it, and a guest's next system call
  // would go astray, so the restore fails naming it.
  auto lstar = std::find(indexes.begin(), indexes.end(), x86::kMsrLstar);
  ASSERT_NE(lstar, indexes.end());
  values[static_cast<size_t>(lstar - indexes.begin())] = 0x8000000000000000ull;
  blob = *saved;
  blob.put_u64s("msr_values", values);
  Machine third = machine();
  ASSERT_TRUE(third.vcpu);
  r = x86::restore_vcpu_state(*third.vcpu, through_bytes(blob));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("KVM refused to restore MSR 0xc0000082"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace skiff::test
