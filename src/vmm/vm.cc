// SPDX-License-Identifier: Apache-2.0
// Builds and runs one VM. Creation order: KVM VM and in-kernel chips, guest RAM and its
// memslots, legacy devices on the buses, firmware tables (MP, ACPI), the kernel and its
// boot structures, then the vCPUs. Threads: one per vCPU, the console input thread when
// interactive, and the caller's thread in wait().
//
// Lock order: Impl::mutex_ is a leaf lock; device callbacks (request_stop) take it from
// vCPU threads while holding their own device lock, so nothing here may call into a
// device while holding it.
#include "skiff/vm.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "arch/x86_64/acpi/acpi_tables.h"
#include "arch/x86_64/boot/boot_loader.h"
#include "arch/x86_64/boot/cpu_boot_state.h"
#include "arch/x86_64/cpuid.h"
#include "arch/x86_64/irq_routing.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/mptable.h"
#include "arch/x86_64/vcpu_setup.h"
#include "bus/bus.h"
#include "common/mapped_file.h"
#include "common/unique_fd.h"
#include "devices/legacy/acpi_pm.h"
#include "devices/legacy/cmos_rtc.h"
#include "devices/legacy/console_input.h"
#include "devices/legacy/debug_exit.h"
#include "devices/legacy/pvpanic.h"
#include "devices/legacy/i8042.h"
#include "devices/legacy/serial.h"
#include "kvm/kvm_system.h"
#include "memory/guest_memory.h"
#include "security/filtered_thread.h"
#include "security/privileges.h"
#include "vcpu/vcpu_runner.h"
#include "api/api_backend.h"
#include "api/api_server.h"
#include "interrupts/kvm_irq_line.h"
#include "virtio/balloon/virtio_balloon.h"
#include "vmm/balloon_status.h"
#include "vmm/device_manager.h"
#include "vmm/device_registry.h"
#include "vmm/kernel_panic_watch.h"
#include "vmm/stats_convert.h"

namespace skiff {

const char* to_string(StopReason reason) {
  switch (reason) {
    case StopReason::kGuestPowerOff: return "guest-poweroff";
    case StopReason::kGuestReboot: return "guest-reboot";
    case StopReason::kDebugExit: return "debug-exit";
    case StopReason::kGuestCrash: return "guest-crash";
    case StopReason::kVmmError: return "vmm-error";
    case StopReason::kStopRequested: return "stop-requested";
    case StopReason::kGuestPanic: return "guest-panic";
    case StopReason::kTimeout: return "timeout";
    case StopReason::kConsoleFailure: return "console-failure";
  }
  return "unknown";
}

Result<void> drop_privileges(uint32_t uid, uint32_t gid) { return security::drop_privileges(uid, gid); }

int exit_code_for(const Error& error) {
  switch (error.kind()) {
    case ErrorKind::kConfig: return kExitConfig;
    case ErrorKind::kHost: return kExitHost;
    case ErrorKind::kGuest: return kExitGuestCrash;
    case ErrorKind::kInternal: return kExitVmm;
    case ErrorKind::kState: return kExitState;
  }
  return kExitVmm;
}

namespace {

// Swallows writes to ports guests poke for timing only (port 0x80, the POST/delay port
// Linux's io_delay uses), so they don't count as unhandled accesses.
class SinkDevice : public BusDevice {
 public:
  void read(uint64_t, std::span<uint8_t> data) override { std::fill(data.begin(), data.end(), 0xff); }
  void write(uint64_t, std::span<const uint8_t>) override {}
};

constexpr uint16_t kPostDelayPort = 0x80;

MemoryOptions memory_options(const MachineSpec& machine) {
  MemoryOptions options;
  switch (machine.hugepages) {
    case HugePages::kNone: break;
    case HugePages::kTransparent: options.transparent_hugepages = true; break;
    case HugePages::k2M: options.backing = MemoryBacking::kHugetlb2M; break;
    case HugePages::k1G: options.backing = MemoryBacking::kHugetlb1G; break;
  }
  if (options.backing == MemoryBacking::kAnonymous && machine.shared_memory) {
    options.backing = MemoryBacking::kMemfd;
  }
  options.prefault = machine.prefault;
  options.lock = machine.lock_memory;
  options.numa_node = machine.numa_node;
  return options;
}

}  // namespace

namespace {
class VmApiBackend;
}  // namespace

class Vm::Impl {
 public:
  Impl(VmSpec spec, VmOptions options, KvmSystem kvm, KvmVm vm)
      : spec_(std::move(spec)), options_(std::move(options)), kvm_(std::move(kvm)), vm_(std::move(vm)) {
    timings_.created = std::chrono::steady_clock::now();
  }

