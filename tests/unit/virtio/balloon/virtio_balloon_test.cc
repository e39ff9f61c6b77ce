// SPDX-License-Identifier: Apache-2.0
// virtio-balloon through VirtqueueFake: the queues live in the fakes' heap memory, while the
// pages the balloon releases live in an anonymous mapping the test watches with mincore().
// That mapping covers guest addresses [kRamBase, kRamBase + kRamBytes): it shadows the
// fakes' RAM (so free page reports, whose buffers the queue checks against the fake's
// memory, land on pages the test can watch) and extends past it.
#include "virtio/balloon/virtio_balloon.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "state/state_blob.h"
#include "unit/virtio/virtqueue_fake.h"
#include "virtio/balloon/balloon_constants.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio::balloon {
namespace {

using testing::kFakeDefaultFeatures;
using testing::VirtqueueFake;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kRamBase = VirtqueueFake::kRamBase;  // 1 MiB
constexpr uint64_t kRamBytes = 8ull << 20;
constexpr uint64_t kRamPages = kRamBytes / kPage;
constexpr uint32_t kFirstPfn = kRamBase / kPage;

class CountingInterrupt : public VirtioInterrupt {
 public:
  void signal_used_queue(uint16_t) override { ++used; }
  void signal_config_change() override { ++config_changes; }
  void signal_needs_reset() override { ++needs_reset; }
  std::atomic<int> used{0};
  std::atomic<int> config_changes{0};
  std::atomic<int> needs_reset{0};
};

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return done();
}

bool wait_for_used(VirtqueueFake& fake, uint16_t count) {
  return wait_until([&] { return fake.used_idx() >= count; });
}

std::vector<uint8_t> pfn_bytes(std::span<const uint32_t> pfns) {
  std::vector<uint8_t> out(pfns.size() * 4);
  for (size_t i = 0; i < pfns.size(); ++i) {
    for (int b = 0; b < 4; ++b) out[i * 4 + b] = static_cast<uint8_t>(pfns[i] >> (8 * b));
  }
  return out;
}

std::vector<uint8_t> stat_bytes(std::initializer_list<std::pair<uint16_t, uint64_t>> entries) {
  std::vector<uint8_t> out;
  for (auto [tag, value] : entries) {
    out.push_back(static_cast<uint8_t>(tag));
    out.push_back(static_cast<uint8_t>(tag >> 8));
    for (int b = 0; b < 8; ++b) out.push_back(static_cast<uint8_t>(value >> (8 * b)));
  }
  return out;
}

// Resets the device when the test's queues are about to go away (declare it after them).
class ResetAtExit {
 public:
  explicit ResetAtExit(std::shared_ptr<VirtioBalloon> balloon) : balloon_(std::move(balloon)) {}
  ~ResetAtExit() { balloon_->reset(); }
  ResetAtExit(const ResetAtExit&) = delete;
  ResetAtExit& operator=(const ResetAtExit&) = delete;

 private:
  std::shared_ptr<VirtioBalloon> balloon_;
};

class VirtioBalloonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // SAFETY: a fresh private mapping owned by the fixture, unmapped in TearDown().
    void* host = mmap(nullptr, kRamBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(host, MAP_FAILED);
    ram_ = static_cast<uint8_t*>(host);
    GuestRegion region{kRamBase, kRamBytes, ram_};
    memory_ = GuestMemory::from_host_buffers(std::span(&region, 1));
  }
  void TearDown() override {
    if (balloon_) balloon_->reset();
    balloon_.reset();
    memory_ = GuestMemory();
    if (ram_ != nullptr) munmap(ram_, kRamBytes);
  }

  void make(const BalloonSpec& spec) {
    auto balloon = VirtioBalloon::create(spec, memory_);
    ASSERT_TRUE(balloon) << balloon.error().message();
    balloon_ = *balloon;
  }
  uint32_t config_word(uint32_t offset) {
    uint8_t bytes[4] = {};
    balloon_->read_config(offset, bytes);
    return bytes[0] | bytes[1] << 8 | bytes[2] << 16 | static_cast<uint32_t>(bytes[3]) << 24;
  }
  void write_actual(uint32_t pages) {
    uint8_t bytes[4] = {static_cast<uint8_t>(pages), static_cast<uint8_t>(pages >> 8),
                        static_cast<uint8_t>(pages >> 16), static_cast<uint8_t>(pages >> 24)};
    balloon_->write_config(kConfigActual, bytes);
  }
  // Touches guest pages [pfn, pfn + count) so they are resident.
  void touch(uint32_t pfn, uint32_t count) {
    for (uint32_t i = 0; i < count; ++i) ram_[(pfn - kFirstPfn + i) * kPage] = 0xa5;
  }
  uint32_t resident(uint32_t pfn, uint32_t count) {
    std::vector<unsigned char> vec(count);
    EXPECT_EQ(mincore(ram_ + (pfn - kFirstPfn) * kPage, count * kPage, vec.data()), 0);
    uint32_t n = 0;
    for (unsigned char v : vec) n += v & 1;
    return n;
  }

  uint8_t* ram_ = nullptr;
  GuestMemory memory_;
  std::shared_ptr<VirtioBalloon> balloon_;
  std::shared_ptr<CountingInterrupt> interrupt_ = std::make_shared<CountingInterrupt>();
};

