// SPDX-License-Identifier: Apache-2.0
// One thread per vCPU ("skiff-vcpuN") running KVM_RUN and dispatching exits to the port-I/O
// and MMIO buses. Stopping: stop() sets a flag, sets kvm_run.immediate_exit and sends the
// kick signal, so a vCPU in or about to enter KVM_RUN returns to user space promptly.
// Pausing uses the same kick; the thread then waits outside KVM_RUN until resumed (or
// stopped). Any exit being handled completes first, so a paused vCPU is never in the
// middle of an instruction the VMM is emulating.
#pragma once

#include <pthread.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bus/bus.h"
#include "kvm/kvm_vcpu.h"
#include "skiff/exit.h"
#include "skiff/vm.h"  // SeccompMode

namespace skiff {

// Exit counters of one vCPU, readable from any thread.
struct VcpuExitCounters {
  std::atomic<uint64_t> io{0};
  std::atomic<uint64_t> mmio{0};
  std::atomic<uint64_t> unhandled_io{0};  // accesses to ports/addresses with no device
  std::atomic<uint64_t> interrupted{0};   // EINTR / immediate exits
  std::atomic<uint64_t> other{0};
};

class VcpuRunner {
 public:
  // `host_cpus` pins the thread when not empty. The thread installs the vcpu seccomp filter
  // in `seccomp` mode before its first KVM_RUN (docs/security.md).
  VcpuRunner(KvmVcpu vcpu, const Bus& pio_bus, const Bus& mmio_bus, StopCallback stop,
             std::vector<uint32_t> host_cpus, SeccompMode seccomp = SeccompMode::off);
  ~VcpuRunner();
  VcpuRunner(const VcpuRunner&) = delete;
  VcpuRunner& operator=(const VcpuRunner&) = delete;

  // Installs the process-wide handler for the kick signal (idempotent).
  static void install_kick_handler();
  static int kick_signal();

  void start();
  // Asks the thread to leave KVM_RUN and end; returns at once.
  void stop();
  void join();
  // Asks the thread to leave KVM_RUN and wait; returns at once. wait_paused() waits until
  // it does (true), or the thread ended, or `timeout` passed (false).
  void pause();
  bool wait_paused(std::chrono::milliseconds timeout);
  void resume();

  uint32_t id() const { return vcpu_.id(); }
  const KvmVcpu& vcpu() const { return vcpu_; }
  const VcpuExitCounters& counters() const { return counters_; }

  // "rip=... rsp=... cr0=..." for error reports (call only while the vCPU is not running).
  static std::string describe_state(const KvmVcpu& vcpu);
  // The same text from registers already read. Registers in the architectural reset state
  // (CS:IP F000:FFF0, CR0 0x10) get a note: on AMD hosts KVM resets a vCPU on a triple-fault
  // (shutdown) intercept before userspace can read it, so the faulting state is gone.
  static std::string describe_state(const kvm_regs& regs, const kvm_sregs& sregs);

 private:
  void thread_main();
  // Handles one exit; returns false when the vCPU must stop.
  bool handle_exit();
  void handle_io();
  void handle_mmio();
  void report_crash(const std::string& what);
  // Between exits: waits while a pause is requested. Returns with immediate_exit cleared
  // unless a stop or another pause is pending.
  void pause_point();

  KvmVcpu vcpu_;
  const Bus& pio_bus_;
  const Bus& mmio_bus_;
  StopCallback stop_;
  std::vector<uint32_t> host_cpus_;
  SeccompMode seccomp_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> thread_started_{false};
  pthread_t native_handle_{};
  VcpuExitCounters counters_;

  std::mutex pause_mutex_;  // guards the pause state and immediate_exit against a lost kick
  std::condition_variable pause_changed_;
  bool pause_requested_ = false;
  bool paused_ = false;
  bool ended_ = false;
  std::atomic<bool> pause_pending_{false};  // pause_requested_, readable without the lock
};

}  // namespace skiff
