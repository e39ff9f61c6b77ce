// SPDX-License-Identifier: Apache-2.0
#include "vmm/device_registry.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "arch/x86_64/acpi/aml.h"
#include "arch/x86_64/irq_routing.h"
#include "interrupts/kvm_irq_line.h"
#include "interrupts/kvm_irqfd_line.h"
#include "interrupts/kvm_notify_registrar.h"
#include "interrupts/msi_routes.h"
#include "interrupts/shared_irq_line.h"
#include "virtio/transport/mmio_transport.h"
#include "virtio/transport/pci_transport.h"

namespace skiff {

namespace {
constexpr const char* kRegistryStateKind = "virtio-devices";
constexpr uint32_t kRegistryStateVersion = 1;
// virtio-pci and virtio-mmio devices together cannot exceed the PCI slots plus the MMIO
// windows; a state blob listing more is refused before anything is parsed further.
constexpr size_t kMaxDevices = pci::kSlotsPerBus + x86::kVirtioMmioSlots;

const char* transport_name(VirtioTransport transport) {
  return transport == VirtioTransport::kMmio ? "mmio" : "pci";
}
}  // namespace

DeviceRegistry::DeviceRegistry(Context context) : context_(std::move(context)) {}

DeviceRegistry::~DeviceRegistry() { reset_all(); }

Result<void> DeviceRegistry::setup_pci(uint64_t ram_end) {
  pci_root_ = std::make_shared<pci::PciRoot>();
  if (auto r = context_.pio_bus.insert(std::make_shared<pci::PciConfigIo>(pci_root_), x86::kPciConfigAddressPort,
                                       pci::kPciConfigIoSize, "PCI configuration ports");
      !r) {
    return r;
  }
  if (auto r = context_.mmio_bus.insert(std::make_shared<pci::PciConfigEcam>(pci_root_), x86::kPciEcamAddr,
                                        x86::kPciEcamSize, "PCI ECAM");
      !r) {
    return r;
  }
  pci_windows_ = pci::default_pci_windows(ram_end);
  bar_allocator_.emplace(*pci_windows_);
  pci_root_->set_bar_move_listener([this](const pci::BarMove& move) { on_bar_move(move); });

  // ACPI: the MCFG points the guest at ECAM; the ECAM window is reserved as a motherboard
  // resource, which Linux wants before it trusts the MCFG. PCI0 follows in finish_pci().
  context_.acpi.extra_tables.push_back(pci::build_mcfg_table(x86::kPciEcamAddr));
  auto reservation = pci::ecam_reservation_aml(x86::kPciEcamAddr, x86::kPciEcamSize);
  if (!reservation) return std::unexpected(reservation.error());
  context_.acpi.dsdt_devices.push_back(std::move(*reservation));
  return {};
}

Result<void> DeviceRegistry::finish_pci() {
  // PCI0 (PNP0A08) carries the bus range, the BAR windows and the INTx routes (_PRT).
  pci::PciHostBridgeResources resources = pci::host_bridge_resources(*pci_windows_);
  resources.intx_routes = pci_intx_routes_;
  auto pci0 = pci::pci0_aml(resources);
  if (!pci0) return std::unexpected(pci0.error());
  context_.acpi.dsdt_devices.push_back(std::move(*pci0));
  return {};
}

Result<void> DeviceRegistry::attach_from_spec(const VmSpec& spec) {
  for (const DeviceKind& kind : device_kinds()) {
    auto requests = kind.build(spec, context_.memory);
    if (!requests) return std::unexpected(requests.error());
    for (DeviceRequest& request : *requests) {
      if (auto r = attach(kind, std::move(request)); !r) return r;
    }
  }
  return {};
}

Result<void> DeviceRegistry::attach(const DeviceKind& kind, DeviceRequest request) {
  request.device->set_worker_seccomp(context_.seccomp);
  if (!notify_registrar_) notify_registrar_ = std::make_shared<KvmNotifyRegistrar>(context_.vm);
  AttachedDevice attached{.kind = &kind,
                          .id = std::move(request.id),
                          .label = std::move(request.label),
                          .spec_path = std::move(request.spec_path),
                          .placement = {.transport = request.transport},
                          .transport = nullptr};
  auto placed = request.transport == VirtioTransport::kMmio ? attach_mmio(std::move(request.device), attached)
                                                             : attach_pci(std::move(request.device), attached);
  if (!placed) return placed;
  attached.transport->set_device_call_runner(context_.call_runner);
  devices_.push_back(std::move(attached));
  return {};
}

Result<void> DeviceRegistry::attach_mmio(std::shared_ptr<virtio::VirtioDevice> device, AttachedDevice& attached) {
  const size_t slot = mmio_slots_used_;
  if (slot >= x86::kVirtioMmioSlots) {
    return config_error(fmt::format("{}: no virtio-mmio slot left (at most {} devices on virtio-mmio)", attached.label,
                                    x86::kVirtioMmioSlots));
  }
  const uint64_t base = x86::kVirtioMmioBase + slot * x86::kVirtioMmioSlotSize;
  const uint32_t irq = x86::kVirtioMmioIrqs[slot];
  auto line = KvmIrqfdLine::create(context_.vm, irq);
  if (!line) return std::unexpected(line.error());
  auto transport = virtio::MmioTransport::create(std::move(device), context_.memory, base, *line, notify_registrar_,
                                                 fmt::format("{} (virtio-mmio {:#x})", attached.label, base));
  if (auto r = context_.mmio_bus.insert(transport, base, x86::kVirtioMmioSlotSize, attached.label); !r) return r;
  ++mmio_slots_used_;
  attached.transport = transport;
  attached.placement = DevicePlacement{.transport = VirtioTransport::kMmio, .mmio_base = base, .mmio_irq = irq};

  // ACPI: Linux's virtio_mmio driver binds to LNRO0005 devices (what stock kernels use, since
  // they lack CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
  x86::AcpiDevice acpi;
  acpi.name = fmt::format("VR{:02X}", slot);
  acpi.hid = "LNRO0005";
  acpi.uid = slot;
  acpi.resources.push_back(
      x86::aml::memory32_fixed(true, static_cast<uint32_t>(base), static_cast<uint32_t>(x86::kVirtioMmioSlotSize)));
  acpi.resources.push_back(x86::aml::interrupt(irq, x86::aml::InterruptFlags{}));
  auto aml = acpi.to_aml();
  if (!aml) return std::unexpected(aml.error());
  context_.acpi.dsdt_devices.push_back(std::move(*aml));
  if (context_.mmio_cmdline) {
    context_.cmdline_additions.push_back(
        fmt::format("virtio_mmio.device={}K@{:#x}:{}", x86::kVirtioMmioSlotSize / 1024, base, irq));
  }
  return {};
}

Result<void> DeviceRegistry::attach_pci(std::shared_ptr<virtio::VirtioDevice> device, AttachedDevice& attached) {
  const std::string& label = attached.label;
  if (!pci_root_) return internal_error(fmt::format("{}: the PCI root is not set up", label));
  if (!msi_routes_) {
    // GSIs past the IOAPIC's pins carry MSI routes; KVM allows thousands, 1024 is plenty.
    msi_routes_ = std::make_shared<MsiRoutes>(context_.vm, x86::pc_gsi_routes(), x86::kIoapicPins, 1024);
  }
  pci::MsiDeliver deliver = [routes = msi_routes_](uint64_t address, uint32_t data) {
    routes->deliver(address, data);
  };
  // INTx (INTA#) for drivers without MSI-X (pci=nomsi, old kernels): a level-triggered
  // IOAPIC line, shared with the other devices swizzled onto the same GSI.
  const auto next_slot = pci_root_->next_free_slot();
  if (!next_slot) {
    return config_error(fmt::format("{}: no PCI slot left (bus 0 holds {} devices)", label, pci::kSlotsPerBus - 1));
  }
  constexpr uint8_t kIntA = 0;
  const uint32_t gsi = x86::pci_intx_gsi(*next_slot, kIntA);
  auto& shared_line = pci_intx_lines_[gsi - x86::kPciIntxFirstGsi];
  if (!shared_line) shared_line = std::make_shared<SharedIrqLine>(std::make_shared<KvmIrqLine>(context_.vm, gsi));
  auto transport = virtio::VirtioPciTransport::create(std::move(device), context_.memory, notify_registrar_,
                                                      std::move(deliver), shared_line->add_input(), label);
  if (!transport) return std::unexpected(transport.error());
  // Routes are made when the guest unmasks an entry, so the first interrupt is one write,
  // and released when it masks or reprograms it, so the table does not fill with stale ones.
  (*transport)->msix_table()->set_vector_changed_hook(
      [tracker = std::make_shared<MsixRouteTracker>(msi_routes_), label](uint16_t vector, uint64_t address,
                                                                         uint32_t data, bool masked) {
        if (auto r = tracker->on_vector_changed(vector, address, data, masked); !r) {
          spdlog::warn("{}: {}", label, r.error().message());
        }
      });
  auto slot = pci_root_->add_device(*transport);
  if (!slot) return std::unexpected(slot.error().with_context(label));
  if (*slot != *next_slot) return internal_error(fmt::format("{}: PCI slot {} instead of {}", label, *slot, *next_slot));
  pci_devices_[*slot] = *transport;
  pci_intx_routes_.push_back(pci::PciIntxRoute{.slot = *slot, .pin = kIntA, .gsi = gsi});
  // Firmware-style initial placement; the guest may move the BARs later (on_bar_move).
  for (const pci::BarInfo& bar : (*transport)->bars()) {
    auto address = bar_allocator_->allocate(bar);
    if (!address) return std::unexpected(address.error().with_context(label));
    if (auto r = (*transport)->set_bar_address(bar.index, *address); !r) return r;
  }
  attached.transport = *transport;
  attached.placement = DevicePlacement{.transport = VirtioTransport::kPci, .pci_slot = *slot};
  return {};
}

void DeviceRegistry::on_bar_move(const pci::BarMove& move) {
  Bus& bus = move.bar.kind == pci::BarKind::kIo ? context_.pio_bus : context_.mmio_bus;
  if (move.old_address) bus.remove(*move.old_address);
  if (move.new_address) place_bar(move.slot, move.bar, *move.new_address);
}

void DeviceRegistry::place_bar(uint8_t slot, const pci::BarInfo& bar, uint64_t address) {
  if (slot >= pci_devices_.size() || !pci_devices_[slot]) return;
  Bus& bus = bar.kind == pci::BarKind::kIo ? context_.pio_bus : context_.mmio_bus;
  auto device = pci_devices_[slot];
  auto label = fmt::format("{} BAR{}", device->name(), bar.index);
  if (auto r = bus.insert(std::make_shared<pci::PciBarRegion>(device, bar.index), address, bar.size, label); !r) {
    // The guest placed a BAR over something else: the BAR stays unreachable, the VM goes on.
    spdlog::warn("{}: {}", label, r.error().message());
  }
}

// ---- Walking the list -----------------------------------------------------------------------

const AttachedDevice* DeviceRegistry::find(std::string_view kind_name) const {
  for (const AttachedDevice& device : devices_) {
    if (device.kind->name == kind_name) return &device;
  }
  return nullptr;
}

void DeviceRegistry::collect_stats(VmStats& stats) const {
  for (const AttachedDevice& device : devices_) {
    if (device.kind->collect_stats) device.kind->collect_stats(device.device(), device.id, stats);
  }
}

std::vector<std::string> DeviceRegistry::flush_all() {
  std::vector<std::string> failures;
  for (const AttachedDevice& device : devices_) {
    if (!device.kind->flush) continue;
    if (auto r = device.kind->flush(device.device()); !r) {
      failures.push_back(fmt::format("{}: {}", device.label, r.error().message()));
    }
  }
  return failures;
}

void DeviceRegistry::reset_all() {
  for (auto it = devices_.rbegin(); it != devices_.rend(); ++it) it->transport->reset();
}

Result<void> DeviceRegistry::pause_all() {
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (auto r = devices_[i].transport->pause(); !r) {
      for (size_t j = 0; j < i; ++j) {
        if (auto resumed = devices_[j].transport->resume(); !resumed) {
          spdlog::error("{}: {}", devices_[j].label, resumed.error().message());
        }
      }
      return r;
    }
  }
  return {};
}

