// SPDX-License-Identifier: Apache-2.0
// The embeddable VM: build one from a VmSpec, start it, wait for it to stop.
//
//   auto spec = skiff::load_spec_file("vm.json");
//   if (!spec) return skiff::exit_code_for(spec.error());
//   auto vm = skiff::Vm::create(*spec);
//   if (!vm) return skiff::exit_code_for(vm.error());
//   if (auto started = (*vm)->start(); !started) return skiff::exit_code_for(started.error());
//   skiff::VmExit exit = (*vm)->wait();
//
// A complete program, built by the install test: docs/api.md, "A complete example".
//
// Several Vm objects can live in one process; there is no global state besides the
// process-wide handler of the vCPU kick signal (SIGRTMIN).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <optional>
#include <span>
#include <vector>

#include "skiff/error.h"
#include "skiff/exit.h"
#include "skiff/spec.h"
#include "skiff/state.h"
#include "skiff/stats.h"

namespace skiff {

// What the seccomp filters on the VM's threads do with a system call their thread kind does
// not need (docs/security.md):
//   enforce  the process is killed by SIGSYS after one line on stderr naming the call
//   log      the kernel logs the call (audit / dmesg "type=1326") and lets it proceed
//   off      no filters
enum class SeccompMode { enforce, log, off };

struct VmOptions {
  // Receives the guest's serial output instead of the spec's serial sink when set. It is
  // called on a vCPU thread, so under that thread's seccomp filter: it may write to fds it
  // already has and take locks, but not open files or sockets (docs/security.md).
  std::function<void(std::span<const uint8_t>)> console_output;
  // Path of the KVM device.
  std::string kvm_path = "/dev/kvm";
  // Filters for every thread the VM starts (vCPUs, device workers, console input, the
  // control API, the shutdown timer), each installed by the thread itself before it touches
  // guest memory. The embedder's own threads are left alone.
  SeccompMode seccomp = SeccompMode::enforce;
  // For a process that exits once this Vm is destroyed (the skiff command line): KVM's own
  // destruction of the VM, which waits for kernel grace periods (~15 ms on our hosts),
  // then runs in a short-lived orphaned child process instead of delaying the exit after
  // the verdict is known. Everything of skiff's (disks flushed and closed, guest memory
  // unmapped, threads joined) is done before ~Vm returns either way; the child only holds
  // the VM fd, exits by itself and is reaped by init or a subreaper, never left a zombie of
  // the embedder. Off by default: a long-lived embedder gains nothing from it.
  bool background_kvm_teardown = false;
};

// Timestamps of a VM's life, for boot-time reports.
struct VmTimings {
  std::chrono::steady_clock::time_point created;
  std::optional<std::chrono::steady_clock::time_point> started;
  std::optional<std::chrono::steady_clock::time_point> first_console_output;
  std::optional<std::chrono::steady_clock::time_point> stopped;
};

// The memory balloon as the host sees it (Vm::balloon()). Pages are 4 KiB, the balloon's unit.
struct BalloonStatus {
  uint64_t target_pages = 0;  // what the host asked the guest to hold in its balloon
  uint64_t actual_pages = 0;  // what the guest driver says it holds now
  uint64_t target_mib() const { return target_pages / 256; }
  uint64_t actual_mib() const { return actual_pages / 256; }
  // Memory handed back to the host since the VM started (inflated and reported pages), and
  // on hugetlb-backed VMs the huge pages returned to the pool and those the guest gave back
  // only in part (these stay resident: docs/devices.md "virtio-balloon").
  uint64_t bytes_released = 0;
  uint64_t huge_pages_released = 0;
  uint64_t partial_huge_pages = 0;
  uint64_t out_of_range_pages = 0;  // page numbers from the guest outside its RAM, ignored
  // The guest's latest memory statistics by name (swap_in, swap_out, major_faults,
  // minor_faults, free_memory, total_memory, available_memory, disk_caches,
  // hugetlb_allocations, hugetlb_failures; tags this build does not know as "tag_<n>").
  // Memory figures are bytes. Empty until the first set arrives (spec stats_interval_s).
  std::map<std::string, uint64_t> guest_stats;
  std::optional<std::chrono::system_clock::time_point> stats_received_at;
  uint64_t stats_sets = 0;  // statistics sets received so far
};

class Vm {
 public:
  // Builds the whole machine: KVM VM, guest memory, devices, firmware tables, the loaded
  // kernel and vCPUs. Nothing runs until start(). Errors say which spec field or host
  // resource is at fault.
  static Result<std::unique_ptr<Vm>> create(const VmSpec& spec, VmOptions options = {});

  ~Vm();  // stops the VM if it still runs and joins every thread
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // Starts the vCPU threads (and console input when the spec asks for it).
  Result<void> start();
  // Blocks until the VM stops, then joins its threads; returns why it stopped. Safe to
  // call more than once (returns the same answer).
  VmExit wait();
  // Like wait(), but returns nullopt when the VM is still running after `timeout`.
  std::optional<VmExit> wait_for(std::chrono::milliseconds timeout);
  // Asks the VM to stop with the given reason; returns at once. The first request wins.
  void request_stop(VmExit reason);

  // Stops every vCPU outside the guest; when pause() returns the guest makes no progress
  // (devices finish requests already submitted). Pausing a paused VM does nothing; pausing
  // or resuming a VM that was not started or has stopped fails with ErrorKind::kState.
  Result<void> pause();
  Result<void> resume();
  bool paused() const;
  // Asks the guest to shut down and returns at once: presses the ACPI power button, then,
  // when the guest leaves the button unanswered for a second (no ACPI events), sends
  // Ctrl-Alt-Del through the keyboard controller. A guest still running after `timeout` is
  // stopped (kStopRequested, kExitStopped). A paused VM is resumed first. Asking again while
  // a shutdown is under way does nothing; a VM that was not started is an ErrorKind::kState.
  Result<void> shutdown(std::chrono::milliseconds timeout);

  // created (before start), running, paused, stopping (a shutdown is under way) or stopped.
  VmState state() const;
  // Every counter at one moment: vCPU exits, disks, NICs, the balloon (docs/api.md).
  VmStats stats() const;

  const VmSpec& spec() const;
  VmTimings timings() const;
  // Guest RAM actually mapped, in bytes.
  uint64_t guest_memory_bytes() const;

  // Balloon (spec "balloon"): asks the guest to hold `mib` MiB in its balloon. Fails when the
  // VM has no balloon or the target is not below the guest's RAM. The driver is told at
  // once when it runs, or reads the target when it starts.
  Result<void> set_balloon_target_mib(uint64_t mib);
  // nullopt when the VM has no balloon.
  std::optional<BalloonStatus> balloon() const;

  class Impl;

 private:
  explicit Vm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Maps an Error to the process exit code `skiff run` uses for it.
int exit_code_for(const Error& error);

// Gives up root for good once the VMs are created (Vm::create opens /dev/kvm, taps, disks
// and the API socket) and before any Vm is started: clears the supplementary groups, sets
// the real, effective and saved gid and uid, and checks that root cannot be regained.
// `uid` and `gid` must not be 0. It must run before any thread has a seccomp filter
// (glibc makes every thread repeat the change), so before the first Vm::start.
Result<void> drop_privileges(uint32_t uid, uint32_t gid);

}  // namespace skiff
