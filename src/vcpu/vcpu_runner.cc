// SPDX-License-Identifier: Apache-2.0
#include "vcpu/vcpu_runner.h"

#include <sched.h>
#include <signal.h>

#include <cstring>
#include <mutex>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/seccomp_filter.h"

namespace skiff {
namespace {

void kick_handler(int) {
  // Nothing to do: the signal's only job is to make KVM_RUN return EINTR.
}

const char* exit_reason_name(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_UNKNOWN: return "UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "EXCEPTION";
    case KVM_EXIT_IO: return "IO";
    case KVM_EXIT_HYPERCALL: return "HYPERCALL";
    case KVM_EXIT_DEBUG: return "DEBUG";
    case KVM_EXIT_HLT: return "HLT";
    case KVM_EXIT_MMIO: return "MMIO";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "IRQ_WINDOW_OPEN";
    case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
    case KVM_EXIT_INTR: return "INTR";
    case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "SYSTEM_EVENT";
    default: return "OTHER";
  }
}

}  // namespace

int VcpuRunner::kick_signal() { return SIGRTMIN; }

void VcpuRunner::install_kick_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_handler = kick_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(kick_signal(), &action, nullptr);
  });
}

VcpuRunner::VcpuRunner(KvmVcpu vcpu, const Bus& pio_bus, const Bus& mmio_bus, StopCallback stop,
                       std::vector<uint32_t> host_cpus, SeccompMode seccomp)
    : vcpu_(std::move(vcpu)),
      pio_bus_(pio_bus),
      mmio_bus_(mmio_bus),
      stop_(std::move(stop)),
      host_cpus_(std::move(host_cpus)),
      seccomp_(seccomp) {}

VcpuRunner::~VcpuRunner() {
  stop();
  join();
}

void VcpuRunner::start() {
  install_kick_handler();
  thread_ = std::thread([this] { thread_main(); });
}

void VcpuRunner::stop() {
  {
    std::lock_guard lock(pause_mutex_);
    stopping_.store(true, std::memory_order_release);
    // immediate_exit makes a KVM_RUN that has not started yet return at once; the signal
    // interrupts one already running.
    vcpu_.run_page()->immediate_exit = 1;
  }
  pause_changed_.notify_all();  // a paused thread ends
  if (thread_started_.load(std::memory_order_acquire) && thread_.joinable()) {
    pthread_kill(native_handle_, kick_signal());
  }
}

void VcpuRunner::pause() {
  {
    std::lock_guard lock(pause_mutex_);
    if (pause_requested_) return;
    pause_requested_ = true;
    pause_pending_.store(true, std::memory_order_release);
    vcpu_.run_page()->immediate_exit = 1;
  }
  if (thread_started_.load(std::memory_order_acquire) && thread_.joinable()) {
    pthread_kill(native_handle_, kick_signal());
  }
}

bool VcpuRunner::wait_paused(std::chrono::milliseconds timeout) {
  std::unique_lock lock(pause_mutex_);
  // A thread that never started (or ended) runs no guest code: that counts as paused.
  if (!thread_started_.load(std::memory_order_acquire)) return pause_requested_;
  return pause_changed_.wait_for(lock, timeout, [this] { return paused_ || ended_ || !pause_requested_; }) &&
         (paused_ || ended_);
}

void VcpuRunner::resume() {
  {
    std::lock_guard lock(pause_mutex_);
    pause_requested_ = false;
    pause_pending_.store(false, std::memory_order_release);
    // pause() set immediate_exit; a paused thread clears it when it leaves pause_point(),
    // but a thread that never reached the pause point (not started yet, or between KVM_RUN
    // and its pause check) would otherwise find it set forever and spin on EINTR. Under the
    // lock a later pause() or stop() sets it again.
    if (!paused_ && !stopping_.load(std::memory_order_acquire)) vcpu_.run_page()->immediate_exit = 0;
  }
  pause_changed_.notify_all();
}

