// SPDX-License-Identifier: Apache-2.0
// The virtio-pci transport, modern interface only (virtio 1.2 §4.1): one virtio device as a
// PCI function with vendor 0x1af4 and device id 0x1040 + the virtio device type (a
// non-transitional device, §4.1.2.1), configured through one memory BAR that the
// vendor-specific capabilities of §4.1.4 point into.
//
// BAR 0, 64-bit memory, not prefetchable, 16 KiB. The MSI-X table and PBA get a 4 KiB page
// of their own (PCI 3.0 §6.8.2 lets them share one with each other, not with other
// registers); so do the device configuration and the notifications:
//   0x0000  common configuration (§4.1.4.3), 0x38 bytes (no queue_notify_data/queue_reset:
//           VIRTIO_F_NOTIF_CONFIG_DATA and VIRTIO_F_RING_RESET are never offered)
//   0x0800  ISR status (§4.1.4.5), 1 byte, read-to-clear
//   0x1000  device-specific configuration (§4.1.4.6), config_size() bytes; no DEVICE
//           capability when the device has no configuration (§4.1.4.6.1 requires one only
//           "for any device type which has a device-specific configuration", and Linux
//           refuses a zero-length one)
//   0x2000  notifications (§4.1.4.4): queue i at 0x2000 + 4 * i (notify_off_multiplier 4,
//           queue_notify_off = i), so at most 1024 queues
//   0x3000  MSI-X table, min(queues + 1, 128) vectors (§4.1.5.1.2: one per queue plus one
//           for configuration changes; Linux falls back to sharing when it has fewer)
//   0x3800  MSI-X pending bit array
// Capabilities, in list order: COMMON, NOTIFY, ISR, DEVICE (if any), PCI_CFG (§4.1.4.8, the
// window into BAR 0 through configuration space), MSI-X.
//
// Interrupts (§4.1.5.3, §4.1.5.4):
//  - used buffers: the queue's MSI-X vector when MSI-X is enabled (nothing when the queue's
//    vector is NO_VECTOR); otherwise ISR bit 0 and INTx;
//  - configuration changes: ISR bit 1 always (§4.1.4.5.1), plus config_msix_vector when
//    MSI-X is enabled, INTx otherwise.
//  INTx is level-triggered: the line is high while the ISR is non-zero and INTx is allowed
//  (Command.Interrupt Disable clear and MSI-X disabled), and drops when the driver reads the
//  ISR (§4.1.4.5: "reading this register resets it to 0 and causes the device to deassert
//  the interrupt"). The Status register's Interrupt Status bit follows the ISR.
//
// Notifications: each active queue's eventfd (VirtioDevice::queue_notify_fd) is registered
// with the NotifyRegistrar at BAR 0 + 0x2000 + 4 * i, length 0 (any width: a 16-bit write
// per §4.1.5.2, wider ones too) and no datamatch, while BAR 0 decodes; bar_moved() moves
// them. Writes that reach bar_write() anyway call VirtioDevice::notify_queue().
//
// Status, features, queues, activation, notifications and reset are the transport core's
// (virtio_transport.h); this class decodes the PCI configuration space and BAR 0 and
// delivers interrupts.
//
// Threads and locks: vCPU threads call config_read/config_write (serialised by PciRoot),
// bar_read/bar_write and bar_moved; device threads call the VirtioInterrupt. Lock order:
//   mutex() (config space, status, queues, registrations)
//     -> the device's own locks (read_config/activate/reset)
//     -> interrupt_mutex_ (ISR and the INTx level) / the MsixTable's lock.
// The interrupt path never takes mutex() (a device thread may signal while a vCPU thread
// holds it and waits in VirtioDevice::reset() for that thread), so the MSI-X vectors and
// the "INTx allowed" bit are atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bus/bus_device.h"
#include "memory/guest_memory.h"
#include "pci/config_space.h"
#include "pci/msix_table.h"
#include "pci/pci_device.h"
#include "virtio/core/virtio_device.h"
#include "virtio/transport/notify_registrar.h"
#include "virtio/transport/virtio_transport.h"