Result<void> DeviceRegistry::resume_all() {
  Result<void> first;
  for (const AttachedDevice& device : devices_) {
    if (auto r = device.transport->resume(); !r && first) first = r;
  }
  return first;
}

Result<state::StateBlob> DeviceRegistry::save_state() const {
  std::vector<state::StateBlob> entries;
  for (const AttachedDevice& device : devices_) {
    auto transport = device.transport->save_state();
    if (!transport) return std::unexpected(transport.error());
    state::StateBlob entry("virtio-device", 1);
    entry.put_string("id", device.id)
        .put_string("kind", device.kind->name)
        .put_string("transport", transport_name(device.placement.transport))
        .put("pci_slot", device.placement.pci_slot)
        .put("mmio_base", device.placement.mmio_base)
        .put_blob("state", *transport);
    entries.push_back(std::move(entry));
  }
  state::StateBlob blob(kRegistryStateKind, kRegistryStateVersion);
  blob.put_blobs("devices", entries);
  return blob;
}

Result<void> DeviceRegistry::restore_state(const state::StateBlob& blob) {
  if (auto r = blob.expect(kRegistryStateKind, kRegistryStateVersion); !r) return r;
  auto entries = blob.blobs("devices", kMaxDevices);
  if (!entries) return std::unexpected(entries.error());
  if (entries->size() != devices_.size()) {
    return config_error(fmt::format("state of {}: {} devices where this VM has {}", kRegistryStateKind,
                                    entries->size(), devices_.size()));
  }
  // Every entry must name the device attached in the same place before any is restored.
  std::vector<state::StateBlob> states;
  for (size_t i = 0; i < devices_.size(); ++i) {
    const state::StateBlob& entry = (*entries)[i];
    const AttachedDevice& device = devices_[i];
    if (auto r = entry.expect("virtio-device", 1); !r) return r;
    auto id = entry.string("id");
    auto kind = entry.string("kind");
    auto transport = entry.string("transport");
    auto slot = entry.get<uint8_t>("pci_slot");
    auto base = entry.u64("mmio_base");
    auto state = entry.blob("state");
    for (const auto* r : {&id, &kind, &transport}) {
      if (!*r) return std::unexpected(r->error());
    }
    if (!slot) return std::unexpected(slot.error());
    if (!base) return std::unexpected(base.error());
    if (!state) return std::unexpected(state.error());
    if (*id != device.id || *kind != device.kind->name || *transport != transport_name(device.placement.transport) ||
        *slot != device.placement.pci_slot || *base != device.placement.mmio_base) {
      return config_error(fmt::format("state of {}: device {} is {} \"{}\" on {} where this VM has {} \"{}\" on {}",
                                      kRegistryStateKind, i, *kind, *id, *transport, device.kind->name, device.id,
                                      transport_name(device.placement.transport)));
    }
    states.push_back(std::move(*state));
  }
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (auto r = devices_[i].transport->restore_state(states[i]); !r) return r;
    // The restored configuration space says where the guest put the BARs; no BAR decodes
    // before (attach only programs them), so they go on the buses now, as a guest's
    // Command write would have put them.
    if (devices_[i].placement.transport != VirtioTransport::kPci) continue;
    const auto& pci_device = pci_devices_[devices_[i].placement.pci_slot];
    for (const pci::BarInfo& bar : pci_device->bars()) {
      if (auto address = pci_device->bar_address(bar.index)) place_bar(devices_[i].placement.pci_slot, bar, *address);
    }
  }
  return {};
}

}  // namespace skiff
