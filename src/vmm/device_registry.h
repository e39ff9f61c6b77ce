// SPDX-License-Identifier: Apache-2.0
// The VM's virtio devices: one table of device kinds, one attach step, one list.
//
//   device_table.cc   one DeviceKind row per kind of virtio device (rng, blk, net,
//                     balloon, ...): how its spec section becomes device objects, what it
//                     adds to the VM's statistics, what it must make durable at stop.
//   DeviceRegistry    attach(request) puts a device on the transport its spec names:
//                     virtio-pci (next free slot, BARs from the allocator, MSI-X through
//                     GSI routes + irqfds, INTx on a shared IOAPIC line) or virtio-mmio
//                     (next 4 KiB window, an ISA IRQ through an irqfd, an LNRO0005 entry in
//                     the DSDT), and records it in one list. Statistics, the flush at stop,
//                     teardown and the device-state seam walk that list; the Vm never names
//                     a device type.
//
// Adding a device kind: its folder under src/virtio/, a VirtioDevice (and its state
// methods), its spec section (include/skiff/spec.h + src/config/), and one row in
// device_table.cc. docs/architecture.md, "Adding a device", has the checklist.
//
// Threads: built and attached on the thread that creates the VM; afterwards the list is
// fixed, and on_bar_move() runs on vCPU threads (under the PCI root's lock) reading it.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "arch/x86_64/acpi/acpi_tables.h"
#include "arch/x86_64/layout.h"
#include "bus/bus.h"
#include "kvm/kvm_vm.h"
#include "memory/guest_memory.h"
#include "pci/bar_allocator.h"
#include "pci/pci_acpi.h"
#include "pci/pci_root.h"
#include "skiff/spec.h"
#include "skiff/stats.h"
#include "skiff/vm.h"
#include "state/state_blob.h"
#include "virtio/core/device_call_runner.h"
#include "virtio/core/virtio_device.h"
#include "virtio/transport/virtio_transport.h"

namespace skiff {

class MsiRoutes;
class SharedIrqLine;
class KvmNotifyRegistrar;

// One virtio device the spec asks for, built but not yet attached.
struct DeviceRequest {
  std::shared_ptr<virtio::VirtioDevice> device;
  std::string id;         // the spec's id ("disk0", "net0"), or the kind for singletons
  std::string label;      // how logs and errors name it ("virtio-blk disk0")
  std::string spec_path;  // the JSON pointer of its spec section ("/disks/0")
  VirtioTransport transport = VirtioTransport::kPci;
};

// A kind of virtio device: one row of device_table.cc.
struct DeviceKind {
  std::string_view name;  // "virtio-blk"
  // The devices the spec describes (none when its section is absent), in spec order.
  // Errors carry the spec path of the section that failed.
  std::function<Result<std::vector<DeviceRequest>>(const VmSpec& spec, const GuestMemory& memory)> build;
  // Adds this device's figures to the VM's statistics; empty when it has none.
  std::function<void(const virtio::VirtioDevice& device, const std::string& id, VmStats& stats)> collect_stats;
  // Makes what the guest wrote durable once the vCPUs have stopped; empty when there is
  // nothing to make durable.
  std::function<Result<void>(virtio::VirtioDevice& device)> flush;
};

// Every kind, in the order their devices are attached (which fixes PCI slots and MMIO
// windows, so it is part of the guest-visible machine: append new kinds at the end).
std::span<const DeviceKind> device_kinds();

// Where attach() put a device.
struct DevicePlacement {
  VirtioTransport transport = VirtioTransport::kPci;
  uint8_t pci_slot = 0;     // virtio-pci
  uint64_t mmio_base = 0;   // virtio-mmio
  uint32_t mmio_irq = 0;    // virtio-mmio
};

struct AttachedDevice {
  const DeviceKind* kind = nullptr;
  std::string id;
  std::string label;
  std::string spec_path;
  DevicePlacement placement;
  std::shared_ptr<virtio::VirtioTransport> transport;

