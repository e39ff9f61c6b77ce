// SPDX-License-Identifier: Apache-2.0
// The virtio-mmio transport, version 2 (virtio 1.2 §4.2): one device behind a 4 KiB
// register block on the MMIO bus. Registers are 32-bit (§4.2.2: the driver uses only
// aligned 32-bit accesses for them; anything else is ignored and reads as 0); the device
// configuration space from offset 0x100 takes any width.
//
// Interrupts: the InterruptStatus register (bit 0 used buffer, bit 1 configuration change)
// plus one interrupt line, pulsed on every new notification (an edge on an ISA IOAPIC pin,
// usually through a KVM irqfd) — the driver reads the status, acknowledges it and handles
// both causes, so a pulse while bits are still set is harmless.
//
// Notifications: QueueNotify (0x50) takes the queue index; the ioeventfd of each queue
// matches its index there (the transport core registers it). Status, features, queues,
// activation and reset are the core's (virtio_transport.h); this class decodes registers.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bus/bus_device.h"
#include "memory/guest_memory.h"
#include "virtio/core/virtio_device.h"
#include "virtio/transport/notify_registrar.h"
#include "virtio/transport/virtio_transport.h"

namespace skiff::virtio {

// Register offsets (§4.2.2, table "MMIO Device Register Layout").
inline constexpr uint64_t kMmioMagicValue = 0x000;
inline constexpr uint64_t kMmioVersion = 0x004;
inline constexpr uint64_t kMmioDeviceId = 0x008;
inline constexpr uint64_t kMmioVendorId = 0x00c;
inline constexpr uint64_t kMmioDeviceFeatures = 0x010;
inline constexpr uint64_t kMmioDeviceFeaturesSel = 0x014;
inline constexpr uint64_t kMmioDriverFeatures = 0x020;
inline constexpr uint64_t kMmioDriverFeaturesSel = 0x024;
inline constexpr uint64_t kMmioQueueSel = 0x030;
inline constexpr uint64_t kMmioQueueNumMax = 0x034;
inline constexpr uint64_t kMmioQueueNum = 0x038;
inline constexpr uint64_t kMmioQueueReady = 0x044;
inline constexpr uint64_t kMmioQueueNotify = 0x050;
inline constexpr uint64_t kMmioInterruptStatus = 0x060;
inline constexpr uint64_t kMmioInterruptAck = 0x064;
inline constexpr uint64_t kMmioStatus = 0x070;
inline constexpr uint64_t kMmioQueueDescLow = 0x080;
inline constexpr uint64_t kMmioQueueDescHigh = 0x084;
inline constexpr uint64_t kMmioQueueDriverLow = 0x090;
inline constexpr uint64_t kMmioQueueDriverHigh = 0x094;
inline constexpr uint64_t kMmioQueueDeviceLow = 0x0a0;
inline constexpr uint64_t kMmioQueueDeviceHigh = 0x0a4;
inline constexpr uint64_t kMmioShmSel = 0x0ac;
inline constexpr uint64_t kMmioShmLenLow = 0x0b0;
inline constexpr uint64_t kMmioShmLenHigh = 0x0b4;
inline constexpr uint64_t kMmioShmBaseLow = 0x0b8;
inline constexpr uint64_t kMmioShmBaseHigh = 0x0bc;
inline constexpr uint64_t kMmioConfigGeneration = 0x0fc;
inline constexpr uint64_t kMmioConfig = 0x100;
inline constexpr uint64_t kMmioRegionSize = 0x1000;

inline constexpr uint32_t kMmioMagic = 0x74726976;  // "virt"
inline constexpr uint32_t kMmioVersion2 = 2;
inline constexpr uint32_t kSkiffVendorId = 0x46494b53;  // "SKIF"

class MmioTransport final : public VirtioTransport, public BusDevice {
 public:
  // `base` is the guest-physical address of the register block (for ioeventfds);
  // `irq` is pulsed for each interrupt; `registrar` may be null (no ioeventfds).
  static std::shared_ptr<MmioTransport> create(std::shared_ptr<VirtioDevice> device,
                                               const GuestMemory& memory, uint64_t base,
                                               std::shared_ptr<IrqLine> irq,
                                               std::shared_ptr<NotifyRegistrar> registrar,
                                               std::string label);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  uint32_t interrupt_status() const { return interrupt_status_.load(); }

 private:
  MmioTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory, uint64_t base,
                std::shared_ptr<IrqLine> irq, std::shared_ptr<NotifyRegistrar> registrar,
                std::string label);

  // ---- VirtioTransport hooks ----
  const char* transport_kind() const override { return "virtio-mmio"; }
  std::optional<NotifyAddress> notify_address_locked(uint16_t queue) const override;
  void deliver_used_queue(uint16_t queue) override;
  void deliver_config_change() override;
  void reset_transport_locked() override;
  void save_transport_locked(state::StateBlob& blob) const override;
  Result<void> restore_transport_locked(const state::StateBlob& blob) override;

  uint32_t read_register_locked(uint64_t offset);
  void write_register_locked(uint64_t offset, uint32_t value);
  void raise_interrupt(uint32_t cause);

  const uint64_t base_;
  const std::shared_ptr<IrqLine> irq_;
  uint32_t shm_select_ = 0;  // guarded by mutex()
  std::atomic<uint32_t> interrupt_status_{0};
};

}  // namespace skiff::virtio
