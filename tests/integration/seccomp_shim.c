// SPDX-License-Identifier: Apache-2.0
// LD_PRELOAD shim for tests/integration/seccomp_test.cc: makes one of skiff's own threads
// issue a system call its seccomp filter forbids, from inside the code path that thread
// really runs, as a device thread taken over by the guest would. skiff itself has no
// test-only hook for this.
//
// Environment (read once, when the shim is loaded):
//   SKIFF_SHIM_FORBIDDEN_CALL  "openat" (openat(AT_FDCWD, "/etc/hostname", O_RDONLY)) or
//                              "socket" (socket(AF_INET, SOCK_STREAM, 0)). Unset or empty:
//                              the shim only forwards every call.
//   SKIFF_SHIM_THREAD          which thread makes the call:
//                              "blk" (default): a virtio-blk I/O worker ("skiff-<disk>-qN"),
//                                in the sync engine's preadv/pwritev;
//                              "vcpu": a vCPU thread ("skiff-vcpuN"), in ioctl(KVM_RUN).
//
// The call is made once per process, as a raw syscall(2) so that glibc cannot substitute
// another system call. When it returns (seccomp off or in log mode) the shim closes the fd
// and writes one line to stderr, "skiff-seccomp-shim: <call> from thread "<name>" returned
// <n>", so a test can tell that the call was really made; then it forwards to the real
// function.
//
// Thread names: asking the kernel (prctl(PR_GET_NAME), /proc/self/task/<tid>/comm) is itself
// a system call that the device threads' filters forbid, so the shim records the name each
// skiff thread gives itself with pthread_setname_np(pthread_self(), ...) (every skiff thread
// names itself before it installs its filter) in a thread-local buffer.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum ForbiddenCall { kCallNone, kCallOpenat, kCallSocket };
enum TargetThread { kThreadBlk, kThreadVcpu };

typedef int (*SetnameFn)(pthread_t, const char*);
typedef ssize_t (*VectorIoFn)(int, const struct iovec*, int, off_t);
typedef int (*IoctlFn)(int, unsigned long, void*);

static enum ForbiddenCall forbidden_call = kCallNone;
static enum TargetThread target_thread = kThreadBlk;
static atomic_bool call_made = false;

static SetnameFn real_pthread_setname_np;
static VectorIoFn real_preadv;
static VectorIoFn real_pwritev;
static VectorIoFn real_preadv64;
static VectorIoFn real_pwritev64;
static IoctlFn real_ioctl;

// Linux thread names are at most 15 bytes plus the NUL (TASK_COMM_LEN).
static __thread char thread_name[16];

// Resolved at load time, before skiff starts any thread or installs any filter: dlsym may
// allocate and take locks, which a filtered thread should not need to do on our behalf.
__attribute__((constructor)) static void shim_init(void) {
  real_pthread_setname_np = (SetnameFn)dlsym(RTLD_NEXT, "pthread_setname_np");
  real_preadv = (VectorIoFn)dlsym(RTLD_NEXT, "preadv");
  real_pwritev = (VectorIoFn)dlsym(RTLD_NEXT, "pwritev");
  real_preadv64 = (VectorIoFn)dlsym(RTLD_NEXT, "preadv64");
  real_pwritev64 = (VectorIoFn)dlsym(RTLD_NEXT, "pwritev64");
  real_ioctl = (IoctlFn)dlsym(RTLD_NEXT, "ioctl");

  const char* call = getenv("SKIFF_SHIM_FORBIDDEN_CALL");
  if (call != NULL && strcmp(call, "openat") == 0) {
    forbidden_call = kCallOpenat;
  } else if (call != NULL && strcmp(call, "socket") == 0) {
    forbidden_call = kCallSocket;
  } else if (call != NULL && call[0] != '\0') {
    fprintf(stderr, "skiff-seccomp-shim: SKIFF_SHIM_FORBIDDEN_CALL=\"%s\": use \"openat\" or \"socket\"\n", call);
    abort();
  }
  const char* thread = getenv("SKIFF_SHIM_THREAD");
  if (thread != NULL && strcmp(thread, "vcpu") == 0) {
    target_thread = kThreadVcpu;
  } else if (thread != NULL && thread[0] != '\0' && strcmp(thread, "blk") != 0) {
    fprintf(stderr, "skiff-seccomp-shim: SKIFF_SHIM_THREAD=\"%s\": use \"blk\" or \"vcpu\"\n", thread);
    abort();
  }
}

