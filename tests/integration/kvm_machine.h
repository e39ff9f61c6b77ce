// SPDX-License-Identifier: Apache-2.0
// Tier-2 helpers for the machine-state tests: a KVM VM built the way the VMM builds one,
// with vCPU 0 configured like the VMM's, and small utilities around it.
#pragma once

#include <linux/kvm.h>

#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "arch/x86_64/boot/cpu_boot_state.h"
#include "arch/x86_64/cpuid.h"
#include "arch/x86_64/irq_routing.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/vcpu_setup.h"
#include "guest_runner.h"
#include "kvm/kvm_system.h"
#include "memory/guest_memory.h"
#include "state/state_blob.h"

namespace skiff::test {

inline constexpr uint64_t kRamSize = 4 * x86::kMiB;
inline constexpr uint64_t kProgramAddr = 0x100000;

// Byte-for-byte equality of two KVM structs.
template <typename T>
bool same_bytes(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// One VM as the VMM builds it (TSS and identity-map pages, in-kernel irqchip and PIT, the
// PC GSI routes, RAM in one memslot) with vCPU 0 configured like the VMM's vCPUs.
struct Machine {
  std::optional<KvmVm> vm;
  GuestMemory memory;
  std::optional<KvmVcpu> vcpu;
};

inline Result<Machine> build_machine(const KvmSystem& kvm, std::span<const uint32_t> msr_list) {
  Machine machine;
  auto vm = kvm.create_vm();
  if (!vm) return std::unexpected(vm.error());
  machine.vm.emplace(std::move(*vm));
  const RamRange ram[] = {{.gpa = 0, .size = kRamSize}};
  auto memory = GuestMemory::create(ram, MemoryOptions{});
  if (!memory) return std::unexpected(memory.error());
  machine.memory = std::move(*memory);
  const GuestRegion& region = machine.memory.regions().at(0);
  if (auto r = machine.vm->set_user_memory_region(0, region.gpa, region.size, region.host); !r) return std::unexpected(r.error());
  if (auto r = machine.vm->set_tss_address(x86::kKvmTssAddr); !r) return std::unexpected(r.error());
  if (auto r = machine.vm->set_identity_map_address(x86::kKvmIdentityMapAddr); !r) return std::unexpected(r.error());
  if (auto r = machine.vm->create_irqchip(); !r) return std::unexpected(r.error());
  if (auto r = machine.vm->create_pit2(); !r) return std::unexpected(r.error());
  if (auto r = machine.vm->set_gsi_routing(x86::pc_gsi_routes()); !r) return std::unexpected(r.error());
  auto vcpu = machine.vm->create_vcpu(0);
  if (!vcpu) return std::unexpected(vcpu.error());
  machine.vcpu.emplace(std::move(*vcpu));
  auto supported = kvm.supported_cpuid();
  if (!supported) return std::unexpected(supported.error());
  const auto cpuid = x86::build_vcpu_cpuid(*supported, 0, 1);
  if (auto r = x86::configure_vcpu(*machine.vcpu, cpuid, msr_list); !r) return std::unexpected(r.error());
  return machine;
}

// Long mode with the boot page tables and GDT, entry at kProgramAddr.
inline Result<void> enter_long_mode(const Machine& machine, kvm_regs* regs_out = nullptr) {
  if (auto r = x86::write_boot_page_tables(machine.memory); !r) return r;
  if (auto r = x86::write_boot_gdt(machine.memory); !r) return r;
  auto regs = machine.vcpu->get_regs();
  auto sregs = machine.vcpu->get_sregs();
  if (!regs) return std::unexpected(regs.error());
  if (!sregs) return std::unexpected(sregs.error());
  x86::BootPlan plan;
  plan.entry = kProgramAddr;
  plan.boot_params_addr = 0x7000;
  x86::setup_boot_registers(plan, &*regs, &*sregs);
  if (auto r = machine.vcpu->set_sregs(*sregs); !r) return r;
  if (auto r = machine.vcpu->set_regs(*regs); !r) return r;
  if (regs_out) *regs_out = *regs;
  return {};
}

// encode() then decode(), as a snapshot file would carry the blob.
inline state::StateBlob through_bytes(const state::StateBlob& blob) {
  auto decoded = state::StateBlob::decode(blob.encode());
  EXPECT_TRUE(decoded) << decoded.error().message();
  return decoded ? *decoded : state::StateBlob("decode-failed", 1);
}

// One MSR through KVM_GET_MSRS (a test failure when KVM cannot read it).
inline uint64_t read_msr(const KvmVcpu& vcpu, uint32_t index) {
  const uint32_t indexes[] = {index};
  auto values = vcpu.get_msrs(indexes);
  EXPECT_TRUE(values && values->size() == 1) << "MSR " << index;
  return values && values->size() == 1 ? values->front().second : 0;
}

// Opens /dev/kvm (or skips the test, saying why) and builds Machines.
class KvmMachineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = test::kvm_unavailable_reason()) GTEST_SKIP() << "needs /dev/kvm: " << *reason;
    auto kvm = KvmSystem::open();
    ASSERT_TRUE(kvm) << kvm.error().message();
    kvm_.emplace(std::move(*kvm));
    auto msrs = kvm_->msr_index_list();
    ASSERT_TRUE(msrs) << msrs.error().message();
    msr_list_ = *msrs;
  }

  Machine machine() {
    auto built = build_machine(*kvm_, msr_list_);
    EXPECT_TRUE(built) << built.error().message();
    return built ? std::move(*built) : Machine{};
  }

  std::optional<KvmSystem> kvm_;
  std::vector<uint32_t> msr_list_;
};

}  // namespace skiff::test
