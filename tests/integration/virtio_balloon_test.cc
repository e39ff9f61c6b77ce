// SPDX-License-Identifier: Apache-2.0
// Tier 2: the test guest's balloon driver (tests/guest/balloon.c; README.md "virtio-balloon")
// follows the target the test sets through the library (Vm::set_balloon_target_mib), and the
// test measures the host side: the guest RAM mapping's resident memory falls by the inflated
// amount (anonymous and memfd memory), deflated pages are usable again, on a 2 MiB-hugepage
// VM whole huge pages go back to the pool (HugePages_Free rises) while a partly given huge
// page does not, and statistics arrive at the spec's interval.
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "bench/smaps.h"
#include "guest_runner.h"
#include "memory/guest_memory.h"
#include "skiff/vm.h"

namespace skiff::test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kPagesPerMib = 256;
// The guest's region starts at 16 MiB (balloon.c kRegionBase).
constexpr uint64_t kRegionBaseMib = 16;
// What balloon.c reports as free_memory.
constexpr uint64_t kReportedFreeMemory = 0x5ba110000ull;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Resident KiB of this process's guest RAM mapping: the memfd (shared memory, hugetlb) by
// name, anonymous memory by its exact size (the tests pick sizes nothing else maps).
std::optional<uint64_t> guest_rss_kib(uint64_t guest_bytes) {
  auto mappings = bench::parse_smaps(slurp("/proc/self/smaps"));
  std::optional<uint64_t> found;
  for (const auto& mapping : mappings) {
    bool memfd = mapping.path.find("memfd:skiff-guest-ram") != std::string::npos;
    bool anonymous = mapping.path.empty() && mapping.size_kib * 1024 == guest_bytes;
    if (!memfd && !anonymous) continue;
    if (found) return std::nullopt;  // ambiguous
    found = mapping.rss_kib;
  }
  return found;
}

VmSpec balloon_spec(uint64_t memory_mib, uint64_t region_mib, VirtioTransport transport) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF,
                         fmt::format("skiff.virtio=1 skiff.balloon={} skiff.exit=0", region_mib), 1, memory_mib);
  BalloonSpec balloon;
  balloon.transport = transport;
  balloon.stats_interval_s = 1;
  spec.balloon = balloon;
  spec.machine.mmio_cmdline = transport == VirtioTransport::kMmio;  // the guest finds slots there
  return spec;
}

// The guest ends with skiff.exit=0 once the balloon is empty again.
void expect_clean_exit(LiveGuest& guest) {
  auto exit = guest.wait();
  ASSERT_TRUE(exit) << "the guest did not finish\n" << guest.console();
  EXPECT_EQ(exit->exit_code, 0) << exit->detail << "\n" << guest.console();
}

class VirtioBalloonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << *reason;
  }
};

// Sets the target and waits for the guest's answer line ("inflated=" or "deflated=").
std::map<std::string, std::string> move_target(LiveGuest& guest, uint64_t mib, const std::string& answer) {
  auto set = guest.vm().set_balloon_target_mib(mib);
  EXPECT_TRUE(set) << set.error().message();
  auto seen = guest.next_line("virtio-balloon target=");
  EXPECT_TRUE(seen) << guest.console();
  if (seen) {
    EXPECT_EQ(field_u64(report_fields(*seen), "target"), mib * kPagesPerMib) << *seen;
  }
  auto line = guest.next_line("virtio-balloon " + answer);
  EXPECT_TRUE(line) << guest.console();
  return line ? report_fields(*line) : std::map<std::string, std::string>{};
}

