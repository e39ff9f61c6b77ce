// SPDX-License-Identifier: Apache-2.0
// The register text of a guest-crash report (VcpuRunner::describe_state).
#include <gtest/gtest.h>

#include <string>

#include "vcpu/vcpu_runner.h"

namespace skiff {
namespace {

// What KVM on AMD leaves after a shutdown intercept: the architectural reset state.
void reset_state(kvm_regs& regs, kvm_sregs& sregs) {
  regs = {};
  sregs = {};
  regs.rip = 0xfff0;
  regs.rflags = 0x2;
  regs.rdx = 0x800f12;
  sregs.cs.selector = 0xf000;
  sregs.cr0 = 0x10;
}

TEST(VcpuState, NamesTheRegistersOfALongModeCrash) {
  kvm_regs regs{};
  kvm_sregs sregs{};
  regs.rip = 0xffffffff81000123;
  regs.rsp = 0xffffc90000013e48;
  sregs.cr0 = 0x80050033;
  sregs.cr3 = 0x1a0c000;
  sregs.efer = 0xd01;
  sregs.cs.selector = 0x10;
  sregs.cs.l = 1;
  const std::string text = VcpuRunner::describe_state(regs, sregs);
  EXPECT_NE(text.find("rip=0xffffffff81000123 rsp=0xffffc90000013e48"), std::string::npos) << text;
  EXPECT_NE(text.find("cr0=0x80050033"), std::string::npos) << text;
  EXPECT_NE(text.find("efer=0xd01 cs=0x10(l=1 db=0)"), std::string::npos) << text;
  EXPECT_EQ(text.find("reset state"), std::string::npos) << text;
}

TEST(VcpuState, SaysWhenTheRegistersAreOnlyTheResetState) {
  kvm_regs regs;
  kvm_sregs sregs;
  reset_state(regs, sregs);
  const std::string text = VcpuRunner::describe_state(regs, sregs);
  EXPECT_NE(text.find("rip=0xfff0"), std::string::npos) << text;
  EXPECT_NE(text.find("the reset state"), std::string::npos) << text;
  EXPECT_NE(text.find("faulting registers are lost"), std::string::npos) << text;
}

TEST(VcpuState, AGuestThatReallyRunsAtTheResetVectorInProtectedModeIsNotMistakenForAReset) {
  kvm_regs regs;
  kvm_sregs sregs;
  reset_state(regs, sregs);
  sregs.cr0 = 0x11;  // PE set: not the reset state
  EXPECT_EQ(VcpuRunner::describe_state(regs, sregs).find("reset state"), std::string::npos);
  reset_state(regs, sregs);
  sregs.cs.selector = 0x8;
  EXPECT_EQ(VcpuRunner::describe_state(regs, sregs).find("reset state"), std::string::npos);
}

}  // namespace
}  // namespace skiff