void VcpuRunner::pause_point() {
  std::unique_lock lock(pause_mutex_);
  if (!pause_requested_) return;
  paused_ = true;
  pause_changed_.notify_all();
  pause_changed_.wait(lock, [this] { return !pause_requested_ || stopping_.load(std::memory_order_acquire); });
  paused_ = false;
  // Under the lock: a pause() or stop() that comes later sets immediate_exit again, so its
  // kick cannot be lost between here and the next KVM_RUN.
  if (!stopping_.load(std::memory_order_acquire)) vcpu_.run_page()->immediate_exit = 0;
  pause_changed_.notify_all();
}

void VcpuRunner::join() {
  if (thread_.joinable()) thread_.join();
}

void VcpuRunner::thread_main() {
  std::string name = fmt::format("skiff-vcpu{}", vcpu_.id());
  pthread_setname_np(pthread_self(), name.c_str());
  native_handle_ = pthread_self();
  thread_started_.store(true, std::memory_order_release);

  // The kick signal may be blocked in the thread that created us (embedders often block
  // signals); vCPU threads must receive it.
  sigset_t kick;
  sigemptyset(&kick);
  sigaddset(&kick, kick_signal());
  pthread_sigmask(SIG_UNBLOCK, &kick, nullptr);

  if (!host_cpus_.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (uint32_t cpu : host_cpus_) CPU_SET(cpu, &set);
    if (int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set); err != 0) {
      stop_(VmExit{StopReason::kVmmError, kExitHost,
                   fmt::format("machine.vcpu_affinity[{}]: cannot pin {} to host CPUs: {}",
                               vcpu_.id(), name, std::strerror(err))});
      return;
    }
  }
  // After the pinning (sched_setaffinity is not in the vcpu table) and before the guest's
  // first instruction.
  if (auto filtered = security::install_thread_filter(security::ThreadKind::vcpu, seccomp_); !filtered) {
    stop_(VmExit{StopReason::kVmmError, kExitVmm, filtered.error().with_context(name).message()});
    return;
  }

  struct EndMark {  // wakes wait_paused() callers however the thread ends
    VcpuRunner& runner;
    ~EndMark() {
      {
        std::lock_guard lock(runner.pause_mutex_);
        runner.ended_ = true;
      }
      runner.pause_changed_.notify_all();
    }
  } end_mark{*this};

  while (!stopping_.load(std::memory_order_acquire)) {
    if (pause_pending_.load(std::memory_order_acquire)) {
      pause_point();
      continue;  // the loop condition sees a stop that came while paused
    }
    auto ran = vcpu_.run();
    if (!ran) {
      stop_(VmExit{StopReason::kVmmError, kExitVmm, ran.error().message()});
      return;
    }
    if (!*ran) {
      counters_.interrupted.fetch_add(1, std::memory_order_relaxed);
      continue;  // kicked: the loop condition decides
    }
    if (!handle_exit()) return;
  }
}

bool VcpuRunner::handle_exit() {
  kvm_run* run = vcpu_.run_page();
  switch (run->exit_reason) {
    case KVM_EXIT_IO:
      counters_.io.fetch_add(1, std::memory_order_relaxed);
      handle_io();
      return true;
    case KVM_EXIT_MMIO:
      counters_.mmio.fetch_add(1, std::memory_order_relaxed);
      handle_mmio();
      return true;
    case KVM_EXIT_INTR:
      counters_.interrupted.fetch_add(1, std::memory_order_relaxed);
      return true;
    case KVM_EXIT_HLT:
      // With the in-kernel LAPIC, HLT is handled by KVM; this only happens if the guest
      // halts with no way to wake up.
      counters_.other.fetch_add(1, std::memory_order_relaxed);
      report_crash("guest halted with interrupts disabled (KVM_EXIT_HLT)");
      return false;
    case KVM_EXIT_SHUTDOWN:
      // A triple fault: the x86 way of resetting, but never what a healthy guest does when
      // it has the i8042 and the ACPI reset register available.
      report_crash("triple fault (KVM_EXIT_SHUTDOWN)");
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN:
          stop_(VmExit{StopReason::kGuestPowerOff, kExitOk, "guest powered off"});
          return false;
        case KVM_SYSTEM_EVENT_RESET:
          stop_(VmExit{StopReason::kGuestReboot, kExitOk, "guest reset"});
          return false;
        default:
          report_crash(fmt::format("guest crash (KVM system event {})", run->system_event.type));
          return false;
      }
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string data;
      for (uint32_t i = 0; i < run->internal.ndata && i < 16; ++i) {
        data += fmt::format(" {:#x}", run->internal.data[i]);
      }
      const char* what = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                             ? " (instruction emulation failed)"
                             : "";
      report_crash(fmt::format("KVM internal error, suberror {}{}{}{}", run->internal.suberror, what,
                               data.empty() ? "" : ", data:", data));
      return false;
    }
    case KVM_EXIT_FAIL_ENTRY:
      report_crash(fmt::format("VM entry failed, hardware reason {:#x} on host CPU {}",
                               run->fail_entry.hardware_entry_failure_reason, run->fail_entry.cpu));
      return false;
    default:
      counters_.other.fetch_add(1, std::memory_order_relaxed);
      stop_(VmExit{StopReason::kVmmError, kExitVmm,
                   fmt::format("vCPU {}: unhandled KVM exit {} ({})", vcpu_.id(), run->exit_reason,
                               exit_reason_name(run->exit_reason))});
      return false;
  }
}

