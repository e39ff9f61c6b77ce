// SPDX-License-Identifier: Apache-2.0
#include "virtio/blk/virtio_blk.h"

#include <dirent.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

#include "state/state_blob.h"
#include "unit/virtio/blk/blk_test_util.h"
#include "unit/virtio/virtqueue_fake.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {
namespace {

using testing::blk_header;
using testing::blk_segment;
using testing::CountingInterrupt;
using testing::disk_spec;
using testing::FakeChain;
using testing::pattern;
using testing::status_of;
using testing::TempImage;
using testing::VirtqueueFake;
using testing::wait_for_used;

// ---- A fake engine: records what the device asks and answers as told. ------------------------

struct FakeEngineControl {
  struct Submission {
    std::string op;
    uint64_t tag = 0;
    uint64_t offset = 0;
    uint64_t len = 0;
    bool unmap = false;
  };
  std::mutex mutex;
  std::vector<Submission> log;
  bool hold = false;              // keep completions until drain()
  std::optional<int64_t> result;  // overrides the natural result
  int drains = 0;
  std::vector<Submission> snapshot() {
    std::lock_guard lock(mutex);
    return log;
  }
};

class FakeEngine : public BlockIoEngine {
 public:
  explicit FakeEngine(std::shared_ptr<FakeEngineControl> control) : control_(std::move(control)) {}
  std::string_view name() const override { return "fake"; }
  int completion_fd() const override { return -1; }
  void submit_read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override {
    // Reads produce 0x5a bytes so the test sees data arrive in guest memory.
    for (const iovec& v : iov) std::memset(v.iov_base, 0x5a, v.iov_len);
    add("read", tag, offset, iovec_bytes(iov), false, static_cast<int64_t>(iovec_bytes(iov)));
  }
  void submit_write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override {
    add("write", tag, offset, iovec_bytes(iov), false, static_cast<int64_t>(iovec_bytes(iov)));
  }
  void submit_flush(uint64_t tag) override { add("flush", tag, 0, 0, false, 0); }
  void submit_discard(uint64_t tag, uint64_t offset, uint64_t len) override {
    add("discard", tag, offset, len, false, 0);
  }
  void submit_write_zeroes(uint64_t tag, uint64_t offset, uint64_t len, bool unmap) override {
    add("write_zeroes", tag, offset, len, unmap, 0);
  }
  void kick() override {}
  void reap(std::vector<IoCompletion>& out) override {
    std::lock_guard lock(control_->mutex);
    if (control_->hold) return;
    out.insert(out.end(), pending_.begin(), pending_.end());
    pending_.clear();
  }
  size_t in_flight() const override { return pending_.size(); }
  void drain(std::vector<IoCompletion>& out) override {
    std::lock_guard lock(control_->mutex);
    ++control_->drains;
    out.insert(out.end(), pending_.begin(), pending_.end());
    pending_.clear();
  }

 private:
  void add(const char* op, uint64_t tag, uint64_t offset, uint64_t len, bool unmap, int64_t natural) {
    std::lock_guard lock(control_->mutex);
    control_->log.push_back({op, tag, offset, len, unmap});
    pending_.push_back({tag, control_->result.value_or(natural)});
  }
  std::shared_ptr<FakeEngineControl> control_;
  std::vector<IoCompletion> pending_;
};

DiskInfo fake_disk_info() {
  DiskInfo info;
  info.capacity = 1 << 20;
  info.logical_block_size = 512;
  info.physical_block_size = 4096;
  info.min_io_size = 4096;
  info.optimal_io_size = 65536;
  info.discard_supported = true;
  info.discard_granularity = 4096;
  return info;
}

template <typename T>
T config_field(VirtioBlk& device, uint32_t offset) {
  T value{};
  device.read_config(offset, std::span(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
  return value;
}

class VirtioBlkFakeTest : public ::testing::Test {
 protected:
  std::shared_ptr<VirtioBlk> make(DiskSpec spec, DiskInfo info = fake_disk_info()) {
    auto device = VirtioBlk::create_with_engines(
        spec, fake_.memory(), info, [control = control_](uint16_t, uint32_t) {
          return std::make_unique<FakeEngine>(control);
        });
    EXPECT_TRUE(device) << device.error().message();
    return device ? *device : nullptr;
  }
  std::shared_ptr<VirtioBlk> make_and_activate(DiskSpec spec = disk_spec("/fake")) {
    auto device = make(std::move(spec));
    if (device) {
      auto ok = device->activate(device->device_features(), {&fake_.queue()}, interrupt_);
      EXPECT_TRUE(ok) << ok.error().message();
    }
    return device;
  }

  VirtqueueFake fake_{64, testing::kFakeDefaultFeatures | feature_mask(kFeatureRingEventIdx), 1 << 20};
  std::shared_ptr<FakeEngineControl> control_ = std::make_shared<FakeEngineControl>();
  std::shared_ptr<CountingInterrupt> interrupt_ = std::make_shared<CountingInterrupt>();
};

TEST_F(VirtioBlkFakeTest, FeaturesAndConfigSpace) {
  DiskSpec spec = disk_spec("/fake");
  spec.queues = 2;
  DiskInfo info = fake_disk_info();
  info.logical_block_size = 4096;
  info.physical_block_size = 16384;
  auto device = make(spec, info);
  ASSERT_TRUE(device);
  EXPECT_EQ(device->device_type(), kDeviceIdBlock);
  EXPECT_EQ(device->queue_max_sizes(), (std::vector<uint16_t>{64, 64}));
  const uint64_t features = device->device_features();
  for (unsigned bit : {kFeatureVersion1, kFeatureRingIndirectDesc, kFeatureRingEventIdx, kBlkFeatureSizeMax,
                       kBlkFeatureSegMax, kBlkFeatureBlkSize, kBlkFeatureTopology, kBlkFeatureFlush,
                       kBlkFeatureDiscard, kBlkFeatureWriteZeroes, kBlkFeatureMq}) {
    EXPECT_TRUE(has_feature(features, bit)) << bit;
  }
  EXPECT_FALSE(has_feature(features, kBlkFeatureRo));
  EXPECT_FALSE(has_feature(features, kFeatureRingPacked));
  EXPECT_EQ(device->config_size(), kBlkConfigSize);
  EXPECT_EQ(config_field<uint64_t>(*device, kBlkConfigCapacity), 2048u);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigSizeMax), VirtioBlk::kSizeMax);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigSegMax), 62u);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigBlkSize), 4096u);
  EXPECT_EQ(config_field<uint8_t>(*device, kBlkConfigPhysicalBlockExp), 2u);
  EXPECT_EQ(config_field<uint8_t>(*device, kBlkConfigAlignmentOffset), 0u);
  EXPECT_EQ(config_field<uint16_t>(*device, kBlkConfigMinIoSize), 1u);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigOptIoSize), 16u);
  EXPECT_EQ(config_field<uint8_t>(*device, kBlkConfigWriteback), 1u);
  EXPECT_EQ(config_field<uint16_t>(*device, kBlkConfigNumQueues), 2u);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigMaxDiscardSectors), VirtioBlk::kMaxDiscardSectors);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigMaxDiscardSeg), VirtioBlk::kMaxDiscardSegments);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigDiscardAlignment), 8u);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigMaxWriteZeroesSectors), VirtioBlk::kMaxWriteZeroesSectors);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigMaxWriteZeroesSeg), VirtioBlk::kMaxWriteZeroesSegments);
  EXPECT_EQ(config_field<uint8_t>(*device, kBlkConfigWriteZeroesMayUnmap), 1u);
  // Beyond the end reads as zero; writes are ignored.
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigSize), 0u);
  uint8_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  device->write_config(kBlkConfigCapacity, junk);
  EXPECT_EQ(config_field<uint64_t>(*device, kBlkConfigCapacity), 2048u);
  // Alignment of I/O follows the logical block for block devices / O_DIRECT only.
  EXPECT_EQ(device->limits().alignment, 512u);
}

