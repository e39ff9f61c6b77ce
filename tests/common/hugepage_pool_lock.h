// SPDX-License-Identifier: Apache-2.0
// Serializes the tests that grow, shrink or count the host's 2 MiB hugetlb pool
// (/proc/sys/vm/nr_hugepages is one global number): ctest runs test processes in parallel,
// and two of them reserving "total + n" at once, or one giving the pool back while the
// other still maps it, made HugetlbReclaimTest fail with ENOMEM in CI. Hold one for the
// whole test. The lock is flock(2) on a file in /tmp, released when the process exits.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

namespace skiff::testing_support {

class HugepagePoolLock {
 public:
  HugepagePoolLock() {
    fd_ = ::open("/tmp/skiff-tests-hugetlb-pool.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd_ < 0) return;  // without the file the tests run unserialized, as before
    while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
  ~HugepagePoolLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  HugepagePoolLock(const HugepagePoolLock&) = delete;
  HugepagePoolLock& operator=(const HugepagePoolLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace skiff::testing_support