TEST_F(VirtioBalloonTest, IdentityAndFeatures) {
  make({});
  EXPECT_EQ(balloon_->device_type(), kDeviceIdBalloon);
  EXPECT_EQ(balloon_->queue_max_sizes().size(), 2u);
  const uint64_t plain = balloon_->device_features();
  EXPECT_TRUE(has_feature(plain, kFeatureVersion1));
  EXPECT_FALSE(has_feature(plain, kFeatureStatsVq));
  EXPECT_FALSE(has_feature(plain, kFeatureMustTellHost));
  EXPECT_FALSE(has_feature(plain, kFeatureFreePageHint));
  EXPECT_EQ(balloon_->config_size(), kConfigSize);
  ASSERT_TRUE(balloon_->queue_notify_fd(1));
  EXPECT_FALSE(balloon_->queue_notify_fd(2));

  make({.target_mib = 0, .deflate_on_oom = true, .stats_interval_s = 5, .free_page_reporting = true});
  const uint64_t all = balloon_->device_features();
  EXPECT_TRUE(has_feature(all, kFeatureStatsVq));
  EXPECT_TRUE(has_feature(all, kFeatureDeflateOnOom));
  EXPECT_TRUE(has_feature(all, kFeatureFreePageReporting));
  EXPECT_EQ(balloon_->queue_max_sizes(), (std::vector<uint16_t>(4, VirtioBalloon::kQueueSize)));
}

TEST_F(VirtioBalloonTest, ConfigTargetAndActual) {
  make({.target_mib = 2});
  EXPECT_EQ(config_word(kConfigNumPages), 512u);
  EXPECT_EQ(balloon_->target_pages(), 512u);
  EXPECT_EQ(config_word(kConfigActual), 0u);
  EXPECT_EQ(config_word(kConfigFreePageHintCmdId), 0u);

  // The driver writes actual; the device's num_pages is read-only to it.
  write_actual(300);
  EXPECT_EQ(balloon_->actual_pages(), 300u);
  EXPECT_EQ(config_word(kConfigActual), 300u);
  uint8_t high_byte = 2;
  balloon_->write_config(kConfigActual + 1, std::span(&high_byte, 1));  // byte-wise write
  EXPECT_EQ(balloon_->actual_pages(), 300u % 256 + 2 * 256u);
  uint8_t junk[4] = {0xff, 0xff, 0xff, 0xff};
  balloon_->write_config(kConfigNumPages, junk);
  EXPECT_EQ(balloon_->target_pages(), 512u);
  balloon_->write_config(kConfigSize, junk);  // past the end: ignored
  uint8_t beyond[4] = {9, 9, 9, 9};
  balloon_->read_config(kConfigSize, beyond);
  EXPECT_EQ(beyond[0], 0);

  // The host's target: refused when it is not below RAM; before activation no interrupt.
  EXPECT_TRUE(balloon_->set_target_pages(kRamPages - 1));
  EXPECT_FALSE(balloon_->set_target_pages(kRamPages));
  EXPECT_FALSE(balloon_->set_target_mib(1ull << 60));
  EXPECT_EQ(balloon_->target_pages(), kRamPages - 1);
  EXPECT_EQ(interrupt_->config_changes.load(), 0);

  // After activation every change raises a configuration change notification.
  VirtqueueFake inflate, deflate;
  ResetAtExit stop(balloon_);
  ASSERT_TRUE(balloon_->activate(kFakeDefaultFeatures, {&inflate.queue(), &deflate.queue()}, interrupt_));
  ASSERT_TRUE(balloon_->set_target_mib(4));
  EXPECT_EQ(config_word(kConfigNumPages), 1024u);
  // Raised by the worker thread, just after.
  EXPECT_TRUE(wait_until([&] { return interrupt_->config_changes.load() == 1; }));
  ASSERT_TRUE(balloon_->set_target_mib(4));  // unchanged: no interrupt
  EXPECT_EQ(interrupt_->config_changes.load(), 1);

  // Reset empties the driver's side; the host's target stays.
  balloon_->reset();
  EXPECT_EQ(balloon_->actual_pages(), 0u);
  EXPECT_EQ(balloon_->target_pages(), 1024u);
}

TEST_F(VirtioBalloonTest, TargetAsLargeAsRamIsRefusedAtCreation) {
  auto balloon = VirtioBalloon::create({.target_mib = kRamBytes >> 20}, memory_);
  ASSERT_FALSE(balloon);
  EXPECT_NE(balloon.error().message().find("target_mib"), std::string::npos) << balloon.error().message();
}

