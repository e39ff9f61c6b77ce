// SPDX-License-Identifier: Apache-2.0
// How these tables were made: by reading every thread's code (docs/security.md names the
// files) and by running the tier-2 tests and the CLI tests under `strace -f -ff`, per
// thread (threads name themselves with prctl(PR_SET_NAME) first thing), which adds what
// glibc, libstdc++, liburing and spdlog do underneath. A call belongs to a thread kind if
// that kind makes it in normal operation; start-up work that happens before the thread
// installs its filter (opening files, KVM set-up, pinning) is not listed.
#include "security/syscall_tables.h"

#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/io_uring.h>
#include <linux/kvm.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <linux/seccomp.h>

#include "kvm/kvm_uapi.h"

namespace skiff::security {
namespace {

constexpr uint64_t kLow32 = 0xffff'ffffULL;

// The clone flags glibc's pthread_create uses (sysdeps/unix/sysv/linux/createthread.c):
// a thread in our process, never a new process or namespace.
constexpr uint64_t kThreadCloneFlags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SYSVSEM | CLONE_SIGHAND |
                                       CLONE_THREAD | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;

SyscallRule rule(int number, std::string_view name, std::string_view why) {
  return SyscallRule{.number = number, .name = name, .condition = std::nullopt, .condition_name = {}, .why = why};
}

// Only when argument `index`, masked, equals `value`.
SyscallRule rule_if(int number, std::string_view name, unsigned index, uint64_t mask, uint64_t value,
                    std::string_view value_name, std::string_view why) {
  return SyscallRule{.number = number,
                     .name = name,
                     .condition = ArgCondition{.arg_index = index, .mask = mask, .value = value},
                     .condition_name = value_name,
                     .why = why};
}

// Only when argument `index` is this process's pid: signals to our own threads only.
SyscallRule own_pid_rule(int number, std::string_view name, unsigned index, std::string_view why) {
  SyscallRule result = rule_if(number, name, index, ~uint64_t{0}, 0, "own pid", why);
  result.condition->value_is_own_pid = true;
  return result;
}

// The kernel takes the ioctl command as an unsigned int: compare the low 32 bits, as it does.
SyscallRule ioctl_rule(unsigned long request, std::string_view request_name, std::string_view why) {
  return rule_if(__NR_ioctl, "ioctl", 1, kLow32, request & kLow32, request_name, why);
}

// The syscall's number and name from one token, so they cannot disagree.
#define SKIFF_SYSCALL(name, why) rule(__NR_##name, #name, why)
#define SKIFF_SYSCALL_IF(name, index, mask, value, why) rule_if(__NR_##name, #name, index, mask, value, #value, why)
#define SKIFF_IOCTL(request, why) ioctl_rule(request, #request, why)

// ---- Every thread ------------------------------------------------------------------------

const RuleGroup& runtime_group() {
  static const RuleGroup group{
      "runtime",
      "what glibc, libstdc++ and spdlog do in any thread",
      {
          SKIFF_SYSCALL(futex, "std::mutex, std::condition_variable, std::thread::join, atomics waits"),
          SKIFF_SYSCALL(read, "draining eventfds and timerfds (every worker, the console, irqfd users)"),
          SKIFF_SYSCALL(write, "eventfd kicks and irqfds, spdlog lines on stderr, the SIGSYS report"),
          SKIFF_SYSCALL(close, "UniqueFd destructors: the last owner of an fd may be any thread"),
          rule_if(__NR_mmap, "mmap", 2, PROT_EXEC, 0, "prot without PROT_EXEC",
                  "malloc arenas and large blocks, thread stacks, io_uring rings; never executable"),
          rule_if(__NR_mprotect, "mprotect", 2, PROT_EXEC, 0, "prot without PROT_EXEC",
                  "malloc growing a thread arena, thread stack guard pages; never executable"),
          SKIFF_SYSCALL(munmap, "free() of large blocks, arena trimming, thread stacks, io_uring rings"),
          SKIFF_SYSCALL_IF(madvise, 2, kLow32, MADV_DONTNEED,
                           "glibc returns an ended thread's stack and trimmed heap; the balloon frees guest pages"),
          SKIFF_SYSCALL(brk, "malloc in the main arena"),
          SKIFF_SYSCALL(rt_sigprocmask, "glibc masks signals around thread exit and pthread_kill"),
          SKIFF_SYSCALL(rt_sigreturn, "return from the vCPU kick handler and any other handler"),
          SKIFF_SYSCALL(restart_syscall, "the kernel resumes a wait a signal interrupted"),
          SKIFF_SYSCALL(clock_gettime,
                        "steady_clock/system_clock when the vDSO falls back to the syscall; the thread CPU clock "
                        "(never in the vDSO), read around each virtio-blk poll episode"),
          SKIFF_SYSCALL(gettid, "spdlog caches the thread id on the thread's first log line"),
          SKIFF_SYSCALL(getpid, "pthread_kill and raise: tgkill(getpid(), tid, signal)"),
          own_pid_rule(__NR_tgkill, "tgkill", 0,
                       "pthread_kill of our own threads (the vCPU kick, the signal thread's wake-up), abort()"),
          SKIFF_SYSCALL(exit, "a thread ends"),
          SKIFF_SYSCALL(exit_group, "the process ends (std::exit, abort after the handler)"),
      }};
  return group;
}

// ---- Signalling the guest ----------------------------------------------------------------

const RuleGroup& interrupts_group() {
  static const RuleGroup group{
      "interrupts",
      "the thread raises guest interrupts (used buffers, config changes, serial, ACPI, keyboard)",
      {
          SKIFF_IOCTL(KVM_IRQ_LINE,
                      "KvmIrqLine: serial COM1, i8042, ACPI SCI and the shared PCI INTx lines (interrupts/kvm_irq_line.h)"),
          SKIFF_IOCTL(KVM_SIGNAL_MSI, "MsiRoutes::deliver when no GSI route can be made (interrupts/msi_routes.cc)"),
          // linux/kvm.h's KVM_SET_GSI_ROUTING encodes a different size in C++ (kvm/kvm_uapi.h).
          ioctl_rule(kvm_uapi::kSetGsiRouting, "KVM_SET_GSI_ROUTING",
                     "MsiRoutes makes a route for an MSI-X message on its first delivery or unmask"),
          SKIFF_IOCTL(KVM_IRQFD, "MsiRoutes attaches (and on reclaim detaches) the route's irqfd"),
          SKIFF_SYSCALL(eventfd2, "MsiRoutes: the irqfd of a new route"),
      }};
  return group;
}

// ---- Threads that start threads ----------------------------------------------------------

const RuleGroup& thread_creation_group() {
  static const RuleGroup group{
      "thread_creation",
      "the thread starts threads, which inherit its filter until they install their own",
      {
          SyscallRule{.number = __NR_clone3,
                      .name = "clone3",
                      .condition = std::nullopt,
                      .condition_name = {},
                      .why = "glibc tries clone3 first; its flags are in memory the filter cannot read, so it "
                             "fails with ENOSYS and glibc falls back to clone",
                      .action = RuleAction::fail_enosys},
          rule_if(__NR_clone, "clone", 0, ~uint64_t{0}, kThreadCloneFlags, "pthread_create's flags",
                  "std::thread: exactly pthread_create's flags, so never a new process or namespace"),
          SKIFF_SYSCALL(set_robust_list, "glibc's thread start, in the new thread"),
          SKIFF_SYSCALL(rseq, "glibc's thread start registers restartable sequences, in the new thread"),
          SKIFF_SYSCALL_IF(prctl, 0, kLow32, PR_SET_NAME, "pthread_setname_np: the new thread names itself"),
          SKIFF_SYSCALL_IF(prctl, 0, kLow32, PR_GET_NAME,
                           "install_thread_filter records the new thread's name for the SIGSYS report"),
          SKIFF_SYSCALL_IF(prctl, 0, kLow32, PR_SET_NO_NEW_PRIVS,
                           "install_thread_filter in the new thread, before its own filter"),
          SKIFF_SYSCALL_IF(seccomp, 0, kLow32, SECCOMP_SET_MODE_FILTER,
                           "the new thread installs its own filter (which can only narrow this one)"),
      }};
  return group;
}

// ---- Device worker threads (EventLoop) ---------------------------------------------------

const RuleGroup& event_loop_group() {
  static const RuleGroup group{
      "event_loop",
      "the thread is an EventLoop (common/event_loop.cc)",
      {
          SKIFF_SYSCALL(epoll_wait, "EventLoop::run waits for its fds"),
          SKIFF_SYSCALL(timerfd_settime, "rate limiters (blk, net) and the balloon statistics timer re-arm"),
      }};
  return group;
}

const RuleGroup& blk_io_group() {
  static const RuleGroup group{
      "blk_io",
      "virtio-blk requests (virtio/blk/{virtio_blk,io_engine,uring_engine,disk_backend}.cc)",
      {
          SKIFF_SYSCALL(io_uring_enter, "UringEngine::kick submits, drain() waits for completions"),
          SKIFF_SYSCALL(preadv, "SyncEngine reads (cache=unsafe/writeback without io_uring)"),
          SKIFF_SYSCALL(pwritev, "SyncEngine writes"),
          SKIFF_SYSCALL(pwrite64, "DiskBackend::write_zero_buffers, the last write-zeroes fallback"),
          SKIFF_SYSCALL(fdatasync, "DiskBackend::flush for VIRTIO_BLK_T_FLUSH (sync engine)"),
          SKIFF_SYSCALL(fallocate, "discard (PUNCH_HOLE) and write-zeroes (ZERO_RANGE) on image files"),
          SKIFF_IOCTL(BLKDISCARD, "discard on a block device (zvol, LVM, loop)"),
          SKIFF_IOCTL(BLKZEROOUT, "write-zeroes on a block device"),
          SKIFF_SYSCALL(sched_getaffinity,
                        "VirtioBlk::note_wakeup: no busy polling when the queue thread's CPUs are no more than "
                        "the vCPUs"),
      }};
  return group;
}

const RuleGroup& net_io_group() {
  static const RuleGroup group{
      "net_io",
      "virtio-net frames (virtio/net/{virtio_net,tap}.cc)",
      {
          SKIFF_SYSCALL(readv, "Tap::read_frame: one frame from the tap queue"),
          SKIFF_SYSCALL(writev, "Tap::write_frame: one frame to the tap queue"),
          SKIFF_SYSCALL(epoll_ctl, "set_tap_polling adds/removes the tap fd as RX space comes and goes"),
          SKIFF_IOCTL(TUNSETQUEUE, "VQ_PAIRS_SET: a worker attaches or detaches its own tap queue"),
      }};
  return group;
}

const RuleGroup& balloon_group() {
  static const RuleGroup group{
      "balloon",
      "virtio-balloon (virtio/balloon/virtio_balloon.cc, memory/memory_reclaim.cc)",
      {
          // madvise(MADV_DONTNEED) for anonymous RAM is in the runtime group.
          SKIFF_SYSCALL(fallocate,
                        "MemoryReclaimer: PUNCH_HOLE frees memfd/hugetlbfs pages, mode 0 re-backs them on deflate"),
      }};
  return group;
}

const RuleGroup& rng_group() {
  static const RuleGroup group{
      "rng",
      "virtio-rng (virtio/rng/virtio_rng.cc)",
      {
          SKIFF_SYSCALL(getrandom, "the entropy the guest asked for"),
      }};
  return group;
}

const RuleGroup& vsock_group() {
  static const RuleGroup group{
      "vsock",
      "virtio-vsock connections over Unix sockets (virtio/vsock/{virtio_vsock,vsock_muxer}.cc)",
      {
          SKIFF_SYSCALL(epoll_ctl, "VsockMuxer::update_polling: each connection's socket in the muxer's poll set"),
          SKIFF_SYSCALL(accept4, "VsockMuxer::accept_host_connections: a host program connects to the socket"),
          SKIFF_SYSCALL_IF(socket, 0, kLow32, AF_UNIX,
                           "VsockMuxer::guest_request: a Unix socket for the guest's connection to <socket>_<port>"),
          SKIFF_SYSCALL(connect, "VsockMuxer::guest_request connects it (non-blocking: at once or refused)"),
          SKIFF_SYSCALL(recvfrom, "recv: a host program's CONNECT line (MSG_PEEK first) and its data for the guest"),
          SKIFF_SYSCALL(sendto, "send: the guest's data and the \"OK <port>\" line to a host program"),
          SKIFF_SYSCALL(shutdown, "the guest shut down one direction of a connection"),
      }};
  return group;
}

// ---- vCPU --------------------------------------------------------------------------------

const RuleGroup& vcpu_group() {
  static const RuleGroup group{
      "vcpu",
      "KVM_RUN and the exits it hands to the devices (vcpu/vcpu_runner.cc, devices/legacy, pci, "
      "virtio/transport)",
      {
          SKIFF_IOCTL(KVM_RUN, "VcpuRunner::thread_main runs the guest"),
          SKIFF_IOCTL(KVM_GET_REGS, "VcpuRunner::describe_state for a crash report"),
          SKIFF_IOCTL(KVM_GET_SREGS, "VcpuRunner::describe_state for a crash report"),
          SKIFF_IOCTL(KVM_IOEVENTFD,
                      "the transports (un)register queue notify addresses as the driver enables queues or "
                      "resets the device"),
          SKIFF_SYSCALL(poll, "Serial::fd_output_sink waits when the console output is full (EAGAIN)"),
      }};
  return group;
}

// The transports hand VirtioDevice::activate() and reset() (the driver wrote DRIVER_OK or 0
// to the status register) to the device manager thread (vmm/device_manager.h) and wait;
// these are the calls they make there.
const RuleGroup& device_activation_group() {
  static const RuleGroup group{
      "device_activation",
      "virtio device activate()/reset(), run for the vCPU on the device manager thread",
      {
          SKIFF_SYSCALL(epoll_create1, "EventLoop::create, virtio-net's per-pair tap poll set"),
          SKIFF_SYSCALL(epoll_ctl, "EventLoop::add registers the queue's fds"),
          SKIFF_SYSCALL(timerfd_create, "virtio-net's per-pair rate-limiter timers"),
          SKIFF_SYSCALL(timerfd_settime, "virtio-blk reset disarms its queue timers"),
          SKIFF_SYSCALL(io_uring_setup, "virtio-blk activate: UringEngine::create, one ring per queue"),
          SKIFF_SYSCALL_IF(io_uring_register, 1, kLow32, IORING_REGISTER_EVENTFD,
                           "UringEngine::create: the completion eventfd"),
          SKIFF_SYSCALL_IF(io_uring_register, 1, kLow32, IORING_REGISTER_PROBE,
                           "UringEngine::create: is IORING_OP_FALLOCATE supported"),
          SKIFF_SYSCALL_IF(io_uring_register, 1, kLow32, IORING_REGISTER_RESTRICTIONS,
                           "UringEngine::restrict_ring: only readv/writev/fsync/fallocate requests"),
          SKIFF_SYSCALL_IF(io_uring_register, 1, kLow32, IORING_REGISTER_ENABLE_RINGS,
                           "UringEngine::restrict_ring: the ring is created disabled until restricted"),
          SKIFF_SYSCALL(io_uring_enter, "virtio-blk reset: UringEngine::drain waits for requests in flight"),
          SKIFF_IOCTL(TUNSETOFFLOAD, "virtio-net activate: the offloads the driver accepted"),
          SKIFF_IOCTL(TUNSETQUEUE, "virtio-net activate: only queue pair 0 stays attached"),
      }};
  return group;
}

// ---- Console, signals, API ---------------------------------------------------------------

const RuleGroup& console_group() {
  static const RuleGroup group{
      "console",
      "stdin to the serial port (devices/legacy/console_input.cc)",
      {
          SKIFF_SYSCALL(poll, "ConsoleInput::run waits for input, the stop event or receive space"),
      }};
  return group;
}

const RuleGroup& signals_group() {
  static const RuleGroup group{
      "signals",
      "the skiff command's signal thread (cli/run_command.cc SignalWatcher)",
      {
          SKIFF_SYSCALL(rt_sigtimedwait, "sigwait for SIGINT/SIGTERM/SIGHUP/SIGUSR2"),
      }};
  return group;
}

const RuleGroup& api_group() {
  static const RuleGroup group{
      "api",
      "the control API server (api/api_server.cc, api/fd_stream.cc)",
      {
          SKIFF_SYSCALL(poll, "serve_loop waits for a connection or the stop event; FdStream timeouts"),
          SKIFF_SYSCALL(accept4, "serve_loop takes the next connection"),
          SKIFF_SYSCALL(recvfrom, "FdStream::read (recv)"),
          SKIFF_SYSCALL(sendto, "FdStream::write (send with MSG_NOSIGNAL)"),
          SKIFF_SYSCALL(shutdown, "serve_loop closes a connection both ways"),
      }};
  return group;
}

// ---- Main --------------------------------------------------------------------------------

const RuleGroup& main_group() {
  static const RuleGroup group{
      "main",
      "waiting for the VM and tearing it down (vmm/vm.cc wait/join_all/~Impl, cli/run_command.cc)",
      {
          SKIFF_SYSCALL(fdatasync, "Vm flush_disks and ~VirtioBlk make guest writes durable at exit"),
          SKIFF_SYSCALL(io_uring_enter, "~UringEngine drains requests in flight at teardown"),
          SKIFF_SYSCALL(timerfd_settime, "virtio-blk reset at teardown disarms its queue timers"),
          SKIFF_IOCTL(KVM_IOEVENTFD, "transport reset at teardown unregisters the queue notify addresses"),
          SKIFF_IOCTL(TCSETS, "ConsoleInput::restore puts the terminal back (tcsetattr TCSANOW)"),
          SKIFF_SYSCALL(newfstatat, "remove_unix_socket at teardown: lstat checks the API socket path is still ours"),
          SKIFF_SYSCALL(unlink, "remove_unix_socket at teardown: removes the API socket (clients connect by path)"),
          // close_vm_fd_in_background (VmOptions::background_kvm_teardown): two plain forks, the
          // grandchild keeps only the VM fd and a pipe, waits for the pipe's EOF and closes the
          // VM fd. The children inherit this filter: no exec, no new threads, no namespaces.
          rule_if(__NR_clone, "clone", 0, ~uint64_t{0}, SIGCHLD, "SIGCHLD only (a plain fork)",
                  "close_vm_fd_in_background: a child that only closes fds and waits on a pipe"),
          SKIFF_SYSCALL(pipe2, "close_vm_fd_in_background: the pipe that tells the grandchild to close the VM fd"),
          SKIFF_SYSCALL(wait4, "close_vm_fd_in_background reaps the middle process at once (no zombie)"),
          SKIFF_SYSCALL(close_range, "close_vm_fd_in_background: the grandchild drops every fd but the VM fd"),
      }};
  return group;
}

#undef SKIFF_SYSCALL
#undef SKIFF_SYSCALL_IF
#undef SKIFF_IOCTL

}  // namespace

std::vector<const RuleGroup*> thread_rule_groups(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::main:
      // Vm::shutdown() from the embedder's thread starts the shutdown timer.
      return {&runtime_group(), &interrupts_group(), &thread_creation_group(), &main_group()};
    case ThreadKind::vcpu:
      // Device activation and reset run on the device manager thread, so the vCPU needs
      // none of the workers' calls and starts no threads.
      return {&runtime_group(), &interrupts_group(), &vcpu_group()};
    case ThreadKind::device_manager:
      // Device workers are born here and inherit this filter: theirs must be in it.
      return {&runtime_group(),   &interrupts_group(), &device_activation_group(), &thread_creation_group(),
              &event_loop_group(), &blk_io_group(),    &net_io_group(),            &balloon_group(),
              &rng_group(),        &vsock_group()};
    case ThreadKind::blk_io:
      return {&runtime_group(), &interrupts_group(), &event_loop_group(), &blk_io_group()};
    case ThreadKind::net_io:
      return {&runtime_group(), &interrupts_group(), &event_loop_group(), &net_io_group()};
    case ThreadKind::balloon:
      return {&runtime_group(), &interrupts_group(), &event_loop_group(), &balloon_group()};
    case ThreadKind::rng:
      return {&runtime_group(), &interrupts_group(), &event_loop_group(), &rng_group()};
    case ThreadKind::vsock:
      return {&runtime_group(), &interrupts_group(), &event_loop_group(), &vsock_group()};
    case ThreadKind::console:
      return {&runtime_group(), &interrupts_group(), &console_group()};
    case ThreadKind::signals:
      // Vm::shutdown() starts the shutdown timer from here.
      return {&runtime_group(), &interrupts_group(), &thread_creation_group(), &signals_group()};
    case ThreadKind::api:
      // PUT /vm/shutdown starts the shutdown timer from here.
      return {&runtime_group(), &interrupts_group(), &thread_creation_group(), &api_group()};
    case ThreadKind::shutdown_timer:
      // Waits on a condition variable, raises the ACPI power button / Ctrl-Alt-Del
      // (interrupts) and stops the vCPUs (tgkill): nothing beyond the shared groups.
      return {&runtime_group(), &interrupts_group()};
  }
  return {&runtime_group()};
}

std::vector<SyscallRule> thread_rules(ThreadKind kind) {
  std::vector<SyscallRule> rules;
  for (const RuleGroup* group : thread_rule_groups(kind)) {
    for (const SyscallRule& candidate : group->rules) {
      // Groups overlap (epoll_ctl is both activation and net I/O); one rule is enough.
      bool present = false;
      for (const SyscallRule& existing : rules) {
        if (existing.number == candidate.number && existing.condition == candidate.condition &&
            existing.action == candidate.action) {
          present = true;
          break;
        }
      }
      if (!present) rules.push_back(candidate);
    }
  }
  return rules;
}

}  // namespace skiff::security