TEST_F(VirtioBlkFakeTest, ReadOnlyAndDiscardIgnoreChangeTheFeatures) {
  DiskSpec spec = disk_spec("/fake");
  spec.read_only = true;
  auto ro = make(spec);
  ASSERT_TRUE(ro);
  EXPECT_TRUE(has_feature(ro->device_features(), kBlkFeatureRo));
  EXPECT_FALSE(has_feature(ro->device_features(), kBlkFeatureDiscard));
  EXPECT_FALSE(has_feature(ro->device_features(), kBlkFeatureWriteZeroes));
  EXPECT_FALSE(has_feature(ro->device_features(), kBlkFeatureMq));
  spec.read_only = false;
  spec.discard = DiscardMode::kIgnore;
  auto ignore = make(spec);
  ASSERT_TRUE(ignore);
  EXPECT_FALSE(has_feature(ignore->device_features(), kBlkFeatureDiscard));
  EXPECT_TRUE(has_feature(ignore->device_features(), kBlkFeatureWriteZeroes));
  EXPECT_EQ(config_field<uint8_t>(*ignore, kBlkConfigWriteZeroesMayUnmap), 0u);
  EXPECT_EQ(config_field<uint32_t>(*ignore, kBlkConfigMaxDiscardSectors), 0u);
}

TEST_F(VirtioBlkFakeTest, RefusesBadSpecs) {
  DiskSpec spec = disk_spec("/fake");
  spec.serial = std::string(21, 's');
  EXPECT_FALSE(VirtioBlk::create_with_engines(spec, fake_.memory(), fake_disk_info(), nullptr));
  spec = disk_spec("/fake");
  spec.queue_size = 100;
  EXPECT_FALSE(VirtioBlk::create_with_engines(spec, fake_.memory(), fake_disk_info(), nullptr));
  spec.queue_size = 64;
  spec.queues = 0;
  EXPECT_FALSE(VirtioBlk::create_with_engines(spec, fake_.memory(), fake_disk_info(), nullptr));
}

TEST_F(VirtioBlkFakeTest, ServesEachRequestType) {
  DiskSpec spec = disk_spec("/fake");
  spec.serial = "SERIAL-1234";
  auto device = make_and_activate(spec);
  ASSERT_TRUE(device);
  auto read = fake_.chain().readable(blk_header(kBlkTypeIn, 8)).writable(1024).writable(1).add();
  auto write = fake_.chain().readable(blk_header(kBlkTypeOut, 16)).readable(pattern(512, 1)).writable(1).add();
  auto flush = fake_.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  auto get_id = fake_.chain().readable(blk_header(kBlkTypeGetId, 0)).writable(20).writable(1).add();
  auto discard = fake_.chain()
                     .readable(blk_header(kBlkTypeDiscard, 0))
                     .readable(testing::concat(blk_segment(0, 8, 0), blk_segment(64, 8, 0)))
                     .writable(1)
                     .add();
  auto zeroes = fake_.chain()
                    .readable(blk_header(kBlkTypeWriteZeroes, 0))
                    .readable(blk_segment(32, 8, kBlkSegmentFlagUnmap))
                    .writable(1)
                    .add();
  device->notify_queue(0);
  ASSERT_TRUE(wait_for_used(fake_, 6, device.get()));
  for (const FakeChain* chain : {&read, &write, &flush, &get_id, &discard, &zeroes}) {
    EXPECT_EQ(status_of(fake_, *chain), kBlkStatusOk) << chain->head;
  }
  auto used = fake_.take_used();
  ASSERT_EQ(used.size(), 6u);
  // GET_ID is answered at once, the others when the engine completes them: find by head.
  auto read_used = std::find_if(used.begin(), used.end(), [&](const auto& u) { return u.id == read.head; });
  ASSERT_NE(read_used, used.end());
  EXPECT_EQ(read_used->len, 1025u);
  EXPECT_EQ(fake_.read(read.writable[0].addr, 1024), std::vector<uint8_t>(1024, 0x5a));
  const std::string serial = "SERIAL-1234";
  auto id = fake_.read(get_id.writable[0].addr, 20);
  EXPECT_EQ(std::string(id.begin(), id.begin() + 11), serial);
  EXPECT_EQ(id[11], 0);  // NUL-padded
  auto log = control_->snapshot();
  ASSERT_EQ(log.size(), 6u);  // GET_ID never reaches the engine
  EXPECT_EQ(log[0].op, "read");
  EXPECT_EQ(log[0].offset, 8u * 512);
  EXPECT_EQ(log[0].len, 1024u);
  EXPECT_EQ(log[1].op, "write");
  EXPECT_EQ(log[1].offset, 16u * 512);
  EXPECT_EQ(log[2].op, "flush");
  EXPECT_EQ(log[3].op, "discard");
  EXPECT_EQ(log[4].op, "discard");
  EXPECT_EQ(log[4].offset, 64u * 512);
  EXPECT_EQ(log[5].op, "write_zeroes");
  EXPECT_TRUE(log[5].unmap);
  EXPECT_EQ(log[3].tag, log[4].tag);  // two segments, one request
  EXPECT_GE(interrupt_->used.load(), 1);
  BlkStats stats = device->stats();
  EXPECT_EQ(stats.reads, 1u);
  EXPECT_EQ(stats.writes, 1u);
  EXPECT_EQ(stats.read_bytes, 1024u);
  EXPECT_EQ(stats.write_bytes, 512u);
  EXPECT_EQ(stats.flushes, 1u);
  EXPECT_EQ(stats.discards, 1u);
  EXPECT_EQ(stats.write_zeroes, 1u);
  EXPECT_EQ(stats.errors, 0u);
  // Five requests went to the engine (read, write, flush, a two-range discard, write-zeroes).
  EXPECT_EQ(stats.timed_requests, 5u);
  EXPECT_GE(stats.latency_total_ns, stats.latency_max_ns);
  EXPECT_GT(stats.latency_max_ns, 0u);
  device->reset();
}