TEST_F(VirtioBalloonTest, InflateReleasesTouchedPages) {
  make({});
  constexpr uint32_t kCount = 256;  // 1 MiB past the fakes' RAM
  const uint32_t first = kFirstPfn + 512;
  touch(first, kCount);
  ASSERT_EQ(resident(first, kCount), kCount);
  std::vector<uint32_t> pfns;
  for (uint32_t i = 0; i < kCount; ++i) pfns.push_back(first + kCount - 1 - i);  // Linux gives them in any order
  VirtqueueFake inflate, deflate;
  ResetAtExit stop(balloon_);
  auto bytes = pfn_bytes(pfns);
  auto sent = inflate.chain().readable(bytes).add();
  ASSERT_TRUE(balloon_->activate(kFakeDefaultFeatures, {&inflate.queue(), &deflate.queue()}, interrupt_));
  ASSERT_TRUE(wait_for_used(inflate, 1));
  EXPECT_EQ(inflate.take_used()[0], (testing::FakeUsedElement{sent.head, 0}));
  EXPECT_EQ(resident(first, kCount), 0u);
  EXPECT_GE(interrupt_->used.load(), 1);
  auto counters = balloon_->counters();
  EXPECT_EQ(counters.inflate_buffers, 1u);
  EXPECT_EQ(counters.reclaim.pages_discarded, kCount);
  EXPECT_EQ(counters.reclaim.bytes_released, kCount * kPage);
}

TEST_F(VirtioBalloonTest, InflateDeflateInflate) {
  make({});
  const uint32_t first = kFirstPfn + 1024;
  const uint32_t pfns[] = {first, first + 1, first + 2, first + 3};
  touch(first, 4);
  VirtqueueFake inflate, deflate;
  ResetAtExit stop(balloon_);
  ASSERT_TRUE(balloon_->activate(kFakeDefaultFeatures, {&inflate.queue(), &deflate.queue()}, interrupt_));

  auto bytes = pfn_bytes(pfns);
  inflate.chain().readable(bytes).add();
  balloon_->notify_queue(0);
  ASSERT_TRUE(wait_for_used(inflate, 1));
  EXPECT_EQ(resident(first, 4), 0u);

  deflate.chain().readable(bytes).add();
  balloon_->notify_queue(1);
  ASSERT_TRUE(wait_for_used(deflate, 1));
  touch(first, 4);  // the guest uses its pages again
  EXPECT_EQ(resident(first, 4), 4u);
  EXPECT_EQ(ram_[(first - kFirstPfn) * kPage], 0xa5);

  inflate.chain().readable(bytes).add();
  balloon_->notify_queue(0);
  ASSERT_TRUE(wait_for_used(inflate, 2));
  EXPECT_EQ(resident(first, 4), 0u);
  auto counters = balloon_->counters();
  EXPECT_EQ(counters.reclaim.pages_discarded, 8u);
  EXPECT_EQ(counters.reclaim.pages_reused, 4u);
  EXPECT_EQ(counters.deflate_buffers, 1u);
}

TEST_F(VirtioBalloonTest, PfnsOutsideRamAreIgnoredAndCounted) {
  make({});
  const uint32_t last = kFirstPfn + kRamPages - 1;
  touch(last, 1);
  touch(kFirstPfn, 1);
  // Below RAM, the first page, the last page, just past RAM, the largest PFN, a duplicate.
  const uint32_t pfns[] = {kFirstPfn - 1, kFirstPfn, last, last + 1, 0xffffffffu, last};
  VirtqueueFake inflate, deflate;
  ResetAtExit stop(balloon_);
  auto bytes = pfn_bytes(pfns);
  bytes.push_back(0x12);  // a partial trailing entry is ignored
  inflate.chain().readable(bytes).add();
  ASSERT_TRUE(balloon_->activate(kFakeDefaultFeatures, {&inflate.queue(), &deflate.queue()}, interrupt_));
  ASSERT_TRUE(wait_for_used(inflate, 1));
  EXPECT_EQ(resident(kFirstPfn, 1), 0u);
  EXPECT_EQ(resident(last, 1), 0u);
  auto counters = balloon_->counters();
  EXPECT_EQ(counters.reclaim.pages_discarded, 2u);
  EXPECT_EQ(counters.reclaim.out_of_range_pages, 3u);
  EXPECT_EQ(counters.malformed_buffers, 1u);
}

TEST_F(VirtioBalloonTest, MalformedAndEmptyBuffersAreReturned) {
  make({});
  VirtqueueFake inflate, deflate;
  ResetAtExit stop(balloon_);
  auto bad = inflate.chain().readable_at(0xfffffffffffff000ull, 64).add();  // outside RAM
  auto empty = inflate.chain().writable(16).add();                           // no readable part
  ASSERT_TRUE(balloon_->activate(kFakeDefaultFeatures, {&inflate.queue(), &deflate.queue()}, interrupt_));
  ASSERT_TRUE(wait_for_used(inflate, 2));
  auto used = inflate.take_used();
  EXPECT_EQ(used[0], (testing::FakeUsedElement{bad.head, 0}));
  EXPECT_EQ(used[1], (testing::FakeUsedElement{empty.head, 0}));
  EXPECT_EQ(balloon_->counters().malformed_buffers, 1u);
  EXPECT_EQ(interrupt_->needs_reset.load(), 0);
}

