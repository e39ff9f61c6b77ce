// SPDX-License-Identifier: Apache-2.0
// Tier 2: skiff boots its test guest on /dev/kvm through the library and checks what the
// guest reports about the machine it was given.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "guest_runner.h"
#include "memory/guest_memory.h"
#include "skiff/vm.h"

namespace skiff::test {
namespace {

class GuestBoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) {
      GTEST_SKIP() << "tier-2 tests need /dev/kvm: " << *reason;
    }
  }
};

struct E820Line {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  bool operator==(const E820Line&) const = default;
};

std::vector<E820Line> reported_e820(const GuestReport& report) {
  std::vector<E820Line> entries;
  for (const std::string& line : report.lines_starting("e820 ")) {
    std::istringstream in(line.substr(5));
    std::string addr, size;
    uint32_t type = 0;
    in >> addr >> size >> type;
    entries.push_back({std::stoull(addr, nullptr, 16), std::stoull(size, nullptr, 16), type});
  }
  return entries;
}

// The memory map documented in docs/architecture.md for `mib` MiB of RAM below the hole.
std::vector<E820Line> expected_low_e820(uint64_t mib) {
  return {{0, 0x9fc00, 1},
          {0x9fc00, 0x400, 2},
          {0xe0000, 0x20000, 2},
          {0x100000, mib * 1024 * 1024 - 0x100000, 1}};
}

TEST_F(GuestBoot, PvhElfBootsAndReportsCmdlineAndMemoryMap) {
  const std::string cmdline = "console=ttyS0 skiff.exit=7 marker=pvh-ok";
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, cmdline, 1, 64));
  ASSERT_FALSE(run.timed_out) << run.report.console;
  EXPECT_EQ(run.exit.reason, StopReason::kDebugExit) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(run.exit.exit_code, 7);
  EXPECT_EQ(run.report.value("boot"), "pvh");
  auto cmdline_line = run.report.lines_starting("cmdline=");
  ASSERT_EQ(cmdline_line.size(), 1u) << run.report.console;
  EXPECT_EQ(cmdline_line[0], "cmdline=" + cmdline);
  EXPECT_EQ(reported_e820(run.report), expected_low_e820(64)) << run.report.console;
  EXPECT_EQ(run.report.lines_starting("e820-count "), std::vector<std::string>{"e820-count 4"});
  EXPECT_EQ(run.report.lines_starting("initrd none").size(), 1u) << run.report.console;
}

// skiff.quick=1 (the start-up benchmark's exiting guest): no report, only the action line.
TEST_F(GuestBoot, QuickGuestPrintsOnlyItsActionAndExits) {
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "console=ttyS0 skiff.quick=1 skiff.exit=5", 1, 64));
  ASSERT_FALSE(run.timed_out) << run.report.console;
  EXPECT_EQ(run.exit.reason, StopReason::kDebugExit) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(run.exit.exit_code, 5);
  EXPECT_EQ(run.report.console, "SKIFF-GUEST action=exit code=5\n");
}

TEST_F(GuestBoot, BzImageBootsWithInitrdIntact) {
  // An odd-sized initrd of random bytes: the guest hashes its first and last 4 KiB.
  std::vector<uint8_t> initrd(300 * 1024 + 123);
  std::mt19937 random(12345);
  for (auto& byte : initrd) byte = static_cast<uint8_t>(random());
  TempFile initrd_file(initrd, ".img");
  auto spec = guest_spec(SKIFF_TEST_GUEST_BZIMAGE, "console=ttyS0 skiff.exit=9", 1, 128);
  spec.boot.initrd = initrd_file.path();
  auto run = run_guest(spec);
  ASSERT_FALSE(run.timed_out) << run.report.console;
  EXPECT_EQ(run.exit.exit_code, 9) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(run.report.value("boot"), "bzimage");
  EXPECT_EQ(run.report.lines_starting("cmdline=")[0], "cmdline=console=ttyS0 skiff.exit=9");
  EXPECT_EQ(reported_e820(run.report), expected_low_e820(128)) << run.report.console;
  EXPECT_EQ(run.report.value("size"), std::to_string(initrd.size())) << run.report.console;
  char head[32], tail[32];
  snprintf(head, sizeof(head), "%016llx", static_cast<unsigned long long>(fnv1a(initrd.data(), 4096)));
  snprintf(tail, sizeof(tail), "%016llx",
           static_cast<unsigned long long>(fnv1a(initrd.data() + initrd.size() - 4096, 4096)));
  auto strip = [](std::string s) { return s.rfind("0x", 0) == 0 ? s.substr(2) : s; };
  EXPECT_EQ(strip(run.report.value("head_fnv1a").value_or("")), head) << run.report.console;
  EXPECT_EQ(strip(run.report.value("tail_fnv1a").value_or("")), tail) << run.report.console;
  // The initrd sits page-aligned at the top of low RAM.
  uint64_t addr = std::stoull(run.report.value("addr").value_or("0"), nullptr, 16);
  EXPECT_EQ(addr % 4096, 0u);
  EXPECT_LE(addr + initrd.size(), 128ull << 20);
  EXPECT_GT(addr, 64ull << 20);
}