static bool name_starts_with(const char* prefix) {
  return strncmp(thread_name, prefix, strlen(prefix)) == 0;
}

// Writes all of `text` to stderr with write(2) only (allowed in every skiff thread).
static void write_stderr(const char* text, size_t length) {
  while (length > 0) {
    ssize_t n = write(STDERR_FILENO, text, length);
    if (n <= 0) return;
    text += n;
    length -= (size_t)n;
  }
}

// Makes the forbidden call once per process if the calling thread is the targeted kind.
static void maybe_make_forbidden_call(enum TargetThread here) {
  if (forbidden_call == kCallNone || here != target_thread) return;
  if (atomic_exchange(&call_made, true)) return;
  const char* name = forbidden_call == kCallOpenat ? "openat" : "socket";
  long result = forbidden_call == kCallOpenat
                    ? syscall(SYS_openat, AT_FDCWD, "/etc/hostname", O_RDONLY | O_CLOEXEC)
                    : syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  // Only reached when the filter let the call through (log mode, or no filter).
  if (result >= 0) close((int)result);
  char line[128];
  int length = snprintf(line, sizeof(line), "skiff-seccomp-shim: %s from thread \"%s\" returned %ld\n", name,
                        thread_name, result);
  if (length > 0) write_stderr(line, (size_t)length < sizeof(line) ? (size_t)length : sizeof(line) - 1);
}

// A virtio-blk I/O worker: "skiff-<disk>-qN", i.e. any skiff thread but the vCPUs (the
// other named threads never call preadv/pwritev).
static void on_vector_io(void) {
  if (name_starts_with("skiff-") && !name_starts_with("skiff-vcpu")) maybe_make_forbidden_call(kThreadBlk);
}

int pthread_setname_np(pthread_t thread, const char* name) {
  if (pthread_equal(thread, pthread_self())) {
    strncpy(thread_name, name, sizeof(thread_name) - 1);
    thread_name[sizeof(thread_name) - 1] = '\0';
  }
  return real_pthread_setname_np(thread, name);
}

ssize_t preadv(int fd, const struct iovec* iov, int count, off_t offset) {
  on_vector_io();
  return real_preadv(fd, iov, count, offset);
}

ssize_t pwritev(int fd, const struct iovec* iov, int count, off_t offset) {
  on_vector_io();
  return real_pwritev(fd, iov, count, offset);
}

// The same functions under their LFS names (aliases on x86_64; a binary may bind either).
ssize_t preadv64(int fd, const struct iovec* iov, int count, off_t offset) {
  on_vector_io();
  return real_preadv64(fd, iov, count, offset);
}

ssize_t pwritev64(int fd, const struct iovec* iov, int count, off_t offset) {
  on_vector_io();
  return real_pwritev64(fd, iov, count, offset);
}

// glibc declares ioctl(int, unsigned long, ...); every request skiff makes passes at most
// one pointer-sized argument, which the x86-64 calling convention passes in a register
// whether or not the function is variadic.
int ioctl(int fd, unsigned long request, ...) {
  va_list args;
  va_start(args, request);
  void* argument = va_arg(args, void*);
  va_end(args);
  if (request == KVM_RUN && name_starts_with("skiff-vcpu")) maybe_make_forbidden_call(kThreadVcpu);
  return real_ioctl(fd, request, argument);
}