TEST_F(VirtioBlkFakeTest, GetIdOf20BytesHasNoTerminatorAndDefaultsToTheId) {
  DiskSpec spec = disk_spec("/fake", "the-disk-id");
  spec.serial = "ABCDEFGHIJKLMNOPQRST";
  auto device = make_and_activate(spec);
  ASSERT_TRUE(device);
  auto get_id = fake_.chain().readable(blk_header(kBlkTypeGetId, 0)).writable(21).add();
  ASSERT_TRUE(wait_for_used(fake_, 1, device.get()));
  auto id = fake_.read(get_id.writable[0].addr, 20);
  EXPECT_EQ(std::string(id.begin(), id.end()), spec.serial);
  EXPECT_EQ(fake_.take_used()[0].len, 21u);
  device->reset();

  VirtqueueFake fake2(16);
  spec.serial.clear();
  auto device2 = VirtioBlk::create_with_engines(spec, fake2.memory(), fake_disk_info(),
                                                [c = control_](uint16_t, uint32_t) { return std::make_unique<FakeEngine>(c); });
  ASSERT_TRUE(device2);
  ASSERT_TRUE((*device2)->activate((*device2)->device_features(), {&fake2.queue()}, interrupt_));
  auto get_id2 = fake2.chain().readable(blk_header(kBlkTypeGetId, 0)).writable(20).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake2, 1, device2->get()));
  auto id2 = fake2.read(get_id2.writable[0].addr, 20);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(id2.data())), "the-disk-id");
}

TEST_F(VirtioBlkFakeTest, GuestErrorsAreAnsweredNotFatal) {
  DiskSpec spec = disk_spec("/fake");
  auto device = make_and_activate(spec);
  ASSERT_TRUE(device);
  auto out_of_range = fake_.chain().readable(blk_header(kBlkTypeIn, 2048)).writable(512).writable(1).add();
  auto unsupported = fake_.chain().readable(blk_header(77, 0)).writable(1).add();
  auto short_header = fake_.chain().readable(std::vector<uint8_t>(8, 0)).writable(1).add();
  auto no_status = fake_.chain().readable(blk_header(kBlkTypeFlush, 0)).add();
  auto bad_buffer = fake_.chain().readable(blk_header(kBlkTypeIn, 0)).writable_at(fake_.ram_end() + 4096, 512).add();
  ASSERT_TRUE(wait_for_used(fake_, 5, device.get()));
  EXPECT_EQ(status_of(fake_, out_of_range), kBlkStatusIoErr);
  EXPECT_EQ(status_of(fake_, unsupported), kBlkStatusUnsupp);
  EXPECT_EQ(status_of(fake_, short_header), kBlkStatusIoErr);
  auto used = fake_.take_used();
  ASSERT_EQ(used.size(), 5u);
  EXPECT_EQ(used[0].len, 1u);
  EXPECT_EQ(used[3], (testing::FakeUsedElement{no_status.head, 0}));
  EXPECT_EQ(used[4], (testing::FakeUsedElement{bad_buffer.head, 0}));
  EXPECT_TRUE(control_->snapshot().empty());  // nothing reached the engine
  EXPECT_EQ(device->stats().errors, 4u);
  EXPECT_EQ(device->stats().unsupported, 1u);
  EXPECT_EQ(interrupt_->needs_reset.load(), 0);
  device->reset();
}

TEST_F(VirtioBlkFakeTest, EngineFailuresAndShortTransfersAreIoErr) {
  auto device = make_and_activate();
  ASSERT_TRUE(device);
  {
    std::lock_guard lock(control_->mutex);
    control_->result = -EIO;
  }
  auto failed = fake_.chain().readable(blk_header(kBlkTypeOut, 0)).readable(pattern(512, 0)).writable(1).add();
  device->notify_queue(0);
  ASSERT_TRUE(wait_for_used(fake_, 1, device.get()));
  EXPECT_EQ(status_of(fake_, failed), kBlkStatusIoErr);
  {
    std::lock_guard lock(control_->mutex);
    control_->result = 512;  // half of what was asked
  }
  auto short_read = fake_.chain().readable(blk_header(kBlkTypeIn, 0)).writable(1024).writable(1).add();
  device->notify_queue(0);
  ASSERT_TRUE(wait_for_used(fake_, 2, device.get()));
  EXPECT_EQ(status_of(fake_, short_read), kBlkStatusIoErr);
  EXPECT_EQ(device->stats().errors, 2u);
  device->reset();
}