// Inflate N MiB of touched anonymous memory: the mapping's RSS falls by about N MiB; deflate:
// the pages read back as zero (dropped) and take new writes; statistics every second.
TEST_F(VirtioBalloonTest, InflateReleasesResidentMemoryAndDeflateGivesItBack) {
  constexpr uint64_t kMemoryMib = 136;  // a size no malloc arena or stack has
  constexpr uint64_t kRegionMib = 96;
  constexpr uint64_t kInflateMib = 64;
  LiveGuest guest(balloon_spec(kMemoryMib, kRegionMib, VirtioTransport::kPci));
  ASSERT_FALSE(guest.error()) << *guest.error();
  auto touched = guest.next_line("virtio-balloon touched=");
  ASSERT_TRUE(touched) << guest.console();
  EXPECT_EQ(field_u64(report_fields(*touched), "touched"), kRegionMib * kPagesPerMib);

  auto before = guest_rss_kib(kMemoryMib << 20);
  ASSERT_TRUE(before) << "guest RAM mapping not found in /proc/self/smaps";
  EXPECT_GE(*before, kRegionMib * 1024) << "the touched region is not resident";

  auto inflated = move_target(guest, kInflateMib, "inflated=");
  EXPECT_EQ(field_u64(inflated, "inflated"), kInflateMib * kPagesPerMib);
  EXPECT_EQ(field_u64(inflated, "actual"), kInflateMib * kPagesPerMib);
  auto after = guest_rss_kib(kMemoryMib << 20);
  ASSERT_TRUE(after);
  const int64_t dropped_kib = static_cast<int64_t>(*before) - static_cast<int64_t>(*after);
  EXPECT_GE(dropped_kib, static_cast<int64_t>((kInflateMib - 1) * 1024)) << *before << " -> " << *after << " KiB";
  EXPECT_LE(dropped_kib, static_cast<int64_t>((kInflateMib + 4) * 1024)) << *before << " -> " << *after << " KiB";

  auto status = guest.vm().balloon();
  ASSERT_TRUE(status);
  EXPECT_EQ(status->target_mib(), kInflateMib);
  EXPECT_EQ(status->actual_mib(), kInflateMib);
  EXPECT_EQ(status->bytes_released, kInflateMib << 20);
  EXPECT_EQ(status->out_of_range_pages, 0u);

  // Statistics: the guest's values, about one set per second.
  auto first_sets = status->stats_sets;
  auto first_time = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(3500ms);
  status = guest.vm().balloon();
  ASSERT_TRUE(status);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - first_time).count();
  uint64_t sets = status->stats_sets - first_sets;
  EXPECT_GE(sets, static_cast<uint64_t>(seconds) - 1) << "stats sets in " << seconds << " s";
  EXPECT_LE(sets, static_cast<uint64_t>(seconds) + 1) << "stats sets in " << seconds << " s";
  EXPECT_EQ(status->guest_stats["free_memory"], kReportedFreeMemory);
  EXPECT_EQ(status->guest_stats["total_memory"], kRegionMib << 20);
  EXPECT_TRUE(status->stats_received_at);

  auto deflated = move_target(guest, 0, "deflated=");
  EXPECT_EQ(field_u64(deflated, "deflated"), kInflateMib * kPagesPerMib);
  EXPECT_EQ(field_u64(deflated, "zeroed"), kInflateMib * kPagesPerMib) << "released pages read back as zeros";
  EXPECT_EQ(field_u64(deflated, "rewrite-ok"), 1u);
  EXPECT_EQ(field_u64(deflated, "actual"), 0u);
  auto refilled = guest_rss_kib(kMemoryMib << 20);
  ASSERT_TRUE(refilled);
  EXPECT_GE(*refilled, *after + (kInflateMib - 1) * 1024) << "the guest's new writes are resident again";

  auto end = guest.next_line("virtio-balloon stats-rounds=");
  ASSERT_TRUE(end) << guest.console();
  EXPECT_GE(field_u64(report_fields(*end), "stats-rounds"), 3u);
  EXPECT_EQ(field_u64(report_fields(*end), "reset-status"), 0u);
  expect_clean_exit(guest);
  EXPECT_EQ(guest.console().find("error"), std::string::npos) << guest.console();
}

// The spec's initial target is inflated as soon as the driver starts, over virtio-mmio, on
// shared memory (memfd: released by punching holes in the file).
TEST_F(VirtioBalloonTest, InitialTargetOnSharedMemoryOverMmio) {
  constexpr uint64_t kMemoryMib = 96;
  constexpr uint64_t kRegionMib = 48;
  constexpr uint64_t kInitialMib = 40;
  auto spec = balloon_spec(kMemoryMib, kRegionMib, VirtioTransport::kMmio);
  spec.machine.shared_memory = true;
  spec.balloon->target_mib = kInitialMib;
  LiveGuest guest(spec);
  ASSERT_FALSE(guest.error()) << *guest.error();
  auto inflated = guest.next_line("virtio-balloon inflated=");
  ASSERT_TRUE(inflated) << guest.console();
  EXPECT_EQ(field_u64(report_fields(*inflated), "inflated"), kInitialMib * kPagesPerMib);
  auto rss = guest_rss_kib(kMemoryMib << 20);
  ASSERT_TRUE(rss) << "guest RAM memfd not found in /proc/self/smaps";
  // The region was touched (48 MiB) and 40 MiB of it given back; the rest of RAM is the
  // image and its tables.
  EXPECT_LE(*rss, (kRegionMib - kInitialMib + 8) * 1024) << *rss << " KiB resident";
  auto status = guest.vm().balloon();
  ASSERT_TRUE(status);
  EXPECT_EQ(status->actual_mib(), kInitialMib);

  auto deflated = move_target(guest, 0, "deflated=");
  EXPECT_EQ(field_u64(deflated, "zeroed"), kInitialMib * kPagesPerMib);
  EXPECT_EQ(field_u64(deflated, "rewrite-ok"), 1u);
  expect_clean_exit(guest);
}