TEST_F(VirtioBalloonTest, StatsAreParsedHeldAndRequestedAtTheInterval) {
  make({.stats_interval_s = 1});
  VirtqueueFake inflate, deflate, stats;
  ResetAtExit stop(balloon_);
  auto first = stat_bytes({{kStatFreeMemory, 1000}, {kStatTotalMemory, 4000}, {kStatSwapIn, 1}, {99, 7},
                           {kStatHugetlbFailures, 3}});
  auto posted = stats.chain().readable(first).add();
  const uint64_t acked = kFakeDefaultFeatures | feature_mask(kFeatureStatsVq);
  ASSERT_TRUE(balloon_->activate(acked, {&inflate.queue(), &deflate.queue(), &stats.queue()}, interrupt_));
  ASSERT_TRUE(wait_until([&] { return balloon_->latest_stats().has_value(); }));
  auto latest = *balloon_->latest_stats();
  EXPECT_EQ(latest.free_memory, 1000u);
  EXPECT_EQ(latest.total_memory, 4000u);
  EXPECT_EQ(latest.swap_in, 1u);
  EXPECT_EQ(latest.hugetlb_failures, 3u);
  EXPECT_FALSE(latest.available_memory.has_value());
  ASSERT_EQ(latest.other.size(), 1u);
  EXPECT_EQ(latest.other[0], (BalloonStats::Tagged{99, 7}));
  EXPECT_EQ(latest.sequence, 1u);
  EXPECT_NE(latest.received_at, std::chrono::system_clock::time_point{});
  // The device holds the buffer until the interval has passed.
  EXPECT_EQ(stats.used_idx(), 0u);
  ASSERT_TRUE(wait_for_used(stats, 1));
  EXPECT_EQ(stats.take_used()[0], (testing::FakeUsedElement{posted.head, 0}));

  // The driver refills and posts it again.
  auto second = stat_bytes({{kStatFreeMemory, 2000}});
  stats.chain().readable(second).add();
  balloon_->notify_queue(2);
  ASSERT_TRUE(wait_until([&] { return balloon_->latest_stats()->sequence == 2; }));
  EXPECT_EQ(balloon_->latest_stats()->free_memory, 2000u);
  EXPECT_FALSE(balloon_->latest_stats()->total_memory.has_value());

  // Reset returns the held buffer.
  balloon_->reset();
  EXPECT_EQ(stats.used_idx(), 2u);
}

TEST_F(VirtioBalloonTest, ShortStatsBufferIsRejectedButHeld) {
  make({.stats_interval_s = 60});
  VirtqueueFake inflate, deflate, stats;
  ResetAtExit stop(balloon_);
  auto good = stat_bytes({{kStatFreeMemory, 5}});
  stats.chain().readable(good).add();
  const uint64_t acked = kFakeDefaultFeatures | feature_mask(kFeatureStatsVq);
  ASSERT_TRUE(balloon_->activate(acked, {&inflate.queue(), &deflate.queue(), &stats.queue()}, interrupt_));
  ASSERT_TRUE(wait_until([&] { return balloon_->counters().stats_received == 1; }));
  const uint8_t short_buffer[7] = {4, 0, 1, 2, 3, 4, 5};
  stats.chain().readable(short_buffer).add();
  balloon_->notify_queue(2);
  ASSERT_TRUE(wait_until([&] { return balloon_->counters().stats_rejected == 1; }));
  // The earlier buffer went back (the driver replaced it); the new one is held; the last
  // good statistics stay.
  EXPECT_EQ(stats.used_idx(), 1u);
  EXPECT_EQ(balloon_->latest_stats()->free_memory, 5u);
}