TEST_F(VirtioBlkFakeTest, ResetCompletesRequestsInFlight) {
  control_->hold = true;
  auto device = make_and_activate();
  ASSERT_TRUE(device);
  std::vector<FakeChain> chains;
  for (int i = 0; i < 3; ++i) {
    chains.push_back(fake_.chain().readable(blk_header(kBlkTypeIn, i)).writable(512).writable(1).add());
  }
  device->notify_queue(0);
  for (int i = 0; i < 2000 && control_->snapshot().size() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(control_->snapshot().size(), 3u);
  EXPECT_EQ(fake_.used_idx(), 0u);  // held by the engine
  device->reset();
  EXPECT_EQ(control_->drains, 1);
  EXPECT_EQ(fake_.used_idx(), 3u);
  for (const FakeChain& chain : chains) EXPECT_EQ(status_of(fake_, chain), kBlkStatusOk);
  // The device can be activated again after a reset.
  control_->hold = false;
  EXPECT_TRUE(device->activate(device->device_features(), {&fake_.queue()}, interrupt_));
  device->reset();
}

TEST_F(VirtioBlkFakeTest, RateLimitPausesAndResumes) {
  DiskSpec spec = disk_spec("/fake");
  spec.rate_limit.ops_per_second = 20;
  auto device = make_and_activate(spec);
  ASSERT_TRUE(device);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 30; ++i) fake_.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  device->notify_queue(0);
  ASSERT_TRUE(wait_for_used(fake_, 30, device.get(), 0, 5000));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  // A full bucket of 20, then 10 more at 20/s.
  EXPECT_GE(elapsed, std::chrono::milliseconds(350));
  EXPECT_GT(device->stats().throttled, 0u);
  EXPECT_EQ(device->stats().flushes, 30u);
  device->reset();
}

// Requests one after another, each notified on its own: the wake-ups that would grow a
// poll window. Returns the device's stats afterwards.
BlkStats serve_one_by_one(VirtqueueFake& fake, VirtioBlk& device, int count) {
  for (int i = 0; i < count; ++i) {
    fake.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
    device.notify_queue(0);
    EXPECT_TRUE(wait_for_used(fake, static_cast<uint16_t>(i + 1), &device, 0, 5000)) << i;
  }
  return device.stats();
}

TEST_F(VirtioBlkFakeTest, PollMaxZeroNeverPolls) {
  DiskSpec spec = disk_spec("/fake");
  spec.poll_max_us = 0;
  auto device = make_and_activate(spec);
  ASSERT_TRUE(device);
  const BlkStats stats = serve_one_by_one(fake_, *device, 50);
  EXPECT_EQ(stats.flushes, 50u);
  EXPECT_EQ(stats.poll_episodes, 0u);
  EXPECT_EQ(stats.poll_window_ns, 0u);
  device->reset();
}

TEST_F(VirtioBlkFakeTest, NoPollingWhenTheThreadHasNoMoreCpusThanTheVcpus) {
  auto device = make(disk_spec("/fake"));
  ASSERT_TRUE(device);
  // More vCPUs than any CPU set this test runs on: every CPU may be a vCPU's.
  device->set_vcpu_count(1u << 20);
  ASSERT_TRUE(device->activate(device->device_features(), {&fake_.queue()}, interrupt_));
  const BlkStats stats = serve_one_by_one(fake_, *device, 50);
  EXPECT_EQ(stats.flushes, 50u);
  EXPECT_EQ(stats.poll_episodes, 0u);
  EXPECT_EQ(stats.poll_window_ns, 0u);
  device->reset();
}

TEST_F(VirtioBlkFakeTest, MultiQueueServesEachQueueOnItsOwnThread) {
  DiskSpec spec = disk_spec("/fake", "mq");
  spec.queues = 2;
  auto device = make(spec);
  ASSERT_TRUE(device);
  Queue idle(64, "idle");  // queue 0: not enabled by the driver
  ASSERT_TRUE(device->activate(device->device_features(), {&idle, &fake_.queue()}, interrupt_));
  ASSERT_TRUE(device->queue_notify_fd(1));
  EXPECT_NE(*device->queue_notify_fd(0), *device->queue_notify_fd(1));
  EXPECT_FALSE(device->queue_notify_fd(2));
  auto flush = fake_.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  device->notify_queue(1);
  ASSERT_TRUE(wait_for_used(fake_, 1, device.get(), 1));
  EXPECT_EQ(status_of(fake_, flush), kBlkStatusOk);
  // The thread of queue 1 is named; queue 0 has none.
  bool found_q1 = false;
  bool found_q0 = false;
  if (DIR* dir = opendir("/proc/self/task")) {
    while (dirent* entry = readdir(dir)) {
      std::ifstream comm(std::string("/proc/self/task/") + entry->d_name + "/comm");
      std::string name;
      std::getline(comm, name);
      found_q1 |= name == "skiff-mq-q1";
      found_q0 |= name == "skiff-mq-q0";
    }
    closedir(dir);
  }
  EXPECT_TRUE(found_q1);
  EXPECT_FALSE(found_q0);
  device->reset();
}

// ---- State: pause, save, restore -------------------------------------------------------------

state::StateBlob round_trip(const state::StateBlob& blob) {
  auto decoded = state::StateBlob::decode(blob.encode());
  EXPECT_TRUE(decoded) << (decoded ? "" : decoded.error().message());
  return decoded ? *decoded : state::StateBlob("broken", 1);
}

