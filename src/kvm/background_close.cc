// SPDX-License-Identifier: Apache-2.0
#include "kvm/background_close.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

namespace skiff {
namespace {

// A plain fork as a raw clone: exactly these flags are what the main thread's seccomp filter
// allows (security/syscall_tables.cc), and no glibc fork handlers run in a process that may
// have other threads.
long raw_fork() { return syscall(SYS_clone, SIGCHLD, 0, nullptr, nullptr, 0); }

// In the grandchild: keep only `keep_a` and `keep_b`, whatever else was open.
void close_all_but(int keep_a, int keep_b) {
  int low = keep_a < keep_b ? keep_a : keep_b;
  int high = keep_a < keep_b ? keep_b : keep_a;
  if (low > 0) syscall(SYS_close_range, 0u, static_cast<unsigned>(low - 1), 0u);
  if (high > low + 1) syscall(SYS_close_range, static_cast<unsigned>(low + 1), static_cast<unsigned>(high - 1), 0u);
  syscall(SYS_close_range, static_cast<unsigned>(high + 1), ~0u, 0u);
}

[[noreturn]] void grandchild(int vm_fd, int wait_fd) {
  close_all_but(vm_fd, wait_fd);
  char byte;
  // EOF once the caller and the middle process have closed the write end.
  while (syscall(SYS_read, wait_fd, &byte, 1) < 0 && errno == EINTR) {
  }
  syscall(SYS_close, vm_fd);  // the last reference: KVM destroys the VM here
  syscall(SYS_exit, 0);
  __builtin_unreachable();
}

}  // namespace

void close_vm_fd_in_background(UniqueFd vm_fd) {
  if (!vm_fd.valid()) return;
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return;  // vm_fd closes here, in the foreground
  UniqueFd wait_end(pipe_fds[0]);
  UniqueFd release_end(pipe_fds[1]);
  long middle = raw_fork();
  if (middle == 0) {
    if (raw_fork() == 0) grandchild(vm_fd.get(), wait_end.get());
    syscall(SYS_exit, 0);  // orphans the grandchild: init (or a subreaper) reaps it
  }
  if (middle > 0) {
    int status = 0;
    while (waitpid(static_cast<pid_t>(middle), &status, __WALL) < 0 && errno == EINTR) {
    }
  }
  // Our reference goes first, then the write end: the grandchild, if it exists, holds the
  // last reference when it wakes. Without it (a failed fork), this close does the teardown.
  vm_fd.reset();
  release_end.reset();
}

}  // namespace skiff