void VcpuRunner::handle_io() {
  kvm_run* run = vcpu_.run_page();
  const uint16_t port = run->io.port;
  const uint32_t size = run->io.size;
  // SAFETY: KVM puts count * size bytes of data at data_offset inside the kvm_run mapping.
  uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  for (uint32_t i = 0; i < run->io.count; ++i) {
    std::span<uint8_t> chunk(data + static_cast<size_t>(i) * size, size);
    if (run->io.direction == KVM_EXIT_IO_OUT) {
      if (!pio_bus_.write(port, chunk)) counters_.unhandled_io.fetch_add(1, std::memory_order_relaxed);
    } else if (!pio_bus_.read(port, chunk)) {
      std::memset(chunk.data(), 0xff, chunk.size());  // an empty ISA bus floats high
      counters_.unhandled_io.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void VcpuRunner::handle_mmio() {
  kvm_run* run = vcpu_.run_page();
  uint32_t len = std::min<uint32_t>(run->mmio.len, sizeof(run->mmio.data));
  std::span<uint8_t> data(run->mmio.data, len);
  if (run->mmio.is_write) {
    if (!mmio_bus_.write(run->mmio.phys_addr, data)) {
      counters_.unhandled_io.fetch_add(1, std::memory_order_relaxed);
    }
  } else if (!mmio_bus_.read(run->mmio.phys_addr, data)) {
    std::memset(data.data(), 0xff, data.size());
    counters_.unhandled_io.fetch_add(1, std::memory_order_relaxed);
  }
}

void VcpuRunner::report_crash(const std::string& what) {
  stop_(VmExit{StopReason::kGuestCrash, kExitGuestCrash,
               fmt::format("vCPU {}: {}; {}", vcpu_.id(), what, describe_state(vcpu_))});
}

std::string VcpuRunner::describe_state(const KvmVcpu& vcpu) {
  auto regs = vcpu.get_regs();
  auto sregs = vcpu.get_sregs();
  if (!regs || !sregs) return "registers unavailable";
  return describe_state(*regs, *sregs);
}

std::string VcpuRunner::describe_state(const kvm_regs& regs, const kvm_sregs& sregs) {
  const bool reset_state =
      regs.rip == 0xfff0 && sregs.cs.selector == 0xf000 && sregs.cr0 == 0x10 && sregs.efer == 0;
  return fmt::format(
      "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} "
      "rdi={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}(l={} db={}){}",
      regs.rip, regs.rsp, regs.rflags, regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi,
      sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer, sregs.cs.selector, sregs.cs.l,
      sregs.cs.db,
      reset_state ? " (the reset state: on AMD hosts KVM resets the vCPU on a triple fault before "
                    "skiff can read it, so the faulting registers are lost; the console shows "
                    "what the guest did last)"
                  : "");
}

}  // namespace skiff
