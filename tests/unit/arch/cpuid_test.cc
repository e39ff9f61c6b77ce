// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/cpuid.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace skiff::x86 {
namespace {

kvm_cpuid_entry2 entry(uint32_t function, uint32_t index = 0) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  return e;
}

const kvm_cpuid_entry2& find(const std::vector<kvm_cpuid_entry2>& entries, uint32_t function,
                             uint32_t index = 0) {
  auto it = std::find_if(entries.begin(), entries.end(), [&](const kvm_cpuid_entry2& e) {
    return e.function == function && e.index == index;
  });
  EXPECT_NE(it, entries.end());
  return *it;
}

TEST(Cpuid, TopologyShift) {
  EXPECT_EQ(topology_shift(1), 0u);
  EXPECT_EQ(topology_shift(2), 1u);
  EXPECT_EQ(topology_shift(3), 2u);
  EXPECT_EQ(topology_shift(4), 2u);
  EXPECT_EQ(topology_shift(5), 3u);
  EXPECT_EQ(topology_shift(254), 8u);
}

TEST(Cpuid, Leaf1CarriesApicIdAndHypervisorBit) {
  auto leaf1 = entry(1);
  leaf1.ebx = 0xff00abcd;  // stale APIC id and count bits from the host
  std::vector<kvm_cpuid_entry2> supported = {leaf1};
  auto cpu3 = build_vcpu_cpuid(supported, 3, 4);
  const auto& e = find(cpu3, 1);
  EXPECT_EQ(e.ebx >> 24, 3u);
  EXPECT_EQ((e.ebx >> 16) & 0xff, 4u);
  EXPECT_EQ(e.ebx & 0xffff, 0xabcdu);
  EXPECT_TRUE(e.ecx & (1u << 31));
  EXPECT_TRUE(e.edx & (1u << 28));
  auto single = build_vcpu_cpuid(supported, 0, 1);
  EXPECT_FALSE(find(single, 1).edx & (1u << 28));
  EXPECT_EQ((find(single, 1).ebx >> 16) & 0xff, 1u);
}

TEST(Cpuid, ExtendedTopologyLeaf) {
  std::vector<kvm_cpuid_entry2> supported = {entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)};
  auto cpu = build_vcpu_cpuid(supported, 5, 6);
  EXPECT_EQ(find(cpu, 0xb, 0).ebx, 1u);
  EXPECT_EQ((find(cpu, 0xb, 0).ecx >> 8) & 0xff, 1u);  // SMT level
  EXPECT_EQ(find(cpu, 0xb, 1).eax, 3u);                 // 6 cores need 3 bits
  EXPECT_EQ(find(cpu, 0xb, 1).ebx, 6u);
  EXPECT_EQ((find(cpu, 0xb, 1).ecx >> 8) & 0xff, 2u);  // core level
  EXPECT_EQ((find(cpu, 0xb, 2).ecx >> 8) & 0xff, 0u);  // end of enumeration
  for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ(find(cpu, 0xb, i).edx, 5u);
}

TEST(Cpuid, PmuAndPowerLeavesHidden) {
  auto pmu = entry(0xa);
  pmu.eax = 0x07300805;
  auto power = entry(0x6);
  power.eax = 0x77;
  std::vector<kvm_cpuid_entry2> supported = {pmu, power};
  auto cpu = build_vcpu_cpuid(supported, 0, 1);
  EXPECT_EQ(find(cpu, 0xa).eax, 0u);
  EXPECT_EQ(find(cpu, 0x6).eax, 0u);
}

TEST(Cpuid, CacheLeafCoreCount) {
  auto l1 = entry(0x4, 0);
  l1.eax = (1u << 5) | 0x1;  // level 1 data cache
  auto l3 = entry(0x4, 3);
  l3.eax = (3u << 5) | 0x3;
  std::vector<kvm_cpuid_entry2> supported = {l1, l3};
  auto cpu = build_vcpu_cpuid(supported, 0, 4);
  EXPECT_EQ(find(cpu, 0x4, 0).eax >> 26, 3u);
  EXPECT_EQ((find(cpu, 0x4, 0).eax >> 14) & 0xfff, 0u);
  EXPECT_EQ((find(cpu, 0x4, 3).eax >> 14) & 0xfff, 3u);
  EXPECT_EQ(find(cpu, 0x4, 3).eax & 0x1f, 3u);
}

}  // namespace
}  // namespace skiff::x86