  ~Impl() {
    // The API first: its requests reach into everything below.
    api_server_.reset();
    request_stop(VmExit{StopReason::kStopRequested, kExitStopped, "the Vm object was destroyed"});
    stop_all_runners();
    join_all();
    // Device threads stop before guest memory is unmapped.
    if (devices_) devices_->reset_all();
  }

  Result<void> build();
  Result<void> start();
  VmExit wait();
  std::optional<VmExit> wait_for(std::chrono::milliseconds timeout);
  void request_stop(VmExit exit);

  const VmSpec& spec() const { return spec_; }
  VmTimings timings() const {
    std::lock_guard lock(mutex_);
    return timings_;
  }
  uint64_t guest_memory_bytes() const { return memory_.total_size(); }
  Result<void> set_balloon_target_mib(uint64_t mib);
  std::optional<BalloonStatus> balloon() const;
  Result<void> pause();
  Result<void> resume();
  Result<void> shutdown(std::chrono::milliseconds timeout);
  bool paused() const {
    std::lock_guard lock(mutex_);
    return paused_;
  }
  VmState state() const;
  VmStats stats() const;
  // Seconds since start() (to the stop once stopped); 0 before start().
  double uptime_s() const;

 private:
  // The shutdown timer thread: Ctrl-Alt-Del when the power button went unanswered, then a
  // hard stop when the guest is still running at the deadline.
  void shutdown_timer(std::chrono::steady_clock::time_point deadline);
  Result<void> setup_memory();
  Result<void> setup_devices();
  // The virtio devices the spec asks for, through the device registry: the PCI root,
  // every device attached, then PCI0 in ACPI.
  Result<void> setup_virtio_devices();
  std::string kernel_cmdline() const;
  Result<Serial::OutputSink> console_sink();
  Result<x86::BootPlan> load_boot_images(uint64_t rsdp_addr);
  Result<void> create_vcpus(const x86::BootPlan& plan);
  StopCallback stopper() {
    return [this](VmExit exit) { request_stop(std::move(exit)); };
  }
  void stop_all_runners();
  void join_all();
  // Syncs every disk once the vCPUs are gone (cache=none/writeback); a failure turns a clean
  // exit into kVmmError.
  void flush_disks();

  VmSpec spec_;
  VmOptions options_;
  KvmSystem kvm_;
  KvmVm vm_;
  GuestMemory memory_;
  Bus pio_bus_{"port I/O"};
  Bus mmio_bus_{"MMIO"};
  UniqueFd serial_file_;
  std::shared_ptr<Serial> serial_;
  std::shared_ptr<I8042> i8042_;           // Ctrl-Alt-Del for shutdown()
  std::shared_ptr<AcpiPmDevice> acpi_pm_;  // the power button for shutdown()
  std::unique_ptr<ConsoleInput> console_input_;
  bool disks_flushed_ = false;  // guarded by mutex_
  x86::AcpiPlatform acpi_platform_;
  std::vector<std::string> cmdline_additions_;

  mutable std::mutex mutex_;
  std::condition_variable stopped_cv_;
  std::optional<VmExit> exit_;
  bool started_ = false;
  bool joined_ = false;
  bool paused_ = false;
  bool shutdown_requested_ = false;
  std::thread shutdown_thread_;
  VmTimings timings_;
  std::atomic<bool> first_output_seen_{false};
  // The kernel panic banner on the console means kGuestPanic (docs/exit-codes.md).
  KernelPanicWatch panic_watch_;