bool wait_until(const std::function<bool()>& done, int timeout_ms = 5000) {
  for (int i = 0; i < timeout_ms && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return done();
}

TEST_F(VirtioBlkFakeTest, PauseAnswersRequestsInFlightAndLeavesTheirInterruptPending) {
  control_->hold = true;
  auto device = make_and_activate();
  ASSERT_TRUE(device);
  auto read = fake_.chain().readable(blk_header(kBlkTypeIn, 8)).writable(512).writable(1).add();
  auto write = fake_.chain().readable(blk_header(kBlkTypeOut, 16)).readable(pattern(512, 3)).writable(1).add();
  device->notify_queue(0);
  ASSERT_TRUE(wait_until([&] { return control_->snapshot().size() == 2; }));
  EXPECT_EQ(fake_.used_idx(), 0u) << "held by the engine";
  const int interrupts_before = interrupt_->used.load();

  // pause() waits for the engine (drain) and answers both, without an interrupt.
  ASSERT_TRUE(device->pause());
  EXPECT_EQ(control_->drains, 1);
  EXPECT_EQ(fake_.used_idx(), 2u);
  EXPECT_EQ(status_of(fake_, read), kBlkStatusOk);
  EXPECT_EQ(status_of(fake_, write), kBlkStatusOk);
  EXPECT_EQ(fake_.read(read.writable[0].addr, 512), std::vector<uint8_t>(512, 0x5a));
  EXPECT_EQ(interrupt_->used.load(), interrupts_before) << "the transport may hold its lock in pause()";
  EXPECT_EQ(device->stats().reads, 1u);
  EXPECT_EQ(device->stats().writes, 1u);

  // Snapshot, then a fresh device over a copy of the memory.
  const state::StateBlob queue_state = round_trip(fake_.queue().save_state());
  auto device_state = device->save_state();
  ASSERT_TRUE(device_state);
  EXPECT_EQ(device_state->kind(), "virtio-blk");
  VirtqueueFake copy(VirtqueueFake::CopyOf{fake_});
  auto restored = VirtioBlk::create_with_engines(disk_spec("/fake"), copy.memory(), fake_disk_info(),
                                                 [c = std::make_shared<FakeEngineControl>()](uint16_t, uint32_t) {
                                                   return std::make_unique<FakeEngine>(c);
                                                 });
  ASSERT_TRUE(restored);
  ASSERT_TRUE((*restored)->restore_state(round_trip(*device_state)));
  EXPECT_EQ((*restored)->stats().reads, 1u);
  EXPECT_EQ((*restored)->stats().writes, 1u);
  EXPECT_EQ((*restored)->stats().timed_requests, 2u);
  ASSERT_TRUE(copy.restore(queue_state));
  auto restored_interrupt = std::make_shared<CountingInterrupt>();
  ASSERT_TRUE((*restored)->activate((*restored)->device_features(), {&copy.queue()}, restored_interrupt));

  // The interrupt pending since pause() is raised by the resumed device and by the restored
  // one alike, once.
  ASSERT_TRUE(device->resume());
  EXPECT_TRUE(wait_until([&] { return interrupt_->used.load() == interrupts_before + 1; }));
  EXPECT_TRUE(wait_until([&] { return restored_interrupt->used.load() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(interrupt_->used.load(), interrupts_before + 1);
  EXPECT_EQ(restored_interrupt->used.load(), 1);
  (*restored)->reset();
  device->reset();
  EXPECT_EQ(copy.ram(), fake_.ram());
}

TEST_F(VirtioBlkFakeTest, RequestHeldByTheRateLimiterGoesBackToTheRing) {
  DiskSpec spec = disk_spec("/fake");
  spec.rate_limit.ops_per_second = 1;  // a bucket of one request, refilled each second
  auto device = make_and_activate(spec);
  ASSERT_TRUE(device);
  auto first = fake_.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  auto second = fake_.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  device->notify_queue(0);
  ASSERT_TRUE(wait_until([&] { return fake_.used_idx() == 1 && device->stats().throttled == 1; }));
  ASSERT_TRUE(device->pause());
  // The second flush was popped and held for the limiter: it is back in the ring, not
  // answered.
  EXPECT_EQ(fake_.used_idx(), 1u);
  EXPECT_EQ(fake_.queue().next_avail(), 1u);
  EXPECT_EQ(fake_.queue().next_used(), 1u);

  const state::StateBlob queue_state = round_trip(fake_.queue().save_state());
  auto device_state = device->save_state();
  ASSERT_TRUE(device_state);
  VirtqueueFake copy(VirtqueueFake::CopyOf{fake_});
  auto restored = VirtioBlk::create_with_engines(spec, copy.memory(), fake_disk_info(),
                                                 [c = control_](uint16_t, uint32_t) {
                                                   return std::make_unique<FakeEngine>(c);
                                                 });
  ASSERT_TRUE(restored);
  ASSERT_TRUE((*restored)->restore_state(round_trip(*device_state)));
  ASSERT_TRUE(copy.restore(queue_state));
  auto restored_interrupt = std::make_shared<CountingInterrupt>();
  ASSERT_TRUE((*restored)->activate((*restored)->device_features(), {&copy.queue()}, restored_interrupt));
  // Both pop the second flush again and answer it (the resumed one once its limiter allows).
  ASSERT_TRUE(device->resume());
  ASSERT_TRUE(wait_until([&] { return copy.used_idx() == 2; }));
  ASSERT_TRUE(wait_until([&] { return fake_.used_idx() == 2; }, 5000));
  EXPECT_EQ(copy.take_used(), fake_.take_used());
  EXPECT_EQ(status_of(copy, second), kBlkStatusOk);
  EXPECT_EQ(status_of(fake_, second), kBlkStatusOk);
  EXPECT_EQ(status_of(fake_, first), kBlkStatusOk);
  EXPECT_EQ((*restored)->stats().flushes, 2u);
  EXPECT_EQ(device->stats().flushes, 2u);
  (*restored)->reset();
  device->reset();
  // Read once the threads are stopped.
  EXPECT_EQ(fake_.queue().stats().chains_popped, 2u) << "the given-back chain is popped once more, counted once";
}

TEST_F(VirtioBlkFakeTest, PauseResumeIsHarmlessAndResetWorksWhilePaused) {
  auto device = make(disk_spec("/fake"));
  ASSERT_TRUE(device);
  EXPECT_TRUE(device->pause()) << "not activated: nothing to pause";
  EXPECT_TRUE(device->resume());
  ASSERT_TRUE(device->activate(device->device_features(), {&fake_.queue()}, interrupt_));
  ASSERT_TRUE(device->pause());
  EXPECT_TRUE(device->pause());
  auto flush = fake_.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  device->notify_queue(0);  // a vCPU's kick while paused: recorded, not served
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(fake_.used_idx(), 0u);
  ASSERT_TRUE(device->resume());
  EXPECT_TRUE(device->resume());
  ASSERT_TRUE(wait_until([&] { return fake_.used_idx() == 1; }));
  EXPECT_EQ(status_of(fake_, flush), kBlkStatusOk);
  ASSERT_TRUE(device->pause());
  device->reset();
  // Activated again after a reset of the paused device (the driver's new activation).
  ASSERT_TRUE(fake_.activate());
  ASSERT_TRUE(device->activate(device->device_features(), {&fake_.queue()}, interrupt_));
  device->reset();
}

TEST_F(VirtioBlkFakeTest, RestoreRefusesBadState) {
  auto device = make(disk_spec("/fake"));
  ASSERT_TRUE(device);
  auto good = device->save_state();
  ASSERT_TRUE(good);
  EXPECT_FALSE(device->restore_state(state::StateBlob("virtio-net", 1)));
  state::StateBlob reads_untimed = *good;
  reads_untimed.put("reads", 3);
  auto result = device->restore_state(reads_untimed);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("requests timed"), std::string::npos) << result.error().message();
  state::StateBlob max_above_total = *good;
  max_above_total.put("latency_max_ns", 10);
  EXPECT_FALSE(device->restore_state(max_above_total));
  state::StateBlob mistyped = *good;
  mistyped.put_bool("errors", true);
  EXPECT_FALSE(device->restore_state(mistyped));
  EXPECT_EQ(device->stats().reads, 0u);
  ASSERT_TRUE(device->activate(device->device_features(), {&fake_.queue()}, interrupt_));
  EXPECT_FALSE(device->restore_state(*good)) << "restore after activate";
  device->reset();
  EXPECT_TRUE(device->restore_state(*good));
}

// ---- End to end: real files through both engines. -------------------------------------------

class VirtioBlkEndToEnd : public ::testing::TestWithParam<IoEngine> {
 protected:
  std::shared_ptr<VirtioBlk> open(DiskSpec spec, VirtqueueFake& fake) {
    spec.io_engine = GetParam();
    auto device = VirtioBlk::create(spec, fake.memory());
    EXPECT_TRUE(device) << device.error().message();
    if (!device) return nullptr;
    auto ok = (*device)->activate((*device)->device_features(), {&fake.queue()}, interrupt_);
    EXPECT_TRUE(ok) << ok.error().message();
    return *device;
  }

  TempImage image_{4 << 20};
  std::shared_ptr<CountingInterrupt> interrupt_ = std::make_shared<CountingInterrupt>();
};

TEST_P(VirtioBlkEndToEnd, WriteFlushReadBack) {
  VirtqueueFake fake(64, testing::kFakeDefaultFeatures | feature_mask(kFeatureRingEventIdx), 2 << 20);
  DiskSpec spec = disk_spec(image_.path());
  spec.serial = "e2e-serial";
  auto device = open(spec, fake);
  ASSERT_TRUE(device);
  const std::vector<uint8_t> data = pattern(8192, 42);
  auto write = fake.chain()
                   .readable(blk_header(kBlkTypeOut, 100))
                   .readable(std::span(data.data(), 4096))
                   .readable(std::span(data.data() + 4096, 4096))
                   .writable(1)
                   .add();
  ASSERT_TRUE(wait_for_used(fake, 1, device.get()));
  auto flush = fake.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 2, device.get()));
  auto read = fake.chain().readable(blk_header(kBlkTypeIn, 100)).writable(3000).writable(5192).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 3, device.get()));
  EXPECT_EQ(status_of(fake, write), kBlkStatusOk);
  EXPECT_EQ(status_of(fake, flush), kBlkStatusOk);
  EXPECT_EQ(status_of(fake, read), kBlkStatusOk);
  auto back = fake.read(read.writable[0].addr, 3000);
  auto rest = fake.read(read.writable[1].addr, 5192);
  back.insert(back.end(), rest.begin(), rest.end());
  EXPECT_EQ(back, data);
  EXPECT_EQ(image_.read(100 * 512, 8192), data);  // the host sees it in the file

  auto get_id = fake.chain().readable(blk_header(kBlkTypeGetId, 0)).writable(20).writable(1).add();
  auto out_of_range = fake.chain().readable(blk_header(kBlkTypeIn, 8192)).writable(512).writable(1).add();
  auto unsupported = fake.chain().readable(blk_header(kBlkTypeGetLifetime, 0)).writable(8).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 6, device.get()));
  auto id = fake.read(get_id.writable[0].addr, 20);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(id.data())), "e2e-serial");
  EXPECT_EQ(status_of(fake, out_of_range), kBlkStatusIoErr);
  EXPECT_EQ(status_of(fake, unsupported), kBlkStatusUnsupp);
  EXPECT_TRUE(device->flush());
  device->reset();
  EXPECT_EQ(device->stats().writes, 1u);
  EXPECT_EQ(device->stats().reads, 1u);
}

