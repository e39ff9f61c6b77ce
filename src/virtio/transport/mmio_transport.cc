// SPDX-License-Identifier: Apache-2.0
#include "virtio/transport/mmio_transport.h"

#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {

std::shared_ptr<MmioTransport> MmioTransport::create(std::shared_ptr<VirtioDevice> device,
                                                     const GuestMemory& memory, uint64_t base,
                                                     std::shared_ptr<IrqLine> irq,
                                                     std::shared_ptr<NotifyRegistrar> registrar,
                                                     std::string label) {
  return std::shared_ptr<MmioTransport>(new MmioTransport(std::move(device), memory, base, std::move(irq),
                                                          std::move(registrar), std::move(label)));
}

MmioTransport::MmioTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
                             uint64_t base, std::shared_ptr<IrqLine> irq,
                             std::shared_ptr<NotifyRegistrar> registrar, std::string label)
    : VirtioTransport(std::move(device), memory, std::move(registrar), std::move(label)),
      base_(base),
      irq_(std::move(irq)) {}

void MmioTransport::read(uint64_t offset, std::span<uint8_t> data) {
  if (offset >= kMmioConfig) {
    // The device config space takes any access width (§4.2.2.2).
    device()->read_config(offset - kMmioConfig, data);
    return;
  }
  std::memset(data.data(), 0, data.size());
  if (data.size() != 4 || offset % 4 != 0) {
    guest_log().warn("{}: {}-byte read at register offset {:#x} ignored (registers are 32-bit)", label(),
                     data.size(), offset);
    return;
  }
  uint32_t value = 0;
  {
    std::lock_guard lock(mutex());
    apply_deferred_needs_reset_locked();
    value = read_register_locked(offset);
  }
  std::memcpy(data.data(), &value, sizeof(value));
}

void MmioTransport::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= kMmioConfig) {
    device()->write_config(offset - kMmioConfig, data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    guest_log().warn("{}: {}-byte write at register offset {:#x} ignored (registers are 32-bit)", label(),
                     data.size(), offset);
    return;
  }
  uint32_t value = 0;
  std::memcpy(&value, data.data(), sizeof(value));
  if (offset == kMmioQueueNotify) {
    notify_from_register(value);
    return;
  }
  std::lock_guard lock(mutex());
  apply_deferred_needs_reset_locked();
  write_register_locked(offset, value);
}

uint32_t MmioTransport::read_register_locked(uint64_t offset) {
  Queue* queue = selected_queue_locked();
  switch (offset) {
    case kMmioMagicValue: return kMmioMagic;
    case kMmioVersion: return kMmioVersion2;
    case kMmioDeviceId: return device()->device_type();
    case kMmioVendorId: return kSkiffVendorId;
    case kMmioDeviceFeatures: return status_locked().device_features_word();
    case kMmioQueueNumMax: return queue ? queue->max_size() : 0;  // 0: no such queue (§4.2.2)
    case kMmioQueueReady: return queue && queue->ready() ? 1 : 0;
    case kMmioInterruptStatus: return interrupt_status_.load();
    case kMmioStatus: return status_locked().status();
    case kMmioShmLenLow:
    case kMmioShmLenHigh:
      return 0xffffffff;  // no shared memory regions: length -1 (§4.2.2)
    case kMmioShmBaseLow:
    case kMmioShmBaseHigh:
      return 0xffffffff;
    case kMmioConfigGeneration: return config_generation();
    default:
      return 0;  // write-only and reserved registers read as 0
  }
}