  // Last: runners reference the buses and must go first.
  std::vector<std::unique_ptr<VcpuRunner>> runners_;
  // The control API (spec "api"), served from when the VM is built until it is destroyed.
  std::unique_ptr<VmApiBackend> api_backend_;
  std::unique_ptr<api::ApiServer> api_server_;
  // Runs virtio activate()/reset() for the vCPUs (vmm/device_manager.h); started by start().
  std::shared_ptr<DeviceManagerThread> device_manager_ = std::make_shared<DeviceManagerThread>();
  // Every virtio device, attached by build(); the list stats, flush and teardown walk.
  std::unique_ptr<DeviceRegistry> devices_;

  friend class VmApiBackend;
  Result<void> start_api();
};

namespace {

// The Vm as the API server sees it (src/api/api_backend.h).
class VmApiBackend final : public api::ApiBackend {
 public:
  explicit VmApiBackend(Vm::Impl& vm) : vm_(vm) {}
  VmState state() const override { return vm_.state(); }
  VmSpec spec() const override { return vm_.spec(); }
  double uptime_s() const override { return vm_.uptime_s(); }
  Result<void> pause() override { return vm_.pause(); }
  Result<void> resume() override { return vm_.resume(); }
  Result<void> shutdown(std::chrono::milliseconds timeout) override { return vm_.shutdown(timeout); }
  Result<void> stop() override {
    if (vm_.state() == VmState::created) return state_error("cannot stop: the VM has not been started");
    vm_.request_stop(VmExit{StopReason::kStopRequested, kExitStopped, "stopped through the API"});
    return {};
  }
  VmStats stats() const override { return vm_.stats(); }
  Result<void> set_balloon_target_mib(uint64_t mib) override { return vm_.set_balloon_target_mib(mib); }