TEST_F(GuestBoot, OneVcpuIsSeenEverywhere) {
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=0", 1));
  EXPECT_EQ(run.exit.reason, StopReason::kDebugExit) << run.exit.detail;
  EXPECT_EQ(run.report.value("madt-cpus"), "1") << run.report.console;
  EXPECT_EQ(run.report.value("mptable-cpus"), "1") << run.report.console;
  EXPECT_EQ(run.report.value("cpus-started"), "1") << run.report.console;
}

TEST_F(GuestBoot, FourVcpusAllComeUp) {
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=0", 4));
  ASSERT_FALSE(run.timed_out) << run.report.console;
  EXPECT_EQ(run.exit.reason, StopReason::kDebugExit) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(run.report.value("madt-cpus"), "4") << run.report.console;
  EXPECT_EQ(run.report.value("mptable-cpus"), "4") << run.report.console;
  EXPECT_EQ(run.report.value("cpus-started"), "4") << run.report.console;
}

TEST_F(GuestBoot, FourVcpusThroughBzImageEntry) {
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_BZIMAGE, "skiff.exit=0", 4));
  EXPECT_EQ(run.report.value("cpus-started"), "4") << run.report.console;
}

TEST_F(GuestBoot, GuestRebootEndsTheVm) {
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=reboot"));
  EXPECT_EQ(run.exit.reason, StopReason::kGuestReboot) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(run.exit.exit_code, kExitOk);
  EXPECT_EQ(run.report.lines_starting("action-failed").size(), 0u);
}

TEST_F(GuestBoot, GuestPowerOffThroughAcpi) {
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=poweroff"));
  EXPECT_EQ(run.exit.reason, StopReason::kGuestPowerOff) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(run.exit.exit_code, kExitOk);
}

TEST_F(GuestBoot, TripleFaultIsAGuestCrashWithRegisters) {
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=triple-fault"));
  EXPECT_EQ(run.exit.reason, StopReason::kGuestCrash) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(run.exit.exit_code, kExitGuestCrash);
  EXPECT_NE(run.exit.detail.find("triple fault"), std::string::npos) << run.exit.detail;
  EXPECT_NE(run.exit.detail.find("rip="), std::string::npos) << run.exit.detail;
}

TEST_F(GuestBoot, MemoryAboveTheHole) {
  // 3.5 GiB: 3 GiB below the MMIO hole and 512 MiB above 4 GiB. Nothing is touched but the
  // boot structures, so this costs little host memory.
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=0", 1, 3584));
  EXPECT_EQ(run.exit.reason, StopReason::kDebugExit) << run.exit.detail;
  auto e820 = reported_e820(run.report);
  ASSERT_EQ(e820.size(), 5u) << run.report.console;
  EXPECT_EQ(e820[3], (E820Line{0x100000, (3ull << 30) - 0x100000, 1}));
  EXPECT_EQ(e820[4], (E820Line{4ull << 30, 512ull << 20, 1}));
}

TEST_F(GuestBoot, TwoMegabyteHugepagesBackGuestMemory) {
  if (geteuid() != 0) GTEST_SKIP() << "reserving hugepages needs root (/proc/sys/vm/nr_hugepages)";
  HugepageReservation reservation(32);
  ASSERT_TRUE(reservation.ok()) << "the kernel did not grant 32 free 2 MiB hugepages";
  auto before = read_hugepage_pool(2 << 20);
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=5", 1, 64);
  spec.machine.hugepages = HugePages::k2M;
  auto run = run_guest(spec);
  EXPECT_EQ(run.exit.exit_code, 5) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(reported_e820(run.report), expected_low_e820(64));
  auto after = read_hugepage_pool(2 << 20);
  ASSERT_TRUE(before && after);
  EXPECT_EQ(after->free, before->free) << "the VM's hugepages were not given back";
}

TEST_F(GuestBoot, HugepageShortageIsAClearHostError) {
  testing_support::HugepagePoolLock pool_lock;  // no other test may grow the pool meanwhile
  auto pool = read_hugepage_pool(2 << 20);
  if (!pool) GTEST_SKIP() << "no 2 MiB hugepage pool: " << pool.error().message();
  // More than the pool can give: the whole spec is refused before the guest runs.
  uint64_t mib = ((pool->available() + 16) * 2) & ~1ull;
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=0", 1, std::max<uint64_t>(mib, 64));
  spec.machine.hugepages = HugePages::k2M;
  auto run = run_guest(spec);
  EXPECT_EQ(run.exit.exit_code, kExitHost) << run.exit.detail;
  EXPECT_NE(run.exit.detail.find("hugepages"), std::string::npos) << run.exit.detail;
  EXPECT_NE(run.exit.detail.find("nr_hugepages"), std::string::npos) << run.exit.detail;
}