TEST_F(VirtioBalloonTest, ReportingQueueIndexFollowsAckedFeatures) {
  // Offered: stats and reporting. The driver takes reporting only, so reporting_vq is
  // queue 2 (§5.5.2: queues that do not exist take no index) and queue 3 is unused.
  make({.stats_interval_s = 10, .free_page_reporting = true});
  VirtqueueFake inflate, deflate, reporting;
  VirtqueueFake unused(16, kFakeDefaultFeatures, 1 << 20, /*activate_now=*/false);
  ResetAtExit stop(balloon_);
  // A 64 KiB free range inside the fake's RAM, page aligned; its shadow in the balloon's
  // RAM is touched so the test can see it released.
  const uint64_t free_gpa = reporting.alloc(16 * kPage, kPage);
  const auto free_pfn = static_cast<uint32_t>(free_gpa / kPage);
  touch(free_pfn, 16);
  auto sent = reporting.chain().writable_at(free_gpa, 16 * kPage).add();
  const uint64_t acked = kFakeDefaultFeatures | feature_mask(kFeatureFreePageReporting);
  ASSERT_TRUE(balloon_->activate(acked, {&inflate.queue(), &deflate.queue(), &reporting.queue(), &unused.queue()},
                                 interrupt_));
  ASSERT_TRUE(wait_for_used(reporting, 1));
  EXPECT_EQ(reporting.take_used()[0], (testing::FakeUsedElement{sent.head, 0}));
  EXPECT_EQ(resident(free_pfn, 16), 0u);
  auto counters = balloon_->counters();
  EXPECT_EQ(counters.report_buffers, 1u);
  EXPECT_EQ(counters.reclaim.pages_reported_free, 16u);
  EXPECT_FALSE(balloon_->latest_stats().has_value());
}

TEST_F(VirtioBalloonTest, ReportingQueueAfterStatsQueue) {
  make({.stats_interval_s = 10, .free_page_reporting = true});
  VirtqueueFake inflate, deflate, stats, reporting;
  ResetAtExit stop(balloon_);
  const uint64_t free_gpa = reporting.alloc(4 * kPage, kPage);
  touch(static_cast<uint32_t>(free_gpa / kPage), 4);
  reporting.chain().writable_at(free_gpa, 4 * kPage).add();
  auto stat = stat_bytes({{kStatAvailableMemory, 77}});
  stats.chain().readable(stat).add();
  const uint64_t acked =
      kFakeDefaultFeatures | feature_mask(kFeatureStatsVq) | feature_mask(kFeatureFreePageReporting);
  ASSERT_TRUE(balloon_->activate(acked, {&inflate.queue(), &deflate.queue(), &stats.queue(), &reporting.queue()},
                                 interrupt_));
  ASSERT_TRUE(wait_for_used(reporting, 1));
  ASSERT_TRUE(wait_until([&] { return balloon_->latest_stats().has_value(); }));
  EXPECT_EQ(balloon_->latest_stats()->available_memory, 77u);
  EXPECT_EQ(resident(static_cast<uint32_t>(free_gpa / kPage), 4), 0u);
}

