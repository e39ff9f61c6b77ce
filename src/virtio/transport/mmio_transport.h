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
// Notifications: QueueNotify (0x50) takes the queue index. When the device offers an
// eventfd for a queue (VirtioDevice::queue_notify_fd), the transport registers it with the
// NotifyRegistrar at activation, matching the queue index, so KVM signals the device
// thread directly; otherwise a write reaches notify() here and is forwarded.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bus/bus_device.h"
#include "memory/guest_memory.h"
#include "virtio/core/device_call_runner.h"
#include "virtio/core/device_status.h"
#include "virtio/core/queue.h"
#include "virtio/core/virtio_device.h"
#include "virtio/transport/notify_registrar.h"

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

class MmioTransport : public BusDevice, public std::enable_shared_from_this<MmioTransport> {
 public:
  // `base` is the guest-physical address of the register block (for ioeventfds);
  // `irq` is pulsed for each interrupt; `registrar` may be null (no ioeventfds).
  static std::shared_ptr<MmioTransport> create(std::shared_ptr<VirtioDevice> device,
                                               const GuestMemory& memory, uint64_t base,
                                               std::shared_ptr<IrqLine> irq,
                                               std::shared_ptr<NotifyRegistrar> registrar,
                                               std::string label);
  ~MmioTransport() override;

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  uint32_t interrupt_status() const { return interrupt_status_.load(); }
  uint8_t status() const;
  const std::string& label() const { return label_; }
  // Resets the device (as a driver write of 0 would), e.g. when the VM stops.
  void reset();
  // Where activate() and reset() of the device run (device_call_runner.h); null: here.
  // Set before the guest runs.
  void set_device_call_runner(std::shared_ptr<DeviceCallRunner> runner) { call_runner_ = std::move(runner); }

 private:
  class Interrupt;
  MmioTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory, uint64_t base,
                std::shared_ptr<IrqLine> irq, std::shared_ptr<NotifyRegistrar> registrar,
                std::string label);

  uint32_t read_register_locked(uint64_t offset);
  void write_register_locked(uint64_t offset, uint32_t value);
  void write_status_locked(uint8_t value);
  Result<void> activate_locked();
  void reset_locked();
  void unregister_notifications_locked();
  Queue* selected_queue_locked();
  void raise_interrupt(uint32_t cause);
  void needs_reset();
  void apply_deferred_needs_reset_locked();

  std::shared_ptr<VirtioDevice> device_;
  const GuestMemory& memory_;
  const uint64_t base_;
  std::shared_ptr<IrqLine> irq_;
  std::shared_ptr<NotifyRegistrar> registrar_;
  const std::string label_;
  std::shared_ptr<DeviceCallRunner> call_runner_;

  mutable std::mutex mutex_;
  DeviceStatus status_;
  std::vector<std::unique_ptr<Queue>> queues_;
  uint32_t queue_select_ = 0;
  uint32_t shm_select_ = 0;
  std::atomic<uint32_t> interrupt_status_{0};
  std::atomic<bool> deferred_needs_reset_{false};  // set by needs_reset() when mutex_ was taken
  std::shared_ptr<Interrupt> interrupt_;
  struct RegisteredNotify {
    int fd;
    uint16_t queue;
  };
  std::vector<RegisteredNotify> registered_;
};

}  // namespace skiff::virtio