TEST_P(VirtioBlkEndToEnd, DiscardAndWriteZeroesReachTheFile) {
  image_.write(0, pattern(4 << 20, 7));
  const uint64_t before = image_.allocated_blocks();
  VirtqueueFake fake(64);
  auto device = open(disk_spec(image_.path()), fake);
  ASSERT_TRUE(device);
  ASSERT_TRUE(has_feature(device->device_features(), kBlkFeatureDiscard));
  auto discard = fake.chain()
                     .readable(blk_header(kBlkTypeDiscard, 0))
                     .readable(blk_segment(0, 2048, 0))  // the first MiB
                     .writable(1)
                     .add();
  auto zeroes = fake.chain()
                    .readable(blk_header(kBlkTypeWriteZeroes, 0))
                    .readable(testing::concat(blk_segment(4096, 16, 0), blk_segment(6144, 16, kBlkSegmentFlagUnmap)))
                    .writable(1)
                    .add();
  ASSERT_TRUE(wait_for_used(fake, 2, device.get()));
  EXPECT_EQ(status_of(fake, discard), kBlkStatusOk);
  EXPECT_EQ(status_of(fake, zeroes), kBlkStatusOk);
  EXPECT_LT(image_.allocated_blocks(), before);  // sparse again
  EXPECT_EQ(image_.read(4096 * 512, 8192), std::vector<uint8_t>(8192, 0));
  EXPECT_EQ(image_.read(6144 * 512, 8192), std::vector<uint8_t>(8192, 0));
  EXPECT_NE(image_.read(4096 * 512 + 8192, 512), std::vector<uint8_t>(512, 0));  // untouched
  device->reset();
}