 private:
  Vm::Impl& vm_;
};

}  // namespace

Result<void> Vm::Impl::start_api() {
  api_backend_ = std::make_unique<VmApiBackend>(*this);
  // The socket exists from now on (a path in use fails Vm::create); requests are served
  // from start(), once the VM runs and after an embedder dropped its privileges.
  api::ApiServerOptions api_options;
  api_options.seccomp = options_.seccomp;
  auto server = api::ApiServer::listen(spec_.api->socket, *api_backend_, api_options);
  if (!server) return std::unexpected(server.error().with_context("/api/socket"));
  api_server_ = std::move(*server);
  return {};
}

Result<void> Vm::Impl::setup_memory() {
  const uint64_t bytes = spec_.machine.memory_mib * x86::kMiB;
  auto ranges = split_ram_around_hole(bytes, x86::kMmioHoleStart, x86::kMmioHoleEnd);
  auto memory = GuestMemory::create(ranges, memory_options(spec_.machine));
  if (!memory) return std::unexpected(memory.error());
  memory_ = std::move(*memory);
  uint32_t slot = 0;
  for (const GuestRegion& region : memory_.regions()) {
    if (auto r = vm_.set_user_memory_region(slot++, region.gpa, region.size, region.host); !r) return r;
  }
  return {};
}

Result<Serial::OutputSink> Vm::Impl::console_sink() {
  Serial::OutputSink base;
  if (options_.console_output) {
    base = options_.console_output;
  } else {
    switch (spec_.serial.mode) {
      case SerialMode::kStdout:
        base = Serial::fd_output_sink(STDOUT_FILENO);
        break;
      case SerialMode::kFile: {
        int fd = ::open(spec_.serial.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
          int err = errno;
          return std::unexpected(
              Error(ErrorKind::kConfig,
                    fmt::format("serial.path \"{}\": {}", spec_.serial.path.string(), std::strerror(err)), err));
        }
        serial_file_.reset(fd);
        base = Serial::fd_output_sink(fd);
        break;
      }
      case SerialMode::kNone:
        break;
    }
  }
  // Record when the guest first speaks, for boot-time reports.
  return [this, base = std::move(base)](std::span<const uint8_t> bytes) {
    if (!first_output_seen_.exchange(true, std::memory_order_relaxed)) {
      std::lock_guard lock(mutex_);
      timings_.first_console_output = std::chrono::steady_clock::now();
    }
    if (base) base(bytes);
    if (auto panic = panic_watch_.feed(bytes)) request_stop(std::move(*panic));
  };
}

Result<void> Vm::Impl::setup_devices() {
  auto sink = console_sink();
  if (!sink) return std::unexpected(sink.error());
  serial_ = std::make_shared<Serial>(std::make_shared<KvmIrqLine>(vm_, x86::kSerialCom1Irq),
                                     std::move(*sink));
  i8042_ = std::make_shared<I8042>(std::make_shared<KvmIrqLine>(vm_, x86::kI8042KeyboardIrq), stopper());
  acpi_pm_ = std::make_shared<AcpiPmDevice>(stopper(), std::make_shared<KvmIrqLine>(vm_, x86::kAcpiSciIrq));

  struct Mapping {
    std::shared_ptr<BusDevice> device;
    uint64_t base;
    uint64_t size;
    const char* label;
  };
  const Mapping mappings[] = {
      {serial_, x86::kSerialCom1Port, x86::kSerialPortSize, "serial COM1"},
      {std::make_shared<I8042PortDevice>(i8042_, I8042::Port::kData), x86::kI8042DataPort, 1, "i8042 data"},
      {std::make_shared<I8042PortDevice>(i8042_, I8042::Port::kCommand), x86::kI8042CommandPort, 1, "i8042 command"},
      {std::make_shared<CmosRtc>(), x86::kCmosPort, x86::kCmosPortSize, "CMOS RTC"},
      {std::make_shared<DebugExit>(stopper()), x86::kDebugExitPort, x86::kDebugExitPortSize, "debug exit"},
      {acpi_pm_, x86::kAcpiPm1EventPort, kAcpiPmDeviceSize, "ACPI PM1"},
      {std::make_shared<AcpiResetDevice>(stopper()), x86::kAcpiResetPort, kAcpiResetRegisterSize, "ACPI reset"},
      {std::make_shared<SinkDevice>(), kPostDelayPort, 1, "POST delay port"},
      {std::make_shared<Pvpanic>(stopper()), kPvpanicPort, kPvpanicPortSize, "pvpanic"},
  };
  for (const Mapping& m : mappings) {
    if (auto r = pio_bus_.insert(m.device, m.base, m.size, m.label); !r) return r;
  }
  auto pvpanic = pvpanic_acpi_device().to_aml();
  if (!pvpanic) return std::unexpected(pvpanic.error());
  acpi_platform_.dsdt_devices.push_back(std::move(*pvpanic));
  return {};
}

Result<void> Vm::Impl::setup_virtio_devices() {
  devices_ = std::make_unique<DeviceRegistry>(DeviceRegistry::Context{
      .vm = vm_,
      .memory = memory_,
      .pio_bus = pio_bus_,
      .mmio_bus = mmio_bus_,
      .acpi = acpi_platform_,
      .cmdline_additions = cmdline_additions_,
      .call_runner = device_manager_,
      .seccomp = options_.seccomp,
      .mmio_cmdline = spec_.machine.mmio_cmdline,
  });
  if (auto r = devices_->setup_pci(memory_.regions().back().end()); !r) return r;
  if (auto r = devices_->attach_from_spec(spec_); !r) return r;
  return devices_->finish_pci();
}

// The balloon is the first (and only) device of its kind; the spec allows one.
Result<void> Vm::Impl::set_balloon_target_mib(uint64_t mib) {
  const AttachedDevice* balloon = devices_ ? devices_->find("virtio-balloon") : nullptr;
  if (!balloon) return config_error("this VM has no balloon: add \"balloon\": {} to its spec");
  return static_cast<virtio::balloon::VirtioBalloon&>(balloon->device()).set_target_mib(mib);
}

std::optional<BalloonStatus> Vm::Impl::balloon() const {
  const AttachedDevice* balloon = devices_ ? devices_->find("virtio-balloon") : nullptr;
  if (!balloon) return std::nullopt;
  return balloon_status(static_cast<const virtio::balloon::VirtioBalloon&>(balloon->device()));
}

std::string Vm::Impl::kernel_cmdline() const {
  std::string cmdline = spec_.boot.cmdline;
  for (const std::string& addition : cmdline_additions_) {
    if (!cmdline.empty()) cmdline += ' ';
    cmdline += addition;
  }
  return cmdline;
}

Result<x86::BootPlan> Vm::Impl::load_boot_images(uint64_t rsdp_addr) {
  auto kernel = MappedFile::open(spec_.boot.kernel, "boot.kernel");
  if (!kernel) return std::unexpected(kernel.error());
  MappedFile initrd;
  if (!spec_.boot.initrd.empty()) {
    auto mapped = MappedFile::open(spec_.boot.initrd, "boot.initrd");
    if (!mapped) return std::unexpected(mapped.error());
    initrd = std::move(*mapped);
  }
  auto plan = x86::load_kernel(memory_, kernel->bytes(), initrd.bytes(), kernel_cmdline(), rsdp_addr);
  if (!plan) {
    return std::unexpected(plan.error().with_context(fmt::format("boot.kernel \"{}\"", spec_.boot.kernel.string())));
  }
  if (auto r = x86::write_boot_page_tables(memory_); !r) return std::unexpected(r.error());
  if (auto r = x86::write_boot_gdt(memory_); !r) return std::unexpected(r.error());
  return plan;
}

Result<void> Vm::Impl::create_vcpus(const x86::BootPlan& plan) {
  auto supported_cpuid = kvm_.supported_cpuid();
  if (!supported_cpuid) return std::unexpected(supported_cpuid.error());
  auto msr_list = kvm_.msr_index_list();
  if (!msr_list) return std::unexpected(msr_list.error());

  for (uint32_t index = 0; index < spec_.machine.vcpus; ++index) {
    auto vcpu = vm_.create_vcpu(index);
    if (!vcpu) return std::unexpected(vcpu.error());
    auto cpuid = x86::build_vcpu_cpuid(*supported_cpuid, index, spec_.machine.vcpus);
    if (auto r = x86::configure_vcpu(*vcpu, cpuid, *msr_list); !r) return r;
    if (index == 0) {
      // The boot vCPU starts at the kernel's entry; the others wait for INIT/SIPI from
      // the guest (their in-kernel LAPIC holds them until then).
      auto regs = vcpu->get_regs();
      auto sregs = vcpu->get_sregs();
      if (!regs) return std::unexpected(regs.error());
      if (!sregs) return std::unexpected(sregs.error());
      x86::setup_boot_registers(plan, &*regs, &*sregs);
      if (auto r = vcpu->set_sregs(*sregs); !r) return r;
      if (auto r = vcpu->set_regs(*regs); !r) return r;
    }
    std::vector<uint32_t> host_cpus;
    if (!spec_.machine.vcpu_affinity.empty()) host_cpus = spec_.machine.vcpu_affinity[index];
    runners_.push_back(std::make_unique<VcpuRunner>(std::move(*vcpu), pio_bus_, mmio_bus_, stopper(),
                                                    std::move(host_cpus), options_.seccomp));
  }
  return {};
}

Result<void> Vm::Impl::build() {
  // Memslots go in before the in-kernel irqchip: KVM_SET_USER_MEMORY_REGION costs 4-10 ms
  // after KVM_CREATE_IRQCHIP on our hosts and well under 1 ms before it (docs/benchmarks.md).
  if (auto r = setup_memory(); !r) return r;
  if (auto r = vm_.set_tss_address(x86::kKvmTssAddr); !r) return r;
  if (auto r = vm_.set_identity_map_address(x86::kKvmIdentityMapAddr); !r) return r;
  if (auto r = vm_.create_irqchip(); !r) return r;
  if (auto r = vm_.create_pit2(); !r) return r;
  // Routes that agree with the MADT and MP table (PIT on IOAPIC pin 2); see irq_routing.h.
  if (auto r = vm_.set_gsi_routing(x86::pc_gsi_routes()); !r) return r;
  if (auto r = setup_devices(); !r) return r;
  if (auto r = setup_virtio_devices(); !r) return r;

  // The MP table lives in the 1 KiB EBDA and holds at most mp_table_max_vcpus() processors.
  // Beyond that only the ACPI MADT describes the vCPUs; every kernel that can use so many
  // parses ACPI.
  std::vector<x86::MpPciInterrupt> mp_pci;
  for (const pci::PciIntxRoute& route : devices_->pci_intx_routes()) {
    mp_pci.push_back({.slot = route.slot, .pin = route.pin, .ioapic_pin = static_cast<uint8_t>(route.gsi)});
  }
  if (spec_.machine.vcpus <= x86::mp_table_max_vcpus(mp_pci.size())) {
    if (auto r = x86::write_mp_table(memory_, spec_.machine.vcpus, mp_pci); !r) return r;
  } else {
    spdlog::debug("{} vCPUs do not fit in the MP table; describing them in ACPI only", spec_.machine.vcpus);
  }
  acpi_platform_.vcpus = spec_.machine.vcpus;
  auto rsdp = x86::write_acpi_tables(memory_, acpi_platform_);
  if (!rsdp) return std::unexpected(rsdp.error());

  auto plan = load_boot_images(*rsdp);
  if (!plan) return std::unexpected(plan.error());
  spdlog::debug("kernel {}: entry {:#x}, boot structure at {:#x}, initrd {:#x}+{:#x}",
                plan->pvh_entry ? "PVH" : "64-bit boot protocol", plan->entry,
                plan->boot_params_addr, plan->initrd_addr, plan->initrd_size);
  if (auto r = create_vcpus(*plan); !r) return r;
  if (spec_.api) return start_api();
  return {};
}

Result<void> Vm::Impl::start() {
  {
    std::lock_guard lock(mutex_);
    if (started_) return internal_error("the VM was already started");
    started_ = true;
    timings_.started = std::chrono::steady_clock::now();
  }
  if (!options_.console_output && spec_.serial.mode == SerialMode::kStdout && spec_.serial.input) {
    auto input = ConsoleInput::start(STDIN_FILENO, serial_, stopper(), options_.seccomp);
    if (!input) {
      spdlog::warn("console input disabled: {}", input.error().message());
    } else {
      console_input_ = std::move(*input);
    }
  }
  if (api_server_) {
    if (auto served = api_server_->serve(); !served) return std::unexpected(served.error().with_context("/api/socket"));
  }
  if (auto managed = device_manager_->start(options_.seccomp); !managed) return managed;
  for (auto& runner : runners_) runner->start();
  // A stop requested before the threads existed (e.g. from the console) must still reach them.
  std::lock_guard lock(mutex_);
  if (exit_) {
    for (auto& runner : runners_) runner->stop();
  }
  return {};
}

void Vm::Impl::request_stop(VmExit exit) {
  std::lock_guard lock(mutex_);
  if (exit_) return;  // the first reason wins
  if (auto panic = panic_watch_.reclassify(exit)) exit = std::move(*panic);
  exit_ = std::move(exit);
  timings_.stopped = std::chrono::steady_clock::now();
  if (started_) {
    for (auto& runner : runners_) runner->stop();
  }
  stopped_cv_.notify_all();
}

Result<void> Vm::Impl::pause() {
  {
    std::lock_guard lock(mutex_);
    if (!started_) return state_error("cannot pause: the VM has not been started");
    if (exit_) return state_error("cannot pause: the VM has stopped");
    if (paused_) return {};
    paused_ = true;
  }
  for (auto& runner : runners_) runner->pause();
  // Every vCPU is out of KVM_RUN when pause() returns: the guest makes no progress after.
  for (auto& runner : runners_) {
    if (!runner->wait_paused(std::chrono::seconds(5))) {
      std::lock_guard lock(mutex_);
      if (exit_) return state_error("cannot pause: the VM stopped");
      return internal_error(fmt::format("vCPU {} did not pause within 5 s", runner->id()));
    }
  }
  return {};
}

Result<void> Vm::Impl::resume() {
  {
    std::lock_guard lock(mutex_);
    if (!started_) return state_error("cannot resume: the VM has not been started");
    if (exit_) return state_error("cannot resume: the VM has stopped");
    if (!paused_) return {};
    paused_ = false;
  }
  for (auto& runner : runners_) runner->resume();
  return {};
}

Result<void> Vm::Impl::shutdown(std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(mutex_);
    if (!started_) return state_error("cannot shut down: the VM has not been started");
    if (exit_ || shutdown_requested_) return {};  // stopped, or a shutdown is under way
    shutdown_requested_ = true;
  }
  // A paused guest cannot act on the request.
  if (auto resumed = resume(); !resumed) return resumed;
  spdlog::info("shutting the guest down: ACPI power button, hard stop after {:.1f} s", timeout.count() / 1000.0);
  acpi_pm_->raise_status(kPm1PowerButtonStatus);
  std::lock_guard lock(mutex_);
  auto timer = security::start_filtered_thread(
      "skiff-shutdown", security::ThreadKind::shutdown_timer, options_.seccomp,
      [this, deadline = std::chrono::steady_clock::now() + timeout] { shutdown_timer(deadline); });
  if (!timer) return std::unexpected(timer.error());
  shutdown_thread_ = std::move(*timer);
  return {};
}