// Hugetlb: only whole huge pages go back to the pool; one given back in part stays.
TEST_F(VirtioBalloonTest, WholeHugepagesReturnToThePoolPartialOnesStay) {
  if (geteuid() != 0) GTEST_SKIP() << "reserving hugepages needs root (/proc/sys/vm/nr_hugepages)";
  constexpr uint64_t kMemoryMib = 64;
  constexpr uint64_t kRegionMib = 32;
  HugepageReservation reservation(kMemoryMib / 2);
  ASSERT_TRUE(reservation.ok()) << "the kernel did not grant " << kMemoryMib / 2 << " free 2 MiB hugepages";
  auto spec = balloon_spec(kMemoryMib, kRegionMib, VirtioTransport::kPci);
  spec.machine.hugepages = HugePages::k2M;
  LiveGuest guest(spec);
  ASSERT_FALSE(guest.error()) << *guest.error();
  ASSERT_TRUE(guest.next_line("virtio-balloon touched=")) << guest.console();
  auto pool_before = read_hugepage_pool(2 << 20);
  ASSERT_TRUE(pool_before);

  // 9 MiB from 16 MiB: huge pages 8-11 entirely, half of huge page 12.
  auto inflated = move_target(guest, 9, "inflated=");
  EXPECT_EQ(field_u64(inflated, "inflated"), 9 * kPagesPerMib);
  auto pool_inflated = read_hugepage_pool(2 << 20);
  ASSERT_TRUE(pool_inflated);
  EXPECT_EQ(pool_inflated->free, pool_before->free + 4) << "four whole huge pages go back, the partial one stays";
  auto status = guest.vm().balloon();
  ASSERT_TRUE(status);
  EXPECT_EQ(status->huge_pages_released, 4u);
  EXPECT_EQ(status->partial_huge_pages, 1u);
  EXPECT_EQ(status->bytes_released, 8ull << 20);

  // Completing the partial huge page releases it too.
  auto completed = move_target(guest, 10, "inflated=");
  EXPECT_EQ(field_u64(completed, "inflated"), kPagesPerMib);
  auto pool_completed = read_hugepage_pool(2 << 20);
  ASSERT_TRUE(pool_completed);
  EXPECT_EQ(pool_completed->free, pool_before->free + 5);

  // Deflate: the released huge pages are allocated again and read as zeros.
  auto deflated = move_target(guest, 0, "deflated=");
  EXPECT_EQ(field_u64(deflated, "zeroed"), 10 * kPagesPerMib);
  EXPECT_EQ(field_u64(deflated, "rewrite-ok"), 1u);
  auto pool_after = read_hugepage_pool(2 << 20);
  ASSERT_TRUE(pool_after);
  EXPECT_EQ(pool_after->free, pool_before->free) << "deflated huge pages are the VM's again";
  expect_clean_exit(guest);
}

// A huge page given back in part keeps its data: nothing of it was released.
TEST_F(VirtioBalloonTest, PartialHugepageKeepsItsData) {
  if (geteuid() != 0) GTEST_SKIP() << "reserving hugepages needs root (/proc/sys/vm/nr_hugepages)";
  constexpr uint64_t kMemoryMib = 64;
  HugepageReservation reservation(kMemoryMib / 2);
  ASSERT_TRUE(reservation.ok()) << "the kernel did not grant " << kMemoryMib / 2 << " free 2 MiB hugepages";
  auto spec = balloon_spec(kMemoryMib, 8, VirtioTransport::kPci);
  spec.machine.hugepages = HugePages::k2M;
  LiveGuest guest(spec);
  ASSERT_FALSE(guest.error()) << *guest.error();
  ASSERT_TRUE(guest.next_line("virtio-balloon touched=")) << guest.console();
  auto pool_before = read_hugepage_pool(2 << 20);
  ASSERT_TRUE(pool_before);
  auto inflated = move_target(guest, 1, "inflated=");  // half of one huge page
  EXPECT_EQ(field_u64(inflated, "inflated"), kPagesPerMib);
  auto pool_inflated = read_hugepage_pool(2 << 20);
  ASSERT_TRUE(pool_inflated);
  EXPECT_EQ(pool_inflated->free, pool_before->free);
  auto deflated = move_target(guest, 0, "deflated=");
  EXPECT_EQ(field_u64(deflated, "kept"), kPagesPerMib) << "the partial huge page still holds the guest's data";
  EXPECT_EQ(field_u64(deflated, "zeroed"), 0u);
  expect_clean_exit(guest);
}

TEST_F(VirtioBalloonTest, TargetWithoutBalloonOrAsLargeAsRamIsRefused) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.exit=0", 1, 64);
  auto vm = Vm::create(spec, test_vm_options());
  ASSERT_TRUE(vm) << vm.error().message();
  EXPECT_FALSE((*vm)->balloon());
  auto no_balloon = (*vm)->set_balloon_target_mib(8);
  ASSERT_FALSE(no_balloon);
  EXPECT_NE(no_balloon.error().message().find("no balloon"), std::string::npos) << no_balloon.error().message();

  spec.balloon = BalloonSpec{};
  auto with = Vm::create(spec, test_vm_options());
  ASSERT_TRUE(with) << with.error().message();
  auto too_big = (*with)->set_balloon_target_mib(64);
  EXPECT_FALSE(too_big);
  EXPECT_TRUE((*with)->set_balloon_target_mib(63));
  EXPECT_EQ((*with)->balloon()->target_mib(), 63u);
}

}  // namespace
}  // namespace skiff::test