void MmioTransport::write_register_locked(uint64_t offset, uint32_t value) {
  Queue* queue = selected_queue_locked();
  // §4.2.2.3: the driver writes a queue's configuration only while it is not ready.
  auto queue_writable = [&](const char* what) { return queue_writable_locked(what); };
  auto set_low = [](uint64_t old, uint32_t low) { return (old & 0xffffffff00000000ull) | low; };
  auto set_high = [](uint64_t old, uint32_t high) { return (old & 0xffffffffull) | (uint64_t{high} << 32); };
  switch (offset) {
    case kMmioDeviceFeaturesSel: status_locked().set_device_features_select(value); return;
    case kMmioDriverFeatures:
      if (!status_locked().write_driver_features_word(value)) {
        guest_log().warn("{}: driver features written after FEATURES_OK ignored", label());
      }
      return;
    case kMmioDriverFeaturesSel: status_locked().set_driver_features_select(value); return;
    case kMmioQueueSel: set_queue_select_locked(value); return;
    case kMmioQueueNum:
      if (queue_writable("QueueNum")) {
        if (value > queue->max_size() || value > 0xffff) {
          guest_log().warn("{}: queue {} size {} above the maximum {}", label(), queue_select_locked(), value,
                           queue->max_size());
          return;
        }
        queue->set_size(static_cast<uint16_t>(value));
      }
      return;
    case kMmioQueueReady:
      if (!queue) return;
      queue->set_ready(value == 1);
      return;
    case kMmioInterruptAck: interrupt_status_.fetch_and(~value); return;
    case kMmioStatus: write_status_locked(static_cast<uint8_t>(value)); return;
    case kMmioQueueDescLow: if (queue_writable("QueueDescLow")) queue->set_desc_table_address(set_low(queue->desc_table_address(), value)); return;
    case kMmioQueueDescHigh: if (queue_writable("QueueDescHigh")) queue->set_desc_table_address(set_high(queue->desc_table_address(), value)); return;
    case kMmioQueueDriverLow: if (queue_writable("QueueDriverLow")) queue->set_avail_ring_address(set_low(queue->avail_ring_address(), value)); return;
    case kMmioQueueDriverHigh: if (queue_writable("QueueDriverHigh")) queue->set_avail_ring_address(set_high(queue->avail_ring_address(), value)); return;
    case kMmioQueueDeviceLow: if (queue_writable("QueueDeviceLow")) queue->set_used_ring_address(set_low(queue->used_ring_address(), value)); return;
    case kMmioQueueDeviceHigh: if (queue_writable("QueueDeviceHigh")) queue->set_used_ring_address(set_high(queue->used_ring_address(), value)); return;
    case kMmioShmSel: shm_select_ = value; return;
    default:
      guest_log().warn("{}: write of {:#x} to read-only or reserved register {:#x} ignored", label(), value,
                       offset);
      return;
  }
}

// ---- VirtioTransport hooks ------------------------------------------------------------------

std::optional<NotifyAddress> MmioTransport::notify_address_locked(uint16_t queue) const {
  // §4.2.2: QueueNotify takes the queue index, so each queue's eventfd matches its index.
  return NotifyAddress{.address = base_ + kMmioQueueNotify, .length = 4, .datamatch = queue};
}

void MmioTransport::deliver_used_queue(uint16_t) { raise_interrupt(kInterruptUsedBuffer); }

void MmioTransport::deliver_config_change() { raise_interrupt(kInterruptConfigChange); }

void MmioTransport::reset_transport_locked() {
  interrupt_status_.store(0);
  shm_select_ = 0;
}

void MmioTransport::save_transport_locked(state::StateBlob& blob) const {
  blob.put("interrupt_status", interrupt_status_.load()).put("shm_select", shm_select_);
}

Result<void> MmioTransport::restore_transport_locked(const state::StateBlob& blob) {
  auto status = blob.get<uint32_t>("interrupt_status", kInterruptUsedBuffer | kInterruptConfigChange);
  if (!status) return std::unexpected(status.error());
  auto shm = blob.get<uint32_t>("shm_select");
  if (!shm) return std::unexpected(shm.error());
  // No pulse: the edge of a pending interrupt was delivered before the snapshot, and the
  // interrupt controller's own state (saved beside this) holds it.
  interrupt_status_.store(*status);
  shm_select_ = *shm;
  return {};
}

void MmioTransport::raise_interrupt(uint32_t cause) {
  interrupt_status_.fetch_or(cause);
  if (irq_) irq_->pulse();
}

}  // namespace skiff::virtio