void Vm::Impl::shutdown_timer(std::chrono::steady_clock::time_point deadline) {
  // An ACPI OS clears the power button status in its SCI handler; a guest without ACPI
  // events (or one that never enabled them) leaves it set. Such a guest gets Ctrl-Alt-Del.
  constexpr auto kButtonGrace = std::chrono::seconds(1);
  std::unique_lock lock(mutex_);
  if (stopped_cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + kButtonGrace),
                             [&] { return exit_.has_value(); })) {
    return;
  }
  lock.unlock();
  if ((acpi_pm_->pending_status() & kPm1PowerButtonStatus) != 0) {
    bool pressed = i8042_->press_ctrl_alt_del();
    spdlog::info("the guest did not take the ACPI power button; {}",
                 pressed ? "sent Ctrl-Alt-Del" : "its keyboard is disabled, no Ctrl-Alt-Del either");
  }
  lock.lock();
  if (stopped_cv_.wait_until(lock, deadline, [&] { return exit_.has_value(); })) return;
  lock.unlock();
  request_stop(VmExit{StopReason::kStopRequested, kExitStopped, "the guest did not shut down in time: stopped"});
}

VmState Vm::Impl::state() const {
  std::lock_guard lock(mutex_);
  if (!started_) return exit_ ? VmState::stopped : VmState::created;
  if (exit_) return VmState::stopped;
  if (shutdown_requested_) return VmState::stopping;
  return paused_ ? VmState::paused : VmState::running;
}

