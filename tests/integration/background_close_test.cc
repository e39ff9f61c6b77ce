// SPDX-License-Identifier: Apache-2.0
// close_vm_fd_in_background against a real KVM VM: the caller's fd is gone at return, the
// middle process is already reaped, and the grandchild that does KVM's teardown ends by
// itself (observed here by making the test process a child subreaper, so the orphan is
// reparented to us instead of init).
#include "kvm/background_close.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "guest_runner.h"
#include "kvm/kvm_system.h"

namespace skiff {
namespace {

// Waits up to `limit` for any child; its pid and status, or -1 once there is none.
std::pair<pid_t, int> reap_any(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (true) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG | __WALL);
    if (pid != 0) return {pid, status};
    if (std::chrono::steady_clock::now() > deadline) return {0, 0};
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

class BackgroundCloseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = test::kvm_unavailable_reason()) GTEST_SKIP() << "needs /dev/kvm: " << *reason;
    // No children of earlier tests may be mistaken for ours.
    while (reap_any(std::chrono::milliseconds(0)).first > 0) {
    }
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  }
  void TearDown() override { prctl(PR_SET_CHILD_SUBREAPER, 0); }
};

TEST_F(BackgroundCloseTest, TheGrandchildClosesTheVmAndEndsByItself) {
  auto kvm = KvmSystem::open();
  ASSERT_TRUE(kvm) << kvm.error().message();
  auto vm = kvm->create_vm();
  ASSERT_TRUE(vm) << vm.error().message();
  const int vm_fd = dup(vm->fd());  // a UniqueFd of our own to hand over
  ASSERT_GE(vm_fd, 0);
  { KvmVm only_the_dup_is_left = std::move(*vm); }

  close_vm_fd_in_background(UniqueFd(vm_fd));
  errno = 0;
  EXPECT_EQ(fcntl(vm_fd, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF) << "our copy of the VM fd is closed at return";

  // The middle process was reaped inside; what is left is the grandchild, orphaned to us.
  auto [pid, status] = reap_any(std::chrono::seconds(10));
  ASSERT_GT(pid, 0) << "the grandchild never ended (or there was none: errno " << errno << ")";
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // Nothing else: no zombie of the middle process, no second grandchild.
  auto [more, ignored] = reap_any(std::chrono::milliseconds(0));
  EXPECT_EQ(more, -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST_F(BackgroundCloseTest, AnInvalidFdIsANoOp) {
  close_vm_fd_in_background(UniqueFd());
  EXPECT_EQ(reap_any(std::chrono::milliseconds(0)).first, -1);
}

}  // namespace
}  // namespace skiff