TEST_P(VirtioBlkEndToEnd, ReadOnlyDiskRefusesWrites) {
  image_.write(0, pattern(4096, 3));
  VirtqueueFake fake(16);
  DiskSpec spec = disk_spec(image_.path());
  spec.read_only = true;
  auto device = open(spec, fake);
  ASSERT_TRUE(device);
  EXPECT_TRUE(has_feature(device->device_features(), kBlkFeatureRo));
  auto write = fake.chain().readable(blk_header(kBlkTypeOut, 0)).readable(std::vector<uint8_t>(512, 0)).writable(1).add();
  auto read = fake.chain().readable(blk_header(kBlkTypeIn, 0)).writable(4096).writable(1).add();
  auto flush = fake.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 3, device.get()));
  EXPECT_EQ(status_of(fake, write), kBlkStatusIoErr);
  EXPECT_EQ(status_of(fake, read), kBlkStatusOk);
  EXPECT_EQ(status_of(fake, flush), kBlkStatusOk);
  const std::vector<uint8_t> original = pattern(4096, 3);
  EXPECT_EQ(fake.read(read.writable[0].addr, 4096), original);
  EXPECT_EQ(image_.read(0, 4096), original);  // the refused write changed nothing
  device->reset();
}

TEST_P(VirtioBlkEndToEnd, SecondDeviceOnTheSameFileIsRefused) {
  VirtqueueFake fake(16);
  auto device = open(disk_spec(image_.path(), "first"), fake);
  ASSERT_TRUE(device);
  auto second = VirtioBlk::create(disk_spec(image_.path(), "second"), fake.memory());
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("another process uses this disk"), std::string::npos);
}

TEST_P(VirtioBlkEndToEnd, DirectIoWithAlignedAndUnalignedGuestBuffers) {
  VirtqueueFake fake(16, testing::kFakeDefaultFeatures, 1 << 20);
  DiskSpec spec = disk_spec(image_.path());
  spec.cache = DiskCache::kNone;
  spec.io_engine = GetParam();
  auto created = VirtioBlk::create(spec, fake.memory());
  if (!created && created.error().sys_errno() == EINVAL) {
    GTEST_SKIP() << "no O_DIRECT on /var/tmp: " << created.error().message();
  }
  ASSERT_TRUE(created) << created.error().message();
  auto device = *created;
  ASSERT_TRUE(device->disk_info().direct);
  const uint32_t block = device->disk_info().logical_block_size;
  ASSERT_TRUE(device->activate(device->device_features(), {&fake.queue()}, interrupt_));

  // Host-aligned guest buffers: zero-copy straight into "guest memory".
  const std::vector<uint8_t> data = pattern(2 * block, 9);
  const uint64_t aligned = testing::host_aligned_gpa(fake, data.size(), 4096);
  ASSERT_TRUE(fake.memory().write(aligned, data));
  auto write = fake.chain().readable(blk_header(kBlkTypeOut, 0)).raw(aligned, static_cast<uint32_t>(data.size()), 0).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 1, device.get()));
  EXPECT_EQ(status_of(fake, write), kBlkStatusOk);
  EXPECT_EQ(image_.read(0, data.size()), data);

  // Misaligned guest buffers (host address off by 8): a bounce buffer, same result.
  const uint64_t misaligned = testing::host_aligned_gpa(fake, data.size() + 8, 4096) + 8;
  auto read = fake.chain().readable(blk_header(kBlkTypeIn, 0)).writable_at(misaligned, static_cast<uint32_t>(data.size())).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 2, device.get()));
  EXPECT_EQ(status_of(fake, read), kBlkStatusOk);
  EXPECT_EQ(fake.read(misaligned, data.size()), data);

  const std::vector<uint8_t> data2 = pattern(block, 77);
  ASSERT_TRUE(fake.memory().write(misaligned, data2));
  auto write2 = fake.chain().readable(blk_header(kBlkTypeOut, 64)).raw(misaligned, block, 0).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 3, device.get()));
  EXPECT_EQ(status_of(fake, write2), kBlkStatusOk);
  EXPECT_EQ(image_.read(64 * 512, block), data2);
  device->reset();
}

TEST_P(VirtioBlkEndToEnd, LoopDeviceWith4KiBLogicalBlocks) {
  testing::LoopDevice loop(8 << 20);
  if (loop.device().empty()) GTEST_SKIP() << loop.why();
  VirtqueueFake fake(16, testing::kFakeDefaultFeatures, 1 << 20);
  DiskSpec spec = disk_spec(loop.device(), "zvol-like");
  spec.io_engine = GetParam();
  auto created = VirtioBlk::create(spec, fake.memory());
  ASSERT_TRUE(created) << created.error().message();
  auto device = *created;
  EXPECT_EQ(config_field<uint64_t>(*device, kBlkConfigCapacity), (8u << 20) / 512);
  EXPECT_EQ(config_field<uint32_t>(*device, kBlkConfigBlkSize), 4096u);
  EXPECT_EQ(config_field<uint8_t>(*device, kBlkConfigPhysicalBlockExp), 0u);
  EXPECT_EQ(device->limits().alignment, 4096u);
  ASSERT_TRUE(device->activate(device->device_features(), {&fake.queue()}, interrupt_));

  const std::vector<uint8_t> data = pattern(8192, 5);
  const uint64_t gpa = testing::host_aligned_gpa(fake, data.size(), 4096);
  ASSERT_TRUE(fake.memory().write(gpa, data));
  auto write = fake.chain().readable(blk_header(kBlkTypeOut, 16)).raw(gpa, 8192, 0).writable(1).add();
  auto flush = fake.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  auto unaligned = fake.chain().readable(blk_header(kBlkTypeIn, 1)).writable(4096).writable(1).add();
  auto small = fake.chain().readable(blk_header(kBlkTypeIn, 16)).writable(512).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 4, device.get()));
  EXPECT_EQ(status_of(fake, write), kBlkStatusOk);
  EXPECT_EQ(status_of(fake, flush), kBlkStatusOk);
  EXPECT_EQ(status_of(fake, unaligned), kBlkStatusIoErr);
  EXPECT_EQ(status_of(fake, small), kBlkStatusIoErr);
  const uint64_t back = testing::host_aligned_gpa(fake, data.size(), 4096);
  auto read = fake.chain().readable(blk_header(kBlkTypeIn, 16)).writable_at(back, 8192).writable(1).add();
  auto zeroes = fake.chain().readable(blk_header(kBlkTypeWriteZeroes, 0)).readable(blk_segment(32, 8, 0)).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 6, device.get()));
  EXPECT_EQ(status_of(fake, read), kBlkStatusOk);
  EXPECT_EQ(status_of(fake, zeroes), kBlkStatusOk);
  EXPECT_EQ(fake.read(back, 8192), data);
  device->reset();
  ASSERT_TRUE(device->flush());
  device.reset();  // closes the device before the image is read and the loop detached
  EXPECT_EQ(loop.image().read(16 * 512, 8192), data);
}