double Vm::Impl::uptime_s() const {
  std::lock_guard lock(mutex_);
  if (!timings_.started) return 0;
  const auto end = timings_.stopped.value_or(std::chrono::steady_clock::now());
  return std::chrono::duration<double>(end - *timings_.started).count();
}

VmStats Vm::Impl::stats() const {
  VmStats out;
  out.state = state();
  out.uptime_s = uptime_s();
  for (const auto& runner : runners_) out.vcpus.push_back(to_vcpu_stats(runner->id(), runner->counters()));
  if (devices_) devices_->collect_stats(out);
  return out;
}

void Vm::Impl::stop_all_runners() {
  for (auto& runner : runners_) runner->stop();
}

void Vm::Impl::join_all() {
  for (auto& runner : runners_) runner->join();
  // No vCPU is left to activate or reset a device; teardown resets run on this thread.
  device_manager_->stop();
  {
    std::unique_lock lock(mutex_);
    if (shutdown_thread_.joinable()) {
      // It ends as soon as exit_ is set, which it is whenever the runners have ended.
      std::thread timer = std::move(shutdown_thread_);
      lock.unlock();
      timer.join();
    }
  }
  if (console_input_) console_input_->shutdown();
  flush_disks();
}

void Vm::Impl::flush_disks() {
  {
    std::lock_guard lock(mutex_);
    if (disks_flushed_) return;
    disks_flushed_ = true;
  }
  if (!devices_) return;
  // The vCPUs are stopped: a device that holds what the guest wrote (a disk's engine)
  // makes it durable before wait() reports the VM gone, whether or not the guest flushed.
  for (const std::string& failure : devices_->flush_all()) {
    spdlog::error("{}", failure);
    std::lock_guard lock(mutex_);
    if (!exit_ || exit_->exit_code == kExitOk) {
      exit_ = VmExit{StopReason::kVmmError, kExitVmm, fmt::format("{}: data may be lost", failure)};
    }
  }
}

