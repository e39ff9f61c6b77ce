// SPDX-License-Identifier: Apache-2.0
// Tier 2: the test guest drives skiff's virtio-blk (virtio 1.2 §5.2) over virtio-pci and
// virtio-mmio on /dev/kvm (tests/guest/virtio_blk.c; README.md "virtio-blk" lists what it
// prints), and the host checks its image afterwards: the pattern the guest wrote and flushed
// is in the file at the right offsets and nothing else changed, a discarded range is a hole
// again (st_blocks drops), a write-zeroes range reads back zeros, a read-only disk refuses
// writes, out-of-range sectors get IOERR and GET_ID returns the serial. The same on a loop
// block device with 4096-byte logical sectors (standing in for a zvol), where the guest must
// see the device's geometry. Each case runs with io_uring and cache=writeback (the file
// default), cache=none (O_DIRECT) and the synchronous engine.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "guest_runner.h"
#include "skiff/vm.h"

namespace skiff::test {
namespace {

// What tests/guest/virtio_blk.c touches, in bytes (its kSector* constants times 512).
constexpr uint64_t kImageBytes = 1 << 20;
constexpr uint64_t kCapacitySectors = kImageBytes / 512;
constexpr uint64_t kPatternOffset = 8 * 512;
constexpr uint64_t kPatternBytes = 4096;
constexpr uint64_t kDiscardOffset = 128 * 512;
constexpr uint64_t kZeroesOffset = 256 * 512;
constexpr uint64_t kRangeBytes = 128 * 512;
constexpr uint8_t kFill = 0x11;  // every byte the guest should not touch
const std::string kSerial = "SKIFF-SER-0123456789";  // 20 bytes: the most GET_ID carries

uint8_t pattern_byte(uint64_t offset) {
  return static_cast<uint8_t>((offset / 512) * 7 + offset % 512);
}

// `key=value` words of one report line.
std::map<std::string, std::string> fields(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream words(line);
  std::string word;
  while (words >> word) {
    auto eq = word.find('=');
    if (eq != std::string::npos) out[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return out;
}

uint64_t to_u64(const std::string& text) {
  uint64_t value = 0;
  std::istringstream(text) >> value;
  return value;
}

// The fields of the first line starting with `prefix`; empty when there is none.
std::map<std::string, std::string> line_fields(const GuestReport& report, const std::string& prefix) {
  auto lines = report.lines_starting(prefix);
  return lines.empty() ? std::map<std::string, std::string>{} : fields(lines.front());
}

// A 1 MiB raw image in /var/tmp (a disk file system: tmpfs has no O_DIRECT), every byte
// kFill and allocated, so that a discard shows in st_blocks.
class ImageFile {
 public:
  ImageFile() {
    char name[] = "/var/tmp/skiff-blk-test-XXXXXX";
    int fd = mkstemp(name);
    if (fd < 0) {
      error_ = std::string("mkstemp /var/tmp: ") + std::strerror(errno);
      return;
    }
    path_ = name;
    std::vector<uint8_t> bytes(kImageBytes, kFill);
    if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()) || ::fsync(fd) != 0) {
      error_ = path_ + ": write: " + std::strerror(errno);
    }
    ::close(fd);
  }
  ~ImageFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  ImageFile(const ImageFile&) = delete;
  ImageFile& operator=(const ImageFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& error() const { return error_; }

  std::vector<uint8_t> contents() const {
    std::ifstream in(path_, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // 512-byte units allocated to the file.
  uint64_t blocks() const {
    struct stat st {};
    return ::stat(path_.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) : 0;
  }
  uint64_t fs_block_size() const {
    struct stat st {};
    return ::stat(path_.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blksize) : 0;
  }

 private:
  std::string path_;
  std::string error_;
};

// Runs a shell command, returning its stdout (trailing newline removed) and exit status.
std::pair<int, std::string> run_command(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, std::string("popen: ") + std::strerror(errno)};
  char buffer[256];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  int status = ::pclose(pipe);
  while (!output.empty() && output.back() == '\n') output.pop_back();
  return {status, output};
}

// A loop device over `file` with 4096-byte logical sectors, detached on destruction.
class LoopDevice {
 public:
  explicit LoopDevice(const std::string& file) {
    auto [status, output] = run_command("losetup --find --show --sector-size 4096 " + file);
    if (status != 0 || output.rfind("/dev/loop", 0) != 0) {
      error_ = "losetup --sector-size 4096 failed (" + std::to_string(status) + "): " + output;
      return;
    }
    path_ = output;
  }
  ~LoopDevice() {
    if (!path_.empty()) run_command("losetup -d " + path_);
  }
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;

  const std::string& path() const { return path_; }
  const std::string& error() const { return error_; }
  // /sys/block/loopN/queue/<name>, 0 when unreadable.
  uint64_t queue_attribute(const std::string& name) const {
    std::ifstream in("/sys/block/" + path_.substr(path_.rfind('/') + 1) + "/queue/" + name);
    uint64_t value = 0;
    in >> value;
    return value;
  }

 private:
  std::string path_;
  std::string error_;
};

struct BlkCase {
  std::string name;
  VirtioTransport transport;
  std::optional<DiskCache> cache;  // nullopt: the default (writeback for files, none for devices)
  IoEngine engine;
};

class VirtioBlk : public ::testing::TestWithParam<BlkCase> {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << "tier-2 tests need /dev/kvm: " << *reason;
    ASSERT_TRUE(image_.error().empty()) << image_.error();
  }

  DiskSpec disk(const std::string& path) const {
    DiskSpec spec;
    spec.id = "d0";
    spec.path = path;
    spec.cache = GetParam().cache;
    spec.io_engine = GetParam().engine;
    spec.transport = GetParam().transport;
    return spec;
  }

  // Boots the test guest with `disk` and skiff.blk=<tests>.
  GuestRun boot(const DiskSpec& disk_spec, const std::string& tests, int exit_code) const {
    auto spec = guest_spec(SKIFF_TEST_GUEST_ELF,
                           "skiff.virtio=1 skiff.blk=" + tests + " skiff.exit=" + std::to_string(exit_code), 1, 64);
    spec.disks.push_back(disk_spec);
    spec.machine.mmio_cmdline = true;  // the test guest finds virtio-mmio slots on the command line
    return run_guest(spec);
  }

  // The device lines every run prints: found on the right transport, features accepted,
  // queue 0 running, the guest's reset honoured, no error.
  void expect_device(const GuestRun& run, int exit_code) const {
    const auto& r = run.report;
    ASSERT_FALSE(run.timed_out) << r.console;
    EXPECT_EQ(run.exit.exit_code, exit_code) << run.exit.detail << "\n" << r.console;
    if (GetParam().transport == VirtioTransport::kPci) {
      EXPECT_EQ(r.lines_starting("pci 00:01.0 vendor=0x1af4 device=0x1042").size(), 1u) << r.console;
      EXPECT_EQ(r.lines_starting("virtio-blk transport=pci ").size(), 1u) << r.console;
    } else {
      EXPECT_EQ(r.lines_starting("virtio-mmio base=0xf0000000 irq=5 id=2 vendor=0x46494b53").size(), 1u)
          << r.console;
      EXPECT_EQ(r.lines_starting("virtio-blk transport=mmio ").size(), 1u) << r.console;
    }
    EXPECT_EQ(line_fields(r, "virtio-blk transport=")["features-ok"], "1") << r.console;
    EXPECT_EQ(r.lines_starting("virtio-blk queue-size-max=256 queue-size=8 status=15").size(), 1u) << r.console;
    EXPECT_EQ(r.lines_starting("virtio-blk reset-status=0").size(), 1u) << r.console;
    EXPECT_EQ(r.lines_starting("error").size(), 0u) << r.console;
  }

  static void expect_pattern_and_ranges(const std::vector<uint8_t>& bytes, bool discarded_zero) {
    ASSERT_EQ(bytes.size(), kImageBytes);
    size_t wrong_pattern = 0, wrong_fill = 0, wrong_discard = 0, wrong_zeroes = 0;
    for (uint64_t i = 0; i < kImageBytes; ++i) {
      if (i >= kPatternOffset && i < kPatternOffset + kPatternBytes) {
        wrong_pattern += bytes[i] != pattern_byte(i);
      } else if (i >= kDiscardOffset && i < kDiscardOffset + kRangeBytes) {
        wrong_discard += discarded_zero && bytes[i] != 0;
      } else if (i >= kZeroesOffset && i < kZeroesOffset + kRangeBytes) {
        wrong_zeroes += bytes[i] != 0;
      } else {
        wrong_fill += bytes[i] != kFill;
      }
    }
    EXPECT_EQ(wrong_pattern, 0u) << "bytes of the guest's flushed pattern missing from the image";
    EXPECT_EQ(wrong_fill, 0u) << "bytes outside the ranges the guest wrote changed";
    EXPECT_EQ(wrong_discard, 0u) << "the discarded range does not read back as zeros";
    EXPECT_EQ(wrong_zeroes, 0u) << "the write-zeroes range is not zero";
  }

  // The request lines of skiff.blk=all on a writable disk.
  static void expect_requests(const GuestReport& r, uint64_t blk_size) {
    EXPECT_EQ(r.lines_starting("virtio-blk write-read sector=8 bytes=4096 write-status=0 write-len=1 "
                               "flush-status=0 read-status=0 read-len=4097 match=1")
                  .size(),
              1u)
        << r.console;
    // §5.2.6.1: whole request beyond the end, one straddling it, one whose byte offset wraps.
    const uint64_t straddle = kCapacitySectors - blk_size / 512;
    EXPECT_EQ(r.lines_starting("virtio-blk out-of-range sector=" + std::to_string(kCapacitySectors) +
                               " oob-status=1 straddle-sector=" + std::to_string(straddle) +
                               " straddle-status=1 wrap-status=1")
                  .size(),
              1u)
        << r.console;
    EXPECT_EQ(r.lines_starting("virtio-blk discard sector=128 sectors=128 discard-status=0 "
                               "discard-read-status=0 discard-zero=1")
                  .size(),
              1u)
        << r.console;
    EXPECT_EQ(r.lines_starting("virtio-blk write-zeroes sector=256 sectors=128 wz-status=0 wz-read-status=0 "
                               "wz-zero=1")
                  .size(),
              1u)
        << r.console;
  }

  ImageFile image_;
};

TEST_P(VirtioBlk, FileTakesPatternFlushDiscardAndWriteZeroes) {
  const uint64_t blocks_before = image_.blocks();
  ASSERT_GE(blocks_before, kImageBytes / 512) << "the image should be fully allocated";
  auto d = disk(image_.path());
  d.serial = kSerial;
  auto run = boot(d, "all", 33);
  expect_device(run, 33);
  const auto& r = run.report;

  auto config = line_fields(r, "virtio-blk config ");
  EXPECT_EQ(config["capacity"], std::to_string(kCapacitySectors)) << r.console;
  EXPECT_EQ(config["ro"], "0") << r.console;
  EXPECT_EQ(config["flush"], "1") << r.console;
  EXPECT_EQ(config["discard"], "1") << r.console;
  EXPECT_EQ(config["write-zeroes"], "1") << r.console;
  // A file: 512-byte logical blocks with the page cache; with O_DIRECT whatever the file
  // system's direct I/O alignment is. The file system block is the physical block and the
  // minimum I/O size (topology counts in logical blocks).
  const uint64_t blk_size = to_u64(config["blk-size"]);
  if (GetParam().cache != DiskCache::kNone) {
    EXPECT_EQ(blk_size, 512u) << r.console;
  }
  ASSERT_TRUE(blk_size == 512 || blk_size == 4096) << r.console;
  const uint64_t fs_block = std::max<uint64_t>(image_.fs_block_size(), blk_size);
  EXPECT_EQ(config["physical-block-exp"], std::to_string(std::countr_zero(fs_block / blk_size))) << r.console;
  EXPECT_EQ(config["min-io-size"], std::to_string(image_.fs_block_size() / blk_size)) << r.console;
  EXPECT_GE(to_u64(config["max-discard-sectors"]), 128u) << r.console;
  EXPECT_GE(to_u64(config["max-write-zeroes-sectors"]), 128u) << r.console;
  EXPECT_EQ(config["write-zeroes-may-unmap"], "1") << r.console;

  EXPECT_EQ(r.lines_starting("virtio-blk get-id id-status=0 id-len=21 serial=" + kSerial).size(), 1u)
      << r.console;
  expect_requests(r, blk_size);

  // After the guest's flush and a clean exit every byte is in the file; the discarded range
  // is a hole again.
  expect_pattern_and_ranges(image_.contents(), true);
  EXPECT_LE(image_.blocks(), blocks_before - kRangeBytes / 512)
      << "st_blocks " << blocks_before << " -> " << image_.blocks() << ": the discard did not punch a hole";
}

TEST_P(VirtioBlk, ReadOnlyFileRefusesWritesAndAnswersTheDiskId) {
  const auto before = image_.contents();
  auto d = disk(image_.path());
  d.read_only = true;  // serial left empty: GET_ID answers the disk id
  auto run = boot(d, "all", 34);
  expect_device(run, 34);
  const auto& r = run.report;
  auto config = line_fields(r, "virtio-blk config ");
  EXPECT_EQ(config["ro"], "1") << r.console;
  EXPECT_EQ(config["discard"], "0") << r.console;
  EXPECT_EQ(config["write-zeroes"], "0") << r.console;
  EXPECT_EQ(r.lines_starting("virtio-blk get-id id-status=0 id-len=21 serial=d0").size(), 1u) << r.console;
  // The write is answered IOERR, the read returns what the file held, not the pattern.
  auto rw = line_fields(r, "virtio-blk write-read ");
  EXPECT_EQ(rw["write-status"], "1") << r.console;
  EXPECT_EQ(rw["read-status"], "0") << r.console;
  EXPECT_EQ(rw["read-len"], "4097") << r.console;
  EXPECT_EQ(rw["match"], "0") << r.console;
  EXPECT_EQ(line_fields(r, "virtio-blk out-of-range ")["oob-status"], "1") << r.console;
  EXPECT_EQ(r.lines_starting("virtio-blk discard offered=0").size(), 1u) << r.console;
  EXPECT_EQ(r.lines_starting("virtio-blk write-zeroes offered=0").size(), 1u) << r.console;
  EXPECT_TRUE(image_.contents() == before) << "a read-only disk's file changed";
}

TEST_P(VirtioBlk, LoopDeviceWithFourKiBSectorsShowsItsGeometry) {
  LoopDevice loop(image_.path());
  if (!loop.error().empty()) GTEST_SKIP() << "needs a loop device (root): " << loop.error();
  ASSERT_EQ(loop.queue_attribute("logical_block_size"), 4096u);
  const uint64_t blocks_before = image_.blocks();
  const bool discard = loop.queue_attribute("discard_max_bytes") != 0;
  auto d = disk(loop.path());
  d.serial = kSerial;
  auto run = boot(d, "all", 35);
  expect_device(run, 35);
  const auto& r = run.report;

  // §5.2.4: capacity in 512-byte sectors, blk_size the logical block, topology in logical
  // blocks, as the block layer reports them.
  auto config = line_fields(r, "virtio-blk config ");
  EXPECT_EQ(config["capacity"], std::to_string(kCapacitySectors)) << r.console;
  EXPECT_EQ(config["blk-size"], "4096") << r.console;
  const uint64_t physical = std::max<uint64_t>(loop.queue_attribute("physical_block_size"), 4096);
  EXPECT_EQ(config["physical-block-exp"], std::to_string(std::countr_zero(physical / 4096))) << r.console;
  EXPECT_EQ(config["min-io-size"], std::to_string(loop.queue_attribute("minimum_io_size") / 4096)) << r.console;
  EXPECT_EQ(config["opt-io-size"], std::to_string(loop.queue_attribute("optimal_io_size") / 4096)) << r.console;
  EXPECT_EQ(config["discard"], discard ? "1" : "0") << r.console;
  EXPECT_EQ(config["write-zeroes"], "1") << r.console;
  EXPECT_EQ(r.lines_starting("virtio-blk get-id id-status=0 id-len=21 serial=" + kSerial).size(), 1u)
      << r.console;

  if (discard) {
    expect_requests(r, 4096);
  } else {
    EXPECT_EQ(r.lines_starting("virtio-blk discard offered=0").size(), 1u) << r.console;
  }
  // The loop device writes through to its backing file; a discard punches a hole in it.
  expect_pattern_and_ranges(image_.contents(), discard);
  if (discard) {
    EXPECT_LE(image_.blocks(), blocks_before - kRangeBytes / 512)
        << "st_blocks " << blocks_before << " -> " << image_.blocks();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Transports, VirtioBlk,
    ::testing::Values(BlkCase{"PciWritebackIoUring", VirtioTransport::kPci, std::nullopt, IoEngine::kIoUring},
                      BlkCase{"MmioWritebackIoUring", VirtioTransport::kMmio, std::nullopt, IoEngine::kIoUring},
                      BlkCase{"PciCacheNoneIoUring", VirtioTransport::kPci, DiskCache::kNone, IoEngine::kIoUring},
                      BlkCase{"MmioCacheNoneIoUring", VirtioTransport::kMmio, DiskCache::kNone, IoEngine::kIoUring},
                      BlkCase{"PciWritebackSync", VirtioTransport::kPci, DiskCache::kWriteback, IoEngine::kSync},
                      BlkCase{"MmioCacheNoneSync", VirtioTransport::kMmio, DiskCache::kNone, IoEngine::kSync}),
    [](const ::testing::TestParamInfo<BlkCase>& case_info) { return case_info.param.name; });

}  // namespace
}  // namespace skiff::test
