// SPDX-License-Identifier: Apache-2.0
// Tier 2: the test guest drives skiff's virtio-rng through the virtio-mmio and virtio-pci transports on
// /dev/kvm: probe, feature negotiation, queue setup, two requests, interrupt status, reset.
#include <gtest/gtest.h>

#include "guest_runner.h"
#include "skiff/vm.h"

namespace skiff::test {
namespace {

class VirtioMmio : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << "tier-2 tests need /dev/kvm: " << *reason;
  }
  static VmSpec rng_spec(const std::string& kernel, const std::string& cmdline) {
    auto spec = guest_spec(kernel, cmdline, 1, 64);
    spec.rng = RngSpec{VirtioTransport::kMmio};
    spec.machine.mmio_cmdline = true;  // the test guest finds devices on the command line
    return spec;
  }
  static void expect_rng_round_trip(const GuestRun& run) {
    const auto& r = run.report;
    EXPECT_EQ(r.lines_starting("virtio-mmio-devices=1").size(), 1u) << r.console;
    EXPECT_EQ(r.lines_starting("virtio-mmio base=0xf0000000 irq=5 id=4 vendor=0x46494b53").size(), 1u) << r.console;
    EXPECT_EQ(r.value("features-ok"), "1") << r.console;
    EXPECT_EQ(r.lines_starting("virtio-rng queue-num-max=256 queue-num=8 status=15").size(), 1u) << r.console;
    EXPECT_EQ(r.lines_starting("virtio-rng used=2 len0=64 len1=64 nonzero=1 isr=1").size(), 1u) << r.console;
    EXPECT_EQ(r.value("isr-after-ack"), "0") << r.console;
    EXPECT_EQ(r.value("reset-status"), "0") << r.console;
    EXPECT_EQ(r.lines_starting("error").size(), 0u) << r.console;
  }
};

TEST_F(VirtioMmio, RngRoundTripThroughPvhEntry) {
  auto run = run_guest(rng_spec(SKIFF_TEST_GUEST_ELF, "skiff.virtio=1 skiff.exit=6"));
  ASSERT_FALSE(run.timed_out) << run.report.console;
  EXPECT_EQ(run.exit.exit_code, 6) << run.exit.detail << "\n" << run.report.console;
  expect_rng_round_trip(run);
}

TEST_F(VirtioMmio, RngRoundTripThroughBzImageEntry) {
  auto run = run_guest(rng_spec(SKIFF_TEST_GUEST_BZIMAGE, "skiff.virtio=1 skiff.exit=7"));
  EXPECT_EQ(run.exit.exit_code, 7) << run.exit.detail << "\n" << run.report.console;
  expect_rng_round_trip(run);
}

TEST_F(VirtioMmio, CommandLineListsTheDeviceOnlyWhenAsked) {
  auto spec = rng_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=0");
  spec.machine.mmio_cmdline = false;
  auto run = run_guest(spec);
  EXPECT_EQ(run.exit.exit_code, 0) << run.exit.detail;
  EXPECT_EQ(run.report.lines_starting("cmdline=skiff.exit=0").size(), 1u) << run.report.console;
  EXPECT_EQ(run.report.value("virtio-mmio-devices"), "0") << run.report.console;
}

TEST_F(VirtioMmio, NoDeviceWithoutTheSpecKey) {
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.virtio=1 skiff.exit=0"));
  EXPECT_EQ(run.report.value("virtio-mmio-devices"), "0") << run.report.console;
}

}  // namespace
}  // namespace skiff::test

namespace skiff::test {
namespace {

// The same guest driver over virtio-pci: bus enumeration, capabilities walked from 0x34,
// a BAR moved by the guest, MSI-X (seen as the vector's bit in the LAPIC IRR), reset.
class VirtioPci : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << "tier-2 tests need /dev/kvm: " << *reason;
  }
  static void expect_pci_round_trip(const GuestRun& run) {
    const auto& r = run.report;
    EXPECT_EQ(r.lines_starting("pci 00:00.0 vendor=0x8086 device=0x0d57 class=0x060000").size(), 1u) << r.console;
    EXPECT_EQ(r.lines_starting("pci 00:01.0 vendor=0x1af4 device=0x1044").size(), 1u) << r.console;
    EXPECT_EQ(r.value("pci-devices"), "2") << r.console;
    EXPECT_EQ(r.lines_starting("virtio-pci cap type=1 bar=0").size(), 1u) << r.console;
    EXPECT_EQ(r.lines_starting("virtio-pci cap type=2 bar=0").size(), 1u) << r.console;
    EXPECT_EQ(r.lines_starting("virtio-pci cap type=3 bar=0").size(), 1u) << r.console;
    // Initialised twice: the MSI-X round and the INTx round.
    EXPECT_EQ(r.lines_starting("virtio-pci-rng device-features=").size(), 2u) << r.console;
    EXPECT_NE(r.console.find("features-ok=1"), std::string::npos) << r.console;
    EXPECT_EQ(r.lines_starting("virtio-pci-rng used=2 len0=64 len1=64 nonzero=1 msix-irr=1").size(), 1u) << r.console;
    EXPECT_EQ(r.lines_starting("virtio-pci-rng reset-status=0").size(), 1u) << r.console;
    // The INTx round: MSI-X off, INTA# on the IOAPIC pin the MP table names (slot 1 -> GSI 17),
    // level-triggered; the ISR read returns the queue bit and clears it.
    EXPECT_EQ(r.lines_starting("virtio-pci-intx gsi=17 used=2 intx-irr=1 isr=1 isr-after=0").size(), 1u)
        << r.console;
    EXPECT_EQ(r.lines_starting("virtio-pci-intx reset-status=0").size(), 1u) << r.console;
    EXPECT_EQ(r.lines_starting("error").size(), 0u) << r.console;
  }
};

TEST_F(VirtioPci, RngRoundTripWithMsixThroughPvhEntry) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.virtio=1 skiff.exit=6", 1, 64);
  spec.rng = RngSpec{};  // virtio-pci is the default transport
  auto run = run_guest(spec);
  ASSERT_FALSE(run.timed_out) << run.report.console;
  EXPECT_EQ(run.exit.exit_code, 6) << run.exit.detail << "\n" << run.report.console;
  expect_pci_round_trip(run);
}

TEST_F(VirtioPci, RngRoundTripWithMsixThroughBzImageEntry) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_BZIMAGE, "skiff.virtio=1 skiff.exit=7", 2, 64);
  spec.rng = RngSpec{VirtioTransport::kPci};
  auto run = run_guest(spec);
  EXPECT_EQ(run.exit.exit_code, 7) << run.exit.detail << "\n" << run.report.console;
  expect_pci_round_trip(run);
}

TEST_F(VirtioPci, OnlyTheHostBridgeWithoutDevices) {
  auto run = run_guest(guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.virtio=1 skiff.exit=0"));
  EXPECT_EQ(run.report.value("pci-devices"), "1") << run.report.console;
}

}  // namespace
}  // namespace skiff::test