VmExit Vm::Impl::wait() {
  {
    std::unique_lock lock(mutex_);
    if (!started_) return VmExit{StopReason::kVmmError, kExitVmm, "wait() on a VM that was never started"};
    stopped_cv_.wait(lock, [&] { return exit_.has_value(); });
  }
  join_all();
  std::lock_guard lock(mutex_);
  return *exit_;
}

std::optional<VmExit> Vm::Impl::wait_for(std::chrono::milliseconds timeout) {
  {
    std::unique_lock lock(mutex_);
    if (!stopped_cv_.wait_for(lock, timeout, [&] { return exit_.has_value(); })) return std::nullopt;
  }
  return wait();
}

// ---- Vm ----------------------------------------------------------------------------------

Result<std::unique_ptr<Vm>> Vm::create(const VmSpec& spec, VmOptions options) {
  // The once-per-process part of seccomp (libc's lazy state, libseccomp's kernel probing,
  // the SIGSYS handler) runs beside the VM's construction instead of in the first filtered
  // thread, which is on the way to the first KVM_RUN. Joined on every return.
  std::jthread prepare_filters;
  if (options.seccomp != SeccompMode::off) {
    prepare_filters = std::jthread([mode = options.seccomp] { security::prepare_thread_filters(mode); });
  }
  if (auto valid = validate_spec(spec); !valid) return std::unexpected(valid.error());
  auto kvm = KvmSystem::open(options.kvm_path);
  if (!kvm) return std::unexpected(kvm.error());
  if (auto caps = kvm->check_required_capabilities(); !caps) return std::unexpected(caps.error());
  if (static_cast<int>(spec.machine.vcpus) > kvm->max_vcpus()) {
    return config_error(fmt::format("machine.vcpus: {} vCPUs requested but this host's KVM allows at most {}",
                                    spec.machine.vcpus, kvm->max_vcpus()));
  }
  auto kvm_vm = kvm->create_vm();
  if (!kvm_vm) return std::unexpected(kvm_vm.error());
  kvm_vm->set_background_close(options.background_kvm_teardown);
  auto impl = std::make_unique<Impl>(spec, std::move(options), std::move(*kvm), std::move(*kvm_vm));
  if (auto built = impl->build(); !built) return std::unexpected(built.error());
  return std::unique_ptr<Vm>(new Vm(std::move(impl)));
}

Vm::Vm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Vm::~Vm() = default;
Result<void> Vm::start() { return impl_->start(); }
VmExit Vm::wait() { return impl_->wait(); }
std::optional<VmExit> Vm::wait_for(std::chrono::milliseconds timeout) { return impl_->wait_for(timeout); }
void Vm::request_stop(VmExit reason) { impl_->request_stop(std::move(reason)); }
const VmSpec& Vm::spec() const { return impl_->spec(); }
VmTimings Vm::timings() const { return impl_->timings(); }
uint64_t Vm::guest_memory_bytes() const { return impl_->guest_memory_bytes(); }
Result<void> Vm::set_balloon_target_mib(uint64_t mib) { return impl_->set_balloon_target_mib(mib); }
std::optional<BalloonStatus> Vm::balloon() const { return impl_->balloon(); }
Result<void> Vm::pause() { return impl_->pause(); }
Result<void> Vm::resume() { return impl_->resume(); }
Result<void> Vm::shutdown(std::chrono::milliseconds timeout) { return impl_->shutdown(timeout); }
bool Vm::paused() const { return impl_->paused(); }
VmState Vm::state() const { return impl_->state(); }
VmStats Vm::stats() const { return impl_->stats(); }

}  // namespace skiff
