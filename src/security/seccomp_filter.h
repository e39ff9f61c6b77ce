// SPDX-License-Identifier: Apache-2.0
// Per-thread seccomp filters (docs/security.md). Each thread skiff starts calls
// install_thread_filter() with its kind as the first thing it does, before it touches
// guest memory or any guest-controlled data; from then on it can make only the system
// calls its kind's table (syscall_tables.h) allows.
//
// Modes:
//   enforce  a forbidden call raises SIGSYS (SCMP_ACT_TRAP); the handler writes one line
//            naming the call and the thread, then the process dies of SIGSYS.
//   log      a forbidden call is logged by the kernel (SCMP_ACT_LOG: audit / dmesg
//            "type=1326") and proceeds. For finding what a table lacks.
//   off      nothing is installed.
//
// A filter is inherited by every thread the filtered thread creates afterwards and cannot
// be removed; a thread that installs its own filter on top gets the intersection of both.
#pragma once

#include <sys/types.h>

#include <span>
#include <string_view>

#include "skiff/error.h"
#include "skiff/vm.h"  // SeccompMode

namespace skiff::security {

using skiff::SeccompMode;

// "enforce", "log" or "off" (the --seccomp flag). Anything else is a config error.
Result<SeccompMode> parse_seccomp_mode(std::string_view text);
std::string_view to_string(SeccompMode mode);

// Every kind of thread skiff starts. Where each is created and where its filter goes is
// in docs/security.md ("Threads").
enum class ThreadKind {
  main,            // the thread that builds the VM, waits for it and tears it down
  vcpu,            // "skiff-vcpuN": KVM_RUN and the port-I/O / MMIO exits
  device_manager,  // "skiff-devices": virtio activate()/reset() for the vCPUs; starts the workers
  blk_io,          // "skiff-<disk>-qN": one per virtio-blk queue (EventLoop)
  net_io,          // "skiff-<nic>-qN": one per virtio-net queue pair (EventLoop)
  balloon,         // "skiff-balloon": virtio-balloon queues and statistics timer (EventLoop)
  rng,             // "skiff-rng0": virtio-rng (EventLoop)
  vsock,           // "skiff-vsock": virtio-vsock queues and its host Unix sockets (EventLoop)
  console,         // "skiff-console": stdin to the serial port
  signals,         // "skiff-signals": SIGINT/SIGTERM/SIGHUP of the skiff command
  api,             // "skiff-api": the control API's HTTP server
  shutdown_timer,  // "skiff-shutdown": Ctrl-Alt-Del, then the hard stop, after Vm::shutdown
};

// All kinds, in declaration order (for tests and documentation).
std::span<const ThreadKind> all_thread_kinds();
// "main", "vcpu", "blk_io"...
std::string_view to_string(ThreadKind kind);

// Installs `kind`'s filter on the calling thread only (not on the process's other
// threads): PR_SET_NO_NEW_PRIVS first (required for an unprivileged seccomp filter and so
// that no execve could gain privileges), then the filter. In enforce mode it also installs
// the SIGSYS handler (install_sigsys_handler) and unblocks SIGSYS in this thread, so a
// violation is reported instead of silently killing. `off` does nothing.
Result<void> install_thread_filter(ThreadKind kind, SeccompMode mode);

// Process-wide, idempotent: everything install_thread_filter() does only once per process
// (libc's lazily loaded state, libseccomp's probing of the kernel, in enforce mode the SIGSYS
// handler), ~1.7 ms on our hosts. Vm::create runs it on a thread of its own beside the VM's
// construction, so that the first filtered thread, on the way to the first KVM_RUN, finds it
// done (or waits for the rest of it). `off` does nothing.
void prepare_thread_filters(SeccompMode mode);

// Process-wide, idempotent: the SIGSYS handler that reports a violation and kills the
// process. install_thread_filter() calls it; calling it early (in main) resolves the
// syscall names before any thread runs.
void install_sigsys_handler();

}  // namespace skiff::security
