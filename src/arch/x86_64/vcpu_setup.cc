// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/vcpu_setup.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff::x86 {
namespace {

// Local APIC register offsets and LVT delivery modes (Intel SDM Vol. 3A, 11.5.1).
constexpr size_t kApicLvtLint0 = 0x350;
constexpr size_t kApicLvtLint1 = 0x360;
constexpr uint32_t kApicDeliveryModeMask = 0x700;
constexpr uint32_t kApicDeliveryExtInt = 0x700;
constexpr uint32_t kApicDeliveryNmi = 0x400;


}  // namespace

std::vector<std::pair<uint32_t, uint64_t>> boot_msrs(std::span<const uint32_t> supported) {
  constexpr uint64_t kMiscEnableFastStrings = 1;
  // MTRRs enabled (bit 11), default memory type write-back (6).
  constexpr uint64_t kMtrrDefTypeEnabledWriteBack = (1u << 11) | 6;
  const std::pair<uint32_t, uint64_t> wanted[] = {
      {kMsrIa32SysenterCs, 0},  {kMsrIa32SysenterEsp, 0}, {kMsrIa32SysenterEip, 0},
      {kMsrStar, 0},            {kMsrLstar, 0},           {kMsrCstar, 0},
      {kMsrSyscallMask, 0},     {kMsrKernelGsBase, 0},    {kMsrIa32Tsc, 0},
      {kMsrIa32MiscEnable, kMiscEnableFastStrings},
      {kMsrMtrrDefType, kMtrrDefTypeEnabledWriteBack},
  };
  std::vector<std::pair<uint32_t, uint64_t>> msrs;
  for (const auto& msr : wanted) {
    if (std::find(supported.begin(), supported.end(), msr.first) != supported.end()) {
      msrs.push_back(msr);
    }
  }
  return msrs;
}

Result<void> configure_vcpu(const KvmVcpu& vcpu, std::span<const kvm_cpuid_entry2> cpuid,
                            std::span<const uint32_t> supported_msrs) {
  if (auto r = vcpu.set_cpuid(cpuid); !r) return r;

  // Set the MSRs one at a time past any KVM refuses: a refused optional MSR is a warning.
  auto msrs = boot_msrs(supported_msrs);
  std::span<const std::pair<uint32_t, uint64_t>> remaining(msrs);
  while (!remaining.empty()) {
    auto set = vcpu.set_msrs(remaining);
    if (!set) return std::unexpected(set.error());
    if (*set < remaining.size()) {
      spdlog::warn("vCPU {}: KVM refused MSR {:#x}; leaving it at its default", vcpu.id(),
                   remaining[*set].first);
      remaining = remaining.subspan(*set + 1);
    } else {
      break;
    }
  }

  // x87 control word and MXCSR at their reset values (all exceptions masked).
  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  if (auto r = vcpu.set_fpu(fpu); !r) return r;

  // LINT0 delivers the legacy PIC's interrupts (ExtINT), LINT1 NMIs, as firmware would
  // program them (MP spec 1.4, virtual wire mode).
  auto lapic = vcpu.get_lapic();
  if (!lapic) return std::unexpected(lapic.error());
  uint32_t lint0 = read_apic_register(*lapic, kApicLvtLint0);
  uint32_t lint1 = read_apic_register(*lapic, kApicLvtLint1);
  write_apic_register(*lapic, kApicLvtLint0, (lint0 & ~kApicDeliveryModeMask) | kApicDeliveryExtInt);
  write_apic_register(*lapic, kApicLvtLint1, (lint1 & ~kApicDeliveryModeMask) | kApicDeliveryNmi);
  return vcpu.set_lapic(*lapic);
}

uint32_t read_apic_register(const kvm_lapic_state& lapic, size_t offset) {
  uint32_t value = 0;
  std::memcpy(&value, lapic.regs + offset, sizeof(value));
  return value;
}

void write_apic_register(kvm_lapic_state& lapic, size_t offset, uint32_t value) {
  std::memcpy(lapic.regs + offset, &value, sizeof(value));
}

}  // namespace skiff::x86