namespace skiff::virtio {

// ---- PCI identity (§4.1.2.1) ------------------------------------------------------------------
inline constexpr uint16_t kVirtioPciVendorId = 0x1af4;
inline constexpr uint16_t kVirtioPciModernDeviceIdBase = 0x1040;
// §4.1.2.1: "Non-transitional devices SHOULD have a PCI Revision ID of 1 or higher" and "a
// PCI Subsystem Device ID of 0x40 or higher"; we use the PCI device id itself, as Cloud
// Hypervisor does (Linux reads the type from the device id for ids >= 0x1040).
inline constexpr uint8_t kVirtioPciRevision = 1;

// Class codes (base << 16 | subclass << 8 | prog-if), facts from QEMU and Cloud Hypervisor.
inline constexpr uint32_t kPciClassNetworkEthernet = 0x020000;
inline constexpr uint32_t kPciClassStorageOther = 0x018000;
inline constexpr uint32_t kPciClassCommunicationOther = 0x078000;
inline constexpr uint32_t kPciClassUnassigned = 0xff0000;  // QEMU's PCI_CLASS_OTHERS
uint32_t virtio_pci_class_code(uint32_t device_type);
// 0x1040 + the virtio device type (§4.1.2.1).
uint16_t virtio_pci_device_id(uint32_t device_type);

// ---- Virtio structure capabilities (§4.1.4) ---------------------------------------------------
inline constexpr uint8_t kVirtioPciCapCommonCfg = 1;
inline constexpr uint8_t kVirtioPciCapNotifyCfg = 2;
inline constexpr uint8_t kVirtioPciCapIsrCfg = 3;
inline constexpr uint8_t kVirtioPciCapDeviceCfg = 4;
inline constexpr uint8_t kVirtioPciCapPciCfg = 5;
// struct virtio_pci_cap: cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2],
// offset (le32), length (le32).
inline constexpr uint8_t kVirtioPciCapLength = 16;
inline constexpr uint8_t kVirtioPciCapCfgType = 3;  // offsets inside the capability
inline constexpr uint8_t kVirtioPciCapBar = 4;
inline constexpr uint8_t kVirtioPciCapOffset = 8;
inline constexpr uint8_t kVirtioPciCapLengthField = 12;
// struct virtio_pci_notify_cap adds notify_off_multiplier (le32) at 16;
// struct virtio_pci_cfg_cap adds pci_cfg_data[4] at 16.
inline constexpr uint8_t kVirtioPciNotifyCapLength = 20;
inline constexpr uint8_t kVirtioPciCfgCapLength = 20;
inline constexpr uint8_t kVirtioPciCapExtra = 16;

// ---- BAR 0 layout (see the header comment) ----------------------------------------------------
inline constexpr uint8_t kVirtioPciBar = 0;
inline constexpr uint64_t kVirtioPciBarSize = 0x4000;
inline constexpr uint64_t kVirtioPciCommonOffset = 0x0000;
inline constexpr uint64_t kVirtioPciCommonLength = 0x38;
inline constexpr uint64_t kVirtioPciIsrOffset = 0x0800;
inline constexpr uint64_t kVirtioPciIsrLength = 1;
inline constexpr uint64_t kVirtioPciDeviceOffset = 0x1000;
inline constexpr uint64_t kVirtioPciDeviceMaxLength = 0x1000;
inline constexpr uint64_t kVirtioPciNotifyOffset = 0x2000;
inline constexpr uint64_t kVirtioPciNotifyMaxLength = 0x1000;
inline constexpr uint32_t kVirtioPciNotifyOffMultiplier = 4;
inline constexpr uint64_t kVirtioPciMsixTableOffset = 0x3000;
inline constexpr uint64_t kVirtioPciMsixPbaOffset = 0x3800;
inline constexpr uint16_t kVirtioPciMaxVectors = 128;  // 128 * 16 bytes fill 0x3000-0x3800
inline constexpr uint64_t kVirtioPciMaxQueues =
    kVirtioPciNotifyMaxLength / kVirtioPciNotifyOffMultiplier;

// ---- Common configuration (§4.1.4.3, struct virtio_pci_common_cfg) ----------------------------
inline constexpr uint64_t kCommonDeviceFeatureSelect = 0x00;  // le32
inline constexpr uint64_t kCommonDeviceFeature = 0x04;        // le32, read-only
inline constexpr uint64_t kCommonDriverFeatureSelect = 0x08;  // le32
inline constexpr uint64_t kCommonDriverFeature = 0x0c;        // le32
inline constexpr uint64_t kCommonConfigMsixVector = 0x10;     // le16
inline constexpr uint64_t kCommonNumQueues = 0x12;            // le16, read-only
inline constexpr uint64_t kCommonDeviceStatus = 0x14;         // u8
inline constexpr uint64_t kCommonConfigGeneration = 0x15;     // u8, read-only
inline constexpr uint64_t kCommonQueueSelect = 0x16;          // le16
inline constexpr uint64_t kCommonQueueSize = 0x18;            // le16
inline constexpr uint64_t kCommonQueueMsixVector = 0x1a;      // le16
inline constexpr uint64_t kCommonQueueEnable = 0x1c;          // le16
inline constexpr uint64_t kCommonQueueNotifyOff = 0x1e;       // le16, read-only
inline constexpr uint64_t kCommonQueueDesc = 0x20;            // le64
inline constexpr uint64_t kCommonQueueDriver = 0x28;          // le64
inline constexpr uint64_t kCommonQueueDevice = 0x30;          // le64

// §4.1.5.1.2: "no vector" in config_msix_vector / queue_msix_vector.
inline constexpr uint16_t kVirtioMsiNoVector = 0xffff;

class VirtioPciTransport final : public VirtioTransport, public pci::PciDevice {
 public:
  // `deliver` sends an MSI (the VMM: KvmVm::signal_msi); `registrar` may be null (no
  // ioeventfds); `intx` may be null (no INTx: Interrupt Pin 0). `memory` must outlive the
  // transport. Fails when the device has no queues, more than kVirtioPciMaxQueues queues,
  // or a configuration space larger than kVirtioPciDeviceMaxLength.
  static Result<std::shared_ptr<VirtioPciTransport>> create(
      std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
      std::shared_ptr<NotifyRegistrar> registrar, pci::MsiDeliver deliver,
      std::shared_ptr<IrqLine> intx, std::string label);