TEST_P(VirtioBlkEndToEnd, RestoredDiskContinuesLikeTheResumedOne) {
  const uint64_t features = testing::kFakeDefaultFeatures | feature_mask(kFeatureRingEventIdx);
  VirtqueueFake fake(64, features, 2 << 20);
  DiskSpec spec = disk_spec(image_.path());
  spec.serial = "state-serial";
  auto device = open(spec, fake);
  ASSERT_TRUE(device);
  const std::vector<uint8_t> a = pattern(4096, 11);
  const std::vector<uint8_t> b = pattern(4096, 77);
  fake.chain().readable(blk_header(kBlkTypeOut, 0)).readable(a).writable(1).add();
  ASSERT_TRUE(wait_for_used(fake, 1, device.get()));
  ASSERT_TRUE(device->pause());

  // The driver queues more while the device is paused.
  auto read = fake.chain().readable(blk_header(kBlkTypeIn, 0)).writable(1000).writable(3096).writable(1).add();
  auto write = fake.chain().readable(blk_header(kBlkTypeOut, 64)).readable(b).writable(1).add();
  auto get_id = fake.chain().readable(blk_header(kBlkTypeGetId, 0)).writable(20).writable(1).add();
  auto flush = fake.chain().readable(blk_header(kBlkTypeFlush, 0)).writable(1).add();
  fake.set_used_event(1);  // EVENT_IDX: the driver wants an interrupt for what follows
  device->notify_queue(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(fake.used_idx(), 1u) << "served while paused";

  const state::StateBlob queue_state = round_trip(fake.queue().save_state());
  auto device_state = device->save_state();
  ASSERT_TRUE(device_state);
  VirtqueueFake copy(VirtqueueFake::CopyOf{fake});
  // The restored device: the same spec over a copy of the disk (the original still holds
  // the disk's lock, as it would until it goes away), a fresh queue over the copied memory.
  TempImage disk_copy(4 << 20);
  disk_copy.write(0, image_.read(0, 4 << 20));
  DiskSpec restored_spec = spec;
  restored_spec.path = disk_copy.path();
  restored_spec.io_engine = GetParam();
  auto restored = VirtioBlk::create(restored_spec, copy.memory());
  ASSERT_TRUE(restored) << restored.error().message();
  ASSERT_TRUE((*restored)->restore_state(round_trip(*device_state)));
  ASSERT_TRUE(copy.restore(queue_state));
  auto restored_interrupt = std::make_shared<CountingInterrupt>();
  ASSERT_TRUE((*restored)->activate((*restored)->device_features(), {&copy.queue()}, restored_interrupt));
  ASSERT_TRUE(wait_for_used(copy, 5));
  const int interrupts_before = interrupt_->used.load();
  ASSERT_TRUE(device->resume());
  ASSERT_TRUE(wait_for_used(fake, 5));

  auto used_original = fake.take_used();
  auto used_restored = copy.take_used();
  auto by_id = [](const testing::FakeUsedElement& x, const testing::FakeUsedElement& y) { return x.id < y.id; };
  if (GetParam() == IoEngine::kIoUring) {
    // Completions may come back in another order.
    std::sort(used_original.begin(), used_original.end(), by_id);
    std::sort(used_restored.begin(), used_restored.end(), by_id);
  }
  EXPECT_EQ(used_restored, used_original);
  for (const FakeChain* chain : {&read, &write, &get_id, &flush}) {
    EXPECT_EQ(status_of(copy, *chain), kBlkStatusOk);
    EXPECT_EQ(status_of(fake, *chain), kBlkStatusOk);
  }
  auto read_back = [&read](VirtqueueFake& memory) {
    auto bytes = memory.read(read.writable[0].addr, 1000);
    auto rest = memory.read(read.writable[1].addr, 3096);
    bytes.insert(bytes.end(), rest.begin(), rest.end());
    return bytes;
  };
  EXPECT_EQ(read_back(fake), a);
  EXPECT_EQ(read_back(copy), a);
  EXPECT_EQ(copy.read(get_id.writable[0].addr, 20), fake.read(get_id.writable[0].addr, 20));
  EXPECT_EQ(image_.read(64 * 512, 4096), b);
  EXPECT_EQ(disk_copy.read(64 * 512, 4096), b);
  if (GetParam() == IoEngine::kSync) {
    EXPECT_EQ(copy.ram(), fake.ram());
  }
  // Stats continue across the restore.
  const BlkStats original_stats = device->stats();
  const BlkStats restored_stats = (*restored)->stats();
  EXPECT_EQ(restored_stats.reads, 1u);
  EXPECT_EQ(restored_stats.writes, 2u);
  EXPECT_EQ(restored_stats.flushes, 1u);
  EXPECT_EQ(restored_stats.read_bytes, original_stats.read_bytes);
  EXPECT_EQ(restored_stats.write_bytes, original_stats.write_bytes);
  EXPECT_EQ(restored_stats.reads, original_stats.reads);
  EXPECT_EQ(restored_stats.writes, original_stats.writes);
  EXPECT_EQ(restored_stats.flushes, original_stats.flushes);
  EXPECT_EQ(restored_stats.timed_requests, original_stats.timed_requests);
  EXPECT_GE(restored_interrupt->used.load(), 1);
  EXPECT_GT(interrupt_->used.load(), interrupts_before);
  (*restored)->reset();
  device->reset();
}

INSTANTIATE_TEST_SUITE_P(Engines, VirtioBlkEndToEnd, ::testing::Values(IoEngine::kSync, IoEngine::kIoUring),
                         [](const ::testing::TestParamInfo<IoEngine>& param_info) {
                           return param_info.param == IoEngine::kSync ? std::string("Sync") : std::string("IoUring");
                         });

}  // namespace
}  // namespace skiff::virtio
