// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the virtio-blk tests: temporary disk images on a file system that
// supports O_DIRECT and hole punching (/var/tmp, not tmpfs), request builders over the
// VirtqueueFake, a counting interrupt and a loop device fixture.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "skiff/spec.h"
#include "unit/virtio/virtqueue_fake.h"
#include "virtio/blk/blk_constants.h"
#include "virtio/core/virtio_device.h"

namespace skiff::virtio::testing {

// A sparse image file in /var/tmp, removed on destruction.
class TempImage {
 public:
  explicit TempImage(uint64_t size, const char* dir = "/var/tmp") {
    std::string pattern = std::string(dir) + "/skiff-blk-test-XXXXXX";
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    int fd = mkstemp(name.data());
    EXPECT_GE(fd, 0) << "mkstemp in " << dir << ": " << std::strerror(errno);
    path_ = name.data();
    if (fd >= 0) {
      EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
      close(fd);
    }
  }
  ~TempImage() { unlink(path_.c_str()); }
  TempImage(const TempImage&) = delete;
  TempImage& operator=(const TempImage&) = delete;

  const std::string& path() const { return path_; }

  std::vector<uint8_t> read(uint64_t offset, size_t len) const {
    std::vector<uint8_t> out(len);
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(pread(fd, out.data(), len, static_cast<off_t>(offset)), static_cast<ssize_t>(len));
    close(fd);
    return out;
  }
  void write(uint64_t offset, const std::vector<uint8_t>& data) const {
    int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(data.size()));
    EXPECT_EQ(fsync(fd), 0);
    close(fd);
  }
  // 512-byte blocks allocated to the file.
  uint64_t allocated_blocks() const {
    struct stat st {};
    EXPECT_EQ(stat(path_.c_str(), &st), 0);
    return static_cast<uint64_t>(st.st_blocks);
  }

 private:
  std::string path_;
};

inline DiskSpec disk_spec(const std::string& path, const std::string& id = "disk0") {
  DiskSpec spec;
  spec.id = id;
  spec.path = path;
  spec.queue_size = 64;
  return spec;
}

inline std::vector<uint8_t> pattern(size_t len, uint8_t seed) {
  std::vector<uint8_t> out(len);
  for (size_t i = 0; i < len; ++i) out[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return out;
}

// struct virtio_blk_req header.
inline std::vector<uint8_t> blk_header(uint32_t type, uint64_t sector) {
  std::vector<uint8_t> out(kBlkHeaderSize, 0);
  std::memcpy(out.data(), &type, 4);
  std::memcpy(out.data() + 8, &sector, 8);
  return out;
}

// struct virtio_blk_discard_write_zeroes.
inline std::vector<uint8_t> blk_segment(uint64_t sector, uint32_t num_sectors, uint32_t flags) {
  std::vector<uint8_t> out(kBlkSegmentSize, 0);
  std::memcpy(out.data(), &sector, 8);
  std::memcpy(out.data() + 8, &num_sectors, 4);
  std::memcpy(out.data() + 12, &flags, 4);
  return out;
}

inline std::vector<uint8_t> concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The status byte of a chain built with a final 1-byte writable buffer.
inline uint8_t status_of(VirtqueueFake& fake, const FakeChain& chain) {
  const GuestBuffer& last = chain.writable.back();
  return fake.read(last.addr + last.len - 1, 1)[0];
}

// A guest address in the fake's data area whose HOST address is aligned to `align` (the
// fake's RAM is a heap vector, so guest and host alignment differ).
inline uint64_t host_aligned_gpa(VirtqueueFake& fake, uint64_t len, uint64_t align) {
  uint64_t gpa = fake.alloc(len + align, 1);
  const auto host = reinterpret_cast<uintptr_t>(fake.memory().regions()[0].host) + (gpa - VirtqueueFake::kRamBase);
  return gpa + (align - host % align) % align;
}

class CountingInterrupt : public VirtioInterrupt {
 public:
  void signal_used_queue(uint16_t) override { ++used; }
  void signal_config_change() override {}
  void signal_needs_reset() override { ++needs_reset; }
  std::atomic<int> used{0};
  std::atomic<int> needs_reset{0};
};

// Waits (bounded) until the device has returned `count` chains in total, first notifying
// queue `queue` of `device` when one is given (as the driver's kick would).
inline bool wait_for_used(VirtqueueFake& fake, uint16_t count, VirtioDevice* device = nullptr,
                          uint16_t queue = 0, int timeout_ms = 5000) {
  if (device != nullptr) device->notify_queue(queue);
  for (int i = 0; i < timeout_ms; ++i) {
    if (static_cast<uint16_t>(fake.used_idx()) >= count) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// A loop device over a temporary image with 4096-byte logical blocks ("losetup --find
// --show --sector-size 4096"), detached on destruction. `device()` is empty when losetup
// does not work here (not root, no loop driver); `why` says why.
class LoopDevice {
 public:
  explicit LoopDevice(uint64_t size) : image_(size) {
    std::string command = "losetup --find --show --sector-size 4096 " + image_.path() + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) {
      why_ = "popen failed";
      return;
    }
    std::array<char, 256> line{};
    std::string output;
    while (fgets(line.data(), line.size(), pipe) != nullptr) output += line.data();
    int status = pclose(pipe);
    while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
    if (status != 0 || output.rfind("/dev/loop", 0) != 0) {
      why_ = "losetup failed: " + output;
      return;
    }
    device_ = output;
  }
  ~LoopDevice() {
    if (!device_.empty()) {
      std::string command = "losetup -d " + device_ + " 2>/dev/null";
      EXPECT_EQ(std::system(command.c_str()), 0) << "detaching " << device_;
    }
  }
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;

  const std::string& device() const { return device_; }
  const std::string& why() const { return why_; }
  const TempImage& image() const { return image_; }

 private:
  TempImage image_;
  std::string device_;
  std::string why_;
};

}  // namespace skiff::virtio::testing