  // ---- pci::PciDevice ----
  std::string name() const override { return label(); }
  uint32_t config_read(uint16_t offset, uint8_t size) override;
  void config_write(uint16_t offset, uint8_t size, uint32_t value) override;
  std::vector<pci::BarInfo> bars() const override;
  std::optional<uint64_t> bar_address(uint8_t index) const override;
  void bar_moved(uint8_t index, std::optional<uint64_t> old_address,
                 std::optional<uint64_t> new_address) override;
  void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) override;

  // Programs BAR `index` like firmware would (the VMM's initial assignment from the
  // BarAllocator). Decoding still needs Command.Memory Space, which the guest sets.
  Result<void> set_bar_address(uint8_t index, uint64_t address);

  // The MSI-X table, for the VMM's vector-changed hook (KVM GSI routes + irqfd).
  const std::shared_ptr<pci::MsixTable>& msix_table() const { return msix_; }
  // The ISR as the driver would read it, without clearing it (tests, debugging).
  uint8_t interrupt_status() const;

 private:
  VirtioPciTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
                     std::shared_ptr<NotifyRegistrar> registrar, std::shared_ptr<IrqLine> intx,
                     std::string label);
  Result<void> build_config_space(pci::MsiDeliver deliver);

  // ---- VirtioTransport hooks ----
  const char* transport_kind() const override { return "virtio-pci"; }
  std::optional<NotifyAddress> notify_address_locked(uint16_t queue) const override;
  void deliver_used_queue(uint16_t queue) override;
  void deliver_config_change() override;
  void reset_transport_locked() override;
  void save_transport_locked(state::StateBlob& blob) const override;
  Result<void> restore_transport_locked(const state::StateBlob& blob) override;

  // BAR 0 dispatch; `locked` says whether the caller already holds mutex() (the PCI_CFG
  // window runs inside config_write).
  void bar_access(uint64_t offset, std::span<uint8_t> read, std::span<const uint8_t> write,
                  bool locked);
  void common_read_locked(uint64_t offset, std::span<uint8_t> data);
  void common_write_locked(uint64_t offset, std::span<const uint8_t> data);
  uint8_t read_isr_and_clear();

  // The PCI_CFG window (§4.1.4.8): the BAR access the capability's fields describe.
  bool touches_pci_cfg_data(uint16_t offset, uint8_t size) const;
  void pci_cfg_window_locked(bool is_write);

  // Interrupt side, never under mutex().
  void set_isr_bits(uint8_t bits);
  void update_intx_locked_interrupt();  // with interrupt_mutex_ held
  void refresh_intx_allowed();          // after a config write, mutex() held

  const std::shared_ptr<IrqLine> intx_;
  const uint32_t device_config_size_;
  std::shared_ptr<pci::MsixTable> msix_;  // set in create(), then immutable

  pci::ConfigSpace config_;         // guarded by mutex()
  uint8_t pci_cfg_cap_offset_ = 0;  // immutable after create()

  // Read by the interrupt path without mutex().
  std::atomic<uint16_t> config_vector_{kVirtioMsiNoVector};
  std::unique_ptr<std::atomic<uint16_t>[]> queue_vectors_;
  std::atomic<bool> intx_allowed_{true};

  mutable std::mutex interrupt_mutex_;
  uint8_t isr_ = 0;           // guarded by interrupt_mutex_
  bool intx_level_ = false;   // guarded by interrupt_mutex_
};

}  // namespace skiff::virtio