TEST_F(GuestBoot, TransparentHugepagesAndPrefault) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=3", 2, 64);
  spec.machine.hugepages = HugePages::kTransparent;
  spec.machine.prefault = true;
  auto run = run_guest(spec);
  EXPECT_EQ(run.exit.exit_code, 3) << run.exit.detail;
  EXPECT_EQ(run.report.value("cpus-started"), "2");
}

TEST_F(GuestBoot, MissingKvmDeviceIsAHostError) {
  VmOptions options = test_vm_options();
  options.kvm_path = "/nonexistent/kvm";
  auto vm = Vm::create(guest_spec(SKIFF_TEST_GUEST_ELF, ""), options);
  ASSERT_FALSE(vm);
  EXPECT_EQ(vm.error().kind(), ErrorKind::kHost);
  EXPECT_NE(vm.error().message().find("/nonexistent/kvm"), std::string::npos);
  EXPECT_NE(vm.error().message().find("KVM is not available"), std::string::npos);
}

TEST_F(GuestBoot, TwoVmsInOneProcess) {
  auto a = Vm::create(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=11"), test_vm_options());
  auto b = Vm::create(guest_spec(SKIFF_TEST_GUEST_BZIMAGE, "skiff.exit=12", 2), test_vm_options());
  ASSERT_TRUE(a) << a.error().message();
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*a)->start());
  ASSERT_TRUE((*b)->start());
  EXPECT_EQ((*a)->wait().exit_code, 11);
  EXPECT_EQ((*b)->wait().exit_code, 12);
}

TEST_F(GuestBoot, StopRequestEndsAHaltedGuest) {
  auto vm = Vm::create(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=halt", 2), test_vm_options());
  ASSERT_TRUE(vm) << vm.error().message();
  ASSERT_TRUE((*vm)->start());
  EXPECT_FALSE((*vm)->wait_for(std::chrono::milliseconds(300)));
  (*vm)->request_stop(VmExit{StopReason::kStopRequested, kExitStopped, "test"});
  VmExit exit = (*vm)->wait();
  EXPECT_EQ(exit.reason, StopReason::kStopRequested);
  EXPECT_EQ((*vm)->wait().exit_code, kExitStopped);  // wait() is repeatable
}

}  // namespace
}  // namespace skiff::test

namespace skiff::test {
namespace {

TEST_F(GuestBoot, ManyVcpusBeyondTheMpTableAreInTheMadt) {
  // 48 vCPUs: more than the EBDA's MP table holds (40), so only the MADT lists them.
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=0", 48, 128));
  ASSERT_FALSE(run.timed_out) << run.report.console;
  EXPECT_EQ(run.exit.reason, StopReason::kDebugExit) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(run.report.value("madt-cpus"), "48") << run.report.console;
  EXPECT_EQ(run.report.value("mptable-cpus"), "none") << run.report.console;
  EXPECT_EQ(run.report.value("cpus-started"), "48") << run.report.console;
}

}  // namespace
}  // namespace skiff::test

namespace skiff::test {
namespace {

TEST_F(GuestBoot, PinnedVcpusNumaNodeAndLockedMemory) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=21", 2, 64);
  spec.machine.vcpu_affinity = {{0}, {1 % std::max(1u, std::thread::hardware_concurrency())}};
  spec.machine.numa_node = 0;
  spec.machine.lock_memory = true;
  spec.machine.prefault = true;
  auto run = run_guest(spec);
  EXPECT_EQ(run.exit.exit_code, 21) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(run.report.value("cpus-started"), "2");
}

TEST_F(GuestBoot, SharedMemfdBacking) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_BZIMAGE, "skiff.exit=22", 1, 64);
  spec.machine.shared_memory = true;
  auto run = run_guest(spec);
  EXPECT_EQ(run.exit.exit_code, 22) << run.exit.detail;
}

// Reserves one 1 GiB hugepage for the test when the kernel can find a free gigabyte.
TEST_F(GuestBoot, OneGigabyteHugepagesBackGuestMemory) {
  if (geteuid() != 0) GTEST_SKIP() << "reserving hugepages needs root";
  const std::string knob = "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages";
  auto pool = read_hugepage_pool(1ull << 30);
  if (!pool) GTEST_SKIP() << "no 1 GiB hugepage pool: " << pool.error().message();
  const uint64_t original = pool->total;
  std::ofstream(knob) << original + 1;
  auto reserved = read_hugepage_pool(1ull << 30);
  if (!reserved || reserved->available() < 1) {
    std::ofstream(knob) << original;
    GTEST_SKIP() << "the kernel could not find a free, contiguous 1 GiB page for the test";
  }
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=23", 2, 1024);
  spec.machine.hugepages = HugePages::k1G;
  auto run = run_guest(spec);
  std::ofstream(knob) << original;
  EXPECT_EQ(run.exit.exit_code, 23) << run.exit.detail << "\n" << run.report.console;
  EXPECT_EQ(reported_e820(run.report), expected_low_e820(1024));
}

}  // namespace
}  // namespace skiff::test