TEST_F(VirtioBalloonTest, WrongQueueCountIsRefusedAndResetStopsServing) {
  make({});
  VirtqueueFake inflate, deflate;
  ResetAtExit stop(balloon_);
  EXPECT_FALSE(balloon_->activate(kFakeDefaultFeatures, {&inflate.queue()}, interrupt_));
  ASSERT_TRUE(balloon_->activate(kFakeDefaultFeatures, {&inflate.queue(), &deflate.queue()}, interrupt_));
  balloon_->reset();
  const uint32_t pfn[] = {kFirstPfn + 100};
  auto bytes = pfn_bytes(pfn);
  inflate.chain().readable(bytes).add();
  balloon_->notify_queue(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(inflate.used_idx(), 0u) << "served after reset";
  ASSERT_TRUE(balloon_->activate(kFakeDefaultFeatures, {&inflate.queue(), &deflate.queue()}, interrupt_));
  EXPECT_TRUE(wait_for_used(inflate, 1));
}

// ---- State: pause, save, restore -------------------------------------------------------------

state::StateBlob round_trip(const state::StateBlob& blob) {
  auto decoded = state::StateBlob::decode(blob.encode());
  EXPECT_TRUE(decoded) << (decoded ? "" : decoded.error().message());
  return decoded ? *decoded : state::StateBlob("broken", 1);
}

// A second guest RAM like the fixture's, for the restored device.
struct SecondRam {
  SecondRam() {
    // SAFETY: a fresh private mapping owned by this object, unmapped in the destructor.
    void* mapped = mmap(nullptr, kRamBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(mapped, MAP_FAILED);
    host = static_cast<uint8_t*>(mapped);
    GuestRegion region{kRamBase, kRamBytes, host};
    memory = GuestMemory::from_host_buffers(std::span(&region, 1));
  }
  ~SecondRam() {
    memory = GuestMemory();
    munmap(host, kRamBytes);
  }
  SecondRam(const SecondRam&) = delete;
  SecondRam& operator=(const SecondRam&) = delete;
  void touch(uint32_t pfn, uint32_t count) {
    for (uint32_t i = 0; i < count; ++i) host[(pfn - kFirstPfn + i) * kPage] = 0xa5;
  }
  uint32_t resident(uint32_t pfn, uint32_t count) {
    std::vector<unsigned char> vec(count);
    EXPECT_EQ(mincore(host + (pfn - kFirstPfn) * kPage, count * kPage, vec.data()), 0);
    uint32_t n = 0;
    for (unsigned char v : vec) n += v & 1;
    return n;
  }
  uint8_t* host = nullptr;
  GuestMemory memory;
};

TEST_F(VirtioBalloonTest, RestoredBalloonContinuesLikeTheResumedOne) {
  const BalloonSpec spec{.target_mib = 2, .stats_interval_s = 60};
  make(spec);
  // Without EVENT_IDX the driver wants an interrupt for every used buffer: the counts below
  // show each one.
  const uint64_t acked = kFakeDefaultFeatures | feature_mask(kFeatureStatsVq);
  VirtqueueFake inflate, deflate, stats;
  ResetAtExit stop(balloon_);
  auto first_stats = stats.chain().readable(stat_bytes({{kStatFreeMemory, 1234}, {77, 5}})).add();
  const uint32_t first = kFirstPfn + 512;
  touch(first, 8);
  std::vector<uint32_t> some = {first, first + 1, first + 2, first + 3};
  inflate.chain().readable(pfn_bytes(some)).add();
  ASSERT_TRUE(balloon_->activate(acked, {&inflate.queue(), &deflate.queue(), &stats.queue()}, interrupt_));
  ASSERT_TRUE(wait_for_used(inflate, 1));
  ASSERT_TRUE(wait_until([&] { return balloon_->latest_stats().has_value(); }));
  write_actual(4);  // the driver's count
  EXPECT_EQ(resident(first, 4), 0u);
  EXPECT_EQ(stats.used_idx(), 0u) << "the stats buffer is held";
  const int used_before = interrupt_->used.load();

  ASSERT_TRUE(balloon_->pause());
  // The held stats buffer went back (the request for new statistics); its interrupt waits.
  EXPECT_EQ(stats.used_idx(), 1u);
  EXPECT_EQ(stats.used_elem(0), (testing::FakeUsedElement{first_stats.head, 0}));
  // While paused: a new target (announced after resume), another inflate buffer.
  ASSERT_TRUE(balloon_->set_target_mib(3));
  std::vector<uint32_t> more = {first + 4, first + 5, first + 6, first + 7};
  auto second_inflate = inflate.chain().readable(pfn_bytes(more)).add();
  balloon_->notify_queue(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(inflate.used_idx(), 1u) << "served while paused";
  EXPECT_EQ(interrupt_->used.load(), used_before);
  EXPECT_EQ(interrupt_->config_changes.load(), 0);

  // Snapshot and restore into a fresh balloon over a second RAM (its pages touched like the
  // first's, as a restored memory image would be).
  const state::StateBlob inflate_state = round_trip(inflate.queue().save_state());
  const state::StateBlob deflate_state = round_trip(deflate.queue().save_state());
  const state::StateBlob stats_state = round_trip(stats.queue().save_state());
  auto device_state = balloon_->save_state();
  ASSERT_TRUE(device_state);
  EXPECT_EQ(device_state->kind(), "virtio-balloon");
  VirtqueueFake inflate_copy(VirtqueueFake::CopyOf{inflate}), deflate_copy(VirtqueueFake::CopyOf{deflate}),
      stats_copy(VirtqueueFake::CopyOf{stats});
  SecondRam ram2;
  ram2.touch(first + 4, 4);
  auto created = VirtioBalloon::create(spec, ram2.memory);
  ASSERT_TRUE(created) << created.error().message();
  std::shared_ptr<VirtioBalloon> restored = *created;
  ResetAtExit stop_restored(restored);
  auto ok = restored->restore_state(round_trip(*device_state));
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(restored->target_pages(), 768u);
  EXPECT_EQ(restored->actual_pages(), 4u);
  EXPECT_EQ(restored->latest_stats(), balloon_->latest_stats());
  EXPECT_EQ(restored->counters(), balloon_->counters());
  ASSERT_TRUE(inflate_copy.restore(inflate_state));
  ASSERT_TRUE(deflate_copy.restore(deflate_state));
  ASSERT_TRUE(stats_copy.restore(stats_state));
  auto restored_interrupt = std::make_shared<CountingInterrupt>();
  ASSERT_TRUE(restored->activate(acked, {&inflate_copy.queue(), &deflate_copy.queue(), &stats_copy.queue()},
                                 restored_interrupt));
  ASSERT_TRUE(balloon_->resume());

  // Both serve the pending inflate buffer, raise the interrupts pending since pause() and
  // announce the new target once.
  ASSERT_TRUE(wait_for_used(inflate, 2));
  ASSERT_TRUE(wait_for_used(inflate_copy, 2));
  EXPECT_EQ(inflate_copy.take_used(), inflate.take_used());
  EXPECT_EQ(inflate.used_elem(1), (testing::FakeUsedElement{second_inflate.head, 0}));
  EXPECT_EQ(resident(first + 4, 4), 0u);
  EXPECT_EQ(ram2.resident(first + 4, 4), 0u);
  EXPECT_TRUE(wait_until([&] { return interrupt_->config_changes.load() == 1; }));
  EXPECT_TRUE(wait_until([&] { return restored_interrupt->config_changes.load() == 1; }));
  // Two used-buffer interrupts each: the stats buffer returned by pause(), the inflate.
  EXPECT_TRUE(wait_until([&] { return interrupt_->used.load() == used_before + 2; }));
  EXPECT_TRUE(wait_until([&] { return restored_interrupt->used.load() == 2; }));
  EXPECT_TRUE(wait_until([&] { return restored->counters() == balloon_->counters(); }));
  EXPECT_EQ(restored->counters().inflate_buffers, 2u);
  EXPECT_EQ(restored->counters().reclaim.pages_discarded, 8u);

  // The driver answers the stats request on both: the sequence goes on.
  stats.chain().readable(stat_bytes({{kStatFreeMemory, 999}})).add();
  stats_copy.chain().readable(stat_bytes({{kStatFreeMemory, 999}})).add();
  balloon_->notify_queue(2);
  restored->notify_queue(2);
  ASSERT_TRUE(wait_until([&] { return balloon_->latest_stats()->sequence == 2; }));
  ASSERT_TRUE(wait_until([&] { return restored->latest_stats()->sequence == 2; }));
  EXPECT_EQ(restored->latest_stats()->free_memory, 999u);
  EXPECT_EQ(restored->counters().stats_received, 2u);
  EXPECT_EQ(stats_copy.ram(), stats.ram());
}

TEST_F(VirtioBalloonTest, TargetSetBetweenRestoreAndActivationIsAnnounced) {
  make({});
  auto saved = balloon_->save_state();
  ASSERT_TRUE(saved);
  auto created = VirtioBalloon::create({}, memory_);
  ASSERT_TRUE(created);
  std::shared_ptr<VirtioBalloon> restored = *created;
  ASSERT_TRUE(restored->restore_state(*saved));
  // The restored guest's driver is running already: it learns the target only from a
  // configuration change notification.
  ASSERT_TRUE(restored->set_target_mib(2));
  VirtqueueFake inflate, deflate;
  ResetAtExit stop(restored);
  ASSERT_TRUE(restored->activate(kFakeDefaultFeatures, {&inflate.queue(), &deflate.queue()}, interrupt_));
  EXPECT_TRUE(wait_until([&] { return interrupt_->config_changes.load() == 1; }));
}

TEST_F(VirtioBalloonTest, PauseWithoutActivationAndResetWhilePaused) {
  make({.stats_interval_s = 1});
  EXPECT_TRUE(balloon_->pause());
  EXPECT_TRUE(balloon_->resume());
  VirtqueueFake inflate, deflate, stats;
  ResetAtExit stop(balloon_);
  const uint64_t acked = kFakeDefaultFeatures | feature_mask(kFeatureStatsVq);
  ASSERT_TRUE(balloon_->activate(acked, {&inflate.queue(), &deflate.queue(), &stats.queue()}, interrupt_));
  ASSERT_TRUE(balloon_->pause());
  EXPECT_TRUE(balloon_->pause());
  balloon_->reset();
  ASSERT_TRUE(balloon_->activate(acked, {&inflate.queue(), &deflate.queue(), &stats.queue()}, interrupt_));
  ASSERT_TRUE(balloon_->set_target_mib(1));
  EXPECT_TRUE(wait_until([&] { return interrupt_->config_changes.load() == 1; }));
}

TEST_F(VirtioBalloonTest, RestoreRefusesBadState) {
  make({.target_mib = 1});
  auto good = balloon_->save_state();
  ASSERT_TRUE(good);
  EXPECT_TRUE(balloon_->restore_state(*good));
  EXPECT_FALSE(balloon_->restore_state(state::StateBlob("virtio-rng", 1)));
  auto expect_refused = [&](const state::StateBlob& bad, const std::string& what) {
    auto result = balloon_->restore_state(bad);
    ASSERT_FALSE(result) << bad.describe();
    EXPECT_NE(result.error().message().find(what), std::string::npos) << result.error().message();
    EXPECT_EQ(balloon_->target_pages(), 256u) << "nothing applied";
  };
  state::StateBlob target_too_large = *good;
  target_too_large.put("num_pages", kRamPages);
  expect_refused(target_too_large, "num_pages");
  state::StateBlob actual_too_wide = *good;
  actual_too_wide.put("actual", uint64_t{1} << 32);
  expect_refused(actual_too_wide, "\"actual\"");
  // Statistics numbered beyond those received.
  state::StateBlob stats_blob("balloon-stats", 1);
  stats_blob.put_u64s("other_tags", std::vector<uint64_t>{}).put_u64s("other_values", std::vector<uint64_t>{});
  stats_blob.put("received_at_ns", 5).put("sequence", 3);
  state::StateBlob sequence_ahead = *good;
  sequence_ahead.put_bool("has_stats", true).put("stats_received", 2).put_blob("stats", stats_blob);
  expect_refused(sequence_ahead, "statistics number 3 of 2");
  state::StateBlob stats_missing = *good;
  stats_missing.put_bool("has_stats", true);
  expect_refused(stats_missing, "\"stats\" is missing");
  state::StateBlob tag_too_wide = sequence_ahead;
  tag_too_wide.put("stats_received", 3).put_blob(
      "stats", state::StateBlob(stats_blob).put_u64s("other_tags", std::vector<uint64_t>{70000}).put_u64s(
                   "other_values", std::vector<uint64_t>{1}));
  expect_refused(tag_too_wide, "other_tags");
  // The reclaimer's part: a hugetlbfs region this RAM does not have.
  state::StateBlob region("hugetlb-region", 1);
  region.put("first_page", kFirstPfn).put_blob("bitmap", HugePageBitmap(512).save_state());
  state::StateBlob reclaimer = good->blob("reclaimer").value();
  reclaimer.put_blobs("hugetlb_regions", std::vector<state::StateBlob>{region});
  state::StateBlob foreign_reclaimer = *good;
  foreign_reclaimer.put_blob("reclaimer", reclaimer);
  expect_refused(foreign_reclaimer, "hugetlb_regions");
  state::StateBlob missing("virtio-balloon", 1);
  expect_refused(missing, "is missing");

  // A restore that is accepted carries the sequence on; after activation it is refused.
  state::StateBlob with_stats = *good;
  with_stats.put_bool("has_stats", true).put("stats_received", 3).put_blob("stats", stats_blob);
  ASSERT_TRUE(balloon_->restore_state(with_stats));
  EXPECT_EQ(balloon_->latest_stats()->sequence, 3u);
  VirtqueueFake inflate, deflate;
  ResetAtExit stop(balloon_);
  ASSERT_TRUE(balloon_->activate(kFakeDefaultFeatures, {&inflate.queue(), &deflate.queue()}, interrupt_));
  EXPECT_FALSE(balloon_->restore_state(*good));
}

// ---- The stats parser on its own ----------------------------------------------------------------

TEST(BalloonStatsParseTest, KnownAndUnknownTags) {
  auto bytes = stat_bytes({{kStatSwapIn, 1}, {kStatSwapOut, 2}, {kStatMajorFaults, 3}, {kStatMinorFaults, 4},
                           {kStatFreeMemory, 5}, {kStatTotalMemory, 6}, {kStatAvailableMemory, 7},
                           {kStatDiskCaches, 8}, {kStatHugetlbAllocations, 9}, {kStatHugetlbFailures, 10},
                           {10, 11}, {0xffff, 0xffffffffffffffffull}, {kStatFreeMemory, 50}});
  auto stats = parse_balloon_stats(bytes);
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(stats->swap_in, 1u);
  EXPECT_EQ(stats->swap_out, 2u);
  EXPECT_EQ(stats->major_faults, 3u);
  EXPECT_EQ(stats->minor_faults, 4u);
  EXPECT_EQ(stats->free_memory, 50u) << "a repeated tag keeps the last value";
  EXPECT_EQ(stats->total_memory, 6u);
  EXPECT_EQ(stats->available_memory, 7u);
  EXPECT_EQ(stats->disk_caches, 8u);
  EXPECT_EQ(stats->hugetlb_allocations, 9u);
  EXPECT_EQ(stats->hugetlb_failures, 10u);
  ASSERT_EQ(stats->other.size(), 2u);
  EXPECT_EQ(stats->other[0], (BalloonStats::Tagged{10, 11}));
  EXPECT_EQ(stats->other[1], (BalloonStats::Tagged{0xffff, 0xffffffffffffffffull}));
}

TEST(BalloonStatsParseTest, NamedStatsLeaveOutUnreportedValues) {
  auto stats = parse_balloon_stats(stat_bytes({{kStatFreeMemory, 4096}, {kStatHugetlbFailures, 2}, {42, 7}}));
  ASSERT_TRUE(stats) << stats.error().message();
  const std::map<std::string, uint64_t> expected = {{"free_memory", 4096}, {"hugetlb_failures", 2}, {"tag_42", 7}};
  EXPECT_EQ(named_stats(*stats), expected);
  EXPECT_TRUE(named_stats(BalloonStats{}).empty());
}

TEST(BalloonStatsParseTest, BadLengthsAreRefused) {
  EXPECT_FALSE(parse_balloon_stats({}));
  std::vector<uint8_t> nine(9), eleven(11), too_many(kStatEntrySize * (kMaxStatsEntries + 1));
  EXPECT_FALSE(parse_balloon_stats(nine));
  EXPECT_FALSE(parse_balloon_stats(eleven));
  EXPECT_FALSE(parse_balloon_stats(too_many));
  std::vector<uint8_t> most(kStatEntrySize * kMaxStatsEntries);
  auto parsed = parse_balloon_stats(most);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->swap_in, 0u);  // every entry is tag 0 = 0
}

}  // namespace
}  // namespace skiff::virtio::balloon