  virtio::VirtioDevice& device() const { return *transport->device(); }
};

class DeviceRegistry {
 public:
  // What attaching needs from the VM. References must outlive the registry.
  struct Context {
    const KvmVm& vm;
    const GuestMemory& memory;
    Bus& pio_bus;
    Bus& mmio_bus;
    x86::AcpiPlatform& acpi;                     // DSDT entries and extra tables go here
    std::vector<std::string>& cmdline_additions;  // virtio_mmio.device=... when asked
    std::shared_ptr<virtio::DeviceCallRunner> call_runner;
    SeccompMode seccomp = SeccompMode::off;
    bool mmio_cmdline = false;  // spec machine.mmio_cmdline
  };

  explicit DeviceRegistry(Context context);
  ~DeviceRegistry();
  DeviceRegistry(const DeviceRegistry&) = delete;
  DeviceRegistry& operator=(const DeviceRegistry&) = delete;

  // The PCI root complex: configuration ports, ECAM, BAR windows above the RAM ending at
  // `ram_end`, the MCFG. Before the first attach().
  Result<void> setup_pci(uint64_t ram_end);
  // Builds every device the spec asks for, kind by kind (device_kinds()), and attaches it.
  Result<void> attach_from_spec(const VmSpec& spec);
  // Places one device on its transport and records it (see the file comment).
  Result<void> attach(const DeviceKind& kind, DeviceRequest request);
  // Once every device is attached: PCI0 with its bus range, windows and INTx routes (_PRT).
  Result<void> finish_pci();

  std::span<const AttachedDevice> devices() const { return devices_; }
  // The first device of kind `kind_name`, or null.
  const AttachedDevice* find(std::string_view kind_name) const;
  // INTx routes for the MP table.
  const std::vector<pci::PciIntxRoute>& pci_intx_routes() const { return pci_intx_routes_; }

  // Statistics of every device, in attach order.
  void collect_stats(VmStats& stats) const;
  // Flushes every device that has something to make durable; returns the first failure
  // per device as "<label>: <why>" (all are tried).
  std::vector<std::string> flush_all();
  // Resets every device, last attached first, so their workers stop before guest memory
  // goes. Safe to call more than once.
  void reset_all();

  // The device-state seam over the list: pause() every device (workers quiesced, in
  // flight requests completed), and back. A failure resumes the ones already paused.
  Result<void> pause_all();
  Result<void> resume_all();
  // Kind "virtio-devices" version 1: one entry per attached device (id, kind, placement,
  // the transport's blob), in attach order. Devices must be paused.
  Result<state::StateBlob> save_state() const;
  // Into a registry attached from the same spec: checks every entry names the device in
  // the same place, then restores each transport.
  Result<void> restore_state(const state::StateBlob& blob);

 private:
  // Build the transport for `device`, place it, and fill attached.transport/placement.
  Result<void> attach_mmio(std::shared_ptr<virtio::VirtioDevice> device, AttachedDevice& attached);
  Result<void> attach_pci(std::shared_ptr<virtio::VirtioDevice> device, AttachedDevice& attached);
  // Follows the guest's BAR programming on the MMIO/port buses.
  void on_bar_move(const pci::BarMove& move);
  // Maps BAR `bar` of the device in `slot` at `address` on its bus.
  void place_bar(uint8_t slot, const pci::BarInfo& bar, uint64_t address);

  Context context_;
  std::vector<AttachedDevice> devices_;
  size_t mmio_slots_used_ = 0;
  std::shared_ptr<KvmNotifyRegistrar> notify_registrar_;
  std::shared_ptr<MsiRoutes> msi_routes_;  // MSI-X messages as GSI routes + irqfds
  std::shared_ptr<pci::PciRoot> pci_root_;
  std::optional<pci::BarAllocator> bar_allocator_;
  std::optional<pci::PciWindows> pci_windows_;
  // Devices by slot, for the BAR-move listener (which runs under the root's lock and so
  // cannot ask the root).
  std::array<std::shared_ptr<pci::PciDevice>, pci::kSlotsPerBus> pci_devices_{};
  // INTx: one level-triggered IOAPIC line per GSI in 16-23, shared by the devices swizzled
  // onto it; the routes go to _PRT and the MP table.
  std::array<std::shared_ptr<SharedIrqLine>, x86::kPciIntxGsiCount> pci_intx_lines_{};
  std::vector<pci::PciIntxRoute> pci_intx_routes_;
};

}  // namespace skiff
