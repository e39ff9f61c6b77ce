// SPDX-License-Identifier: Apache-2.0
#include "virtio/transport/mmio_transport.h"

#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "virtio/core/rate_limited_log.h"
#include "virtio/core/virtio_constants.h"
#include "virtio/transport/queue_activation.h"

namespace skiff::virtio {
namespace {

RateLimitedLog& guest_log() {
  static RateLimitedLog log;
  return log;
}

}  // namespace

// The VirtioInterrupt the device gets: forwards to the transport while it exists.
class MmioTransport::Interrupt : public VirtioInterrupt {
 public:
  explicit Interrupt(std::weak_ptr<MmioTransport> transport) : transport_(std::move(transport)) {}
  void signal_used_queue(uint16_t) override {
    if (auto t = transport_.lock()) t->raise_interrupt(kInterruptUsedBuffer);
  }
  void signal_config_change() override {
    if (auto t = transport_.lock()) t->raise_interrupt(kInterruptConfigChange);
  }
  void signal_needs_reset() override {
    if (auto t = transport_.lock()) t->needs_reset();
  }

 private:
  std::weak_ptr<MmioTransport> transport_;
};

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
    : device_(std::move(device)),
      memory_(memory),
      base_(base),
      irq_(std::move(irq)),
      registrar_(std::move(registrar)),
      label_(std::move(label)),
      status_(device_->device_features(),
              [device = device_](uint64_t features) { return device->check_features(features); }) {
  auto sizes = device_->queue_max_sizes();
  for (size_t i = 0; i < sizes.size(); ++i) {
    queues_.push_back(std::make_unique<Queue>(sizes[i], fmt::format("{} queue {}", label_, i)));
  }
}

MmioTransport::~MmioTransport() {
  std::lock_guard lock(mutex_);
  reset_locked();
}

uint8_t MmioTransport::status() const {
  std::lock_guard lock(mutex_);
  return status_.status();
}

void MmioTransport::reset() {
  std::lock_guard lock(mutex_);
  reset_locked();
}

void MmioTransport::read(uint64_t offset, std::span<uint8_t> data) {
  if (offset >= kMmioConfig) {
    // The device config space takes any access width (§4.2.2.2).
    device_->read_config(offset - kMmioConfig, data);
    return;
  }
  std::memset(data.data(), 0, data.size());
  if (data.size() != 4 || offset % 4 != 0) {
    guest_log().warn("{}: {}-byte read at register offset {:#x} ignored (registers are 32-bit)", label_,
                     data.size(), offset);
    return;
  }
  uint32_t value = 0;
  {
    std::lock_guard lock(mutex_);
    apply_deferred_needs_reset_locked();
    value = read_register_locked(offset);
  }
  std::memcpy(data.data(), &value, sizeof(value));
}

void MmioTransport::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= kMmioConfig) {
    device_->write_config(offset - kMmioConfig, data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    guest_log().warn("{}: {}-byte write at register offset {:#x} ignored (registers are 32-bit)", label_,
                     data.size(), offset);
    return;
  }
  uint32_t value = 0;
  std::memcpy(&value, data.data(), sizeof(value));
  if (offset == kMmioQueueNotify) {
    // Reached only when no ioeventfd took the write. Forwarded outside the lock: the
    // device only wakes its worker.
    if (value < queues_.size()) {
      device_->notify_queue(static_cast<uint16_t>(value));
    } else {
      guest_log().warn("{}: notify for queue {} that does not exist", label_, value);
    }
    return;
  }
  std::lock_guard lock(mutex_);
  apply_deferred_needs_reset_locked();
  write_register_locked(offset, value);
}

Queue* MmioTransport::selected_queue_locked() {
  return queue_select_ < queues_.size() ? queues_[queue_select_].get() : nullptr;
}

uint32_t MmioTransport::read_register_locked(uint64_t offset) {
  Queue* queue = selected_queue_locked();
  switch (offset) {
    case kMmioMagicValue: return kMmioMagic;
    case kMmioVersion: return kMmioVersion2;
    case kMmioDeviceId: return device_->device_type();
    case kMmioVendorId: return kSkiffVendorId;
    case kMmioDeviceFeatures: return status_.device_features_word();
    case kMmioQueueNumMax: return queue ? queue->max_size() : 0;  // 0: no such queue (§4.2.2)
    case kMmioQueueReady: return queue && queue->ready() ? 1 : 0;
    case kMmioInterruptStatus: return interrupt_status_.load();
    case kMmioStatus: return status_.status();
    case kMmioShmLenLow:
    case kMmioShmLenHigh:
      return 0xffffffff;  // no shared memory regions: length -1 (§4.2.2)
    case kMmioShmBaseLow:
    case kMmioShmBaseHigh:
      return 0xffffffff;
    case kMmioConfigGeneration: return status_.config_generation();
    default:
      return 0;  // write-only and reserved registers read as 0
  }
}

void MmioTransport::write_register_locked(uint64_t offset, uint32_t value) {
  Queue* queue = selected_queue_locked();
  // §4.2.2.3: the driver writes a queue's configuration only while it is not ready.
  auto queue_writable = [&](const char* what) {
    if (!queue) {
      guest_log().warn("{}: {} write for queue {} that does not exist", label_, what, queue_select_);
      return false;
    }
    if (queue->ready()) {
      guest_log().warn("{}: {} write to queue {} while it is ready ignored", label_, what, queue_select_);
      return false;
    }
    return true;
  };
  auto set_low = [](uint64_t old, uint32_t low) { return (old & 0xffffffff00000000ull) | low; };
  auto set_high = [](uint64_t old, uint32_t high) { return (old & 0xffffffffull) | (uint64_t{high} << 32); };
  switch (offset) {
    case kMmioDeviceFeaturesSel: status_.set_device_features_select(value); return;
    case kMmioDriverFeatures:
      if (!status_.write_driver_features_word(value)) {
        guest_log().warn("{}: driver features written after FEATURES_OK ignored", label_);
      }
      return;
    case kMmioDriverFeaturesSel: status_.set_driver_features_select(value); return;
    case kMmioQueueSel: queue_select_ = value; return;
    case kMmioQueueNum:
      if (queue_writable("QueueNum")) {
        if (value > queue->max_size() || value > 0xffff) {
          guest_log().warn("{}: queue {} size {} above the maximum {}", label_, queue_select_, value, queue->max_size());
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
      guest_log().warn("{}: write of {:#x} to read-only or reserved register {:#x} ignored", label_, value, offset);
      return;
  }
}

void MmioTransport::write_status_locked(uint8_t value) {
  StatusUpdate update = status_.write_status(value);
  if (!update.refused.empty()) guest_log().warn("{}: status {:#04x}: {}", label_, value, update.refused);
  switch (update.action) {
    case StatusAction::kNone:
      break;
    case StatusAction::kReset:
      reset_locked();
      break;
    case StatusAction::kActivate:
      if (auto activated = activate_locked(); !activated) {
        guest_log().warn("{}: activation failed: {}", label_, activated.error().message());
        if (status_.set_needs_reset()) raise_interrupt(kInterruptConfigChange);
      }
      break;
  }
}

Result<void> MmioTransport::activate_locked() {
  std::weak_ptr<MmioTransport> weak = weak_from_this();
  auto queues = activate_queues(queues_, memory_, status_.driver_features(), [weak] {
    if (auto self = weak.lock()) self->needs_reset();
  });
  if (!queues) return std::unexpected(queues.error());
  interrupt_ = std::make_shared<Interrupt>(weak);
  Result<void> activated;
  run_device_call(call_runner_.get(),
                  [&] { activated = device_->activate(status_.driver_features(), *queues, interrupt_); });
  if (!activated) return activated;
  // Notifications straight to the device thread: the write to QueueNotify with the queue's
  // index signals its eventfd inside KVM (§4.2.2: QueueNotify takes the queue index).
  if (registrar_) {
    for (size_t i = 0; i < queues_.size(); ++i) {
      if (!queues_[i]->active()) continue;
      auto fd = device_->queue_notify_fd(static_cast<uint16_t>(i));
      if (!fd) continue;
      if (auto r = registrar_->add(*fd, base_ + kMmioQueueNotify, 4, i); !r) {
        spdlog::warn("{}: queue {} notifications stay on the slow path: {}", label_, i, r.error().message());
        continue;
      }
      registered_.push_back({*fd, static_cast<uint16_t>(i)});
    }
  }
  return {};
}

void MmioTransport::unregister_notifications_locked() {
  if (registrar_) {
    for (const RegisteredNotify& notify : registered_) {
      registrar_->remove(notify.fd, base_ + kMmioQueueNotify, 4, notify.queue);
    }
  }
  registered_.clear();
}

void MmioTransport::reset_locked() {
  unregister_notifications_locked();
  // The device stops its workers before the queues it used are reset (§2.4).
  run_device_call(call_runner_.get(), [&] { device_->reset(); });
  for (auto& queue : queues_) queue->reset();
  status_.reset();
  deferred_needs_reset_.store(false);
  interrupt_status_.store(0);
  interrupt_.reset();
  queue_select_ = 0;
}

void MmioTransport::raise_interrupt(uint32_t cause) {
  interrupt_status_.fetch_or(cause);
  if (irq_) irq_->pulse();
}

void MmioTransport::needs_reset() {
  // Called on device threads (a queue's fatal error) and from activate_locked(), which
  // holds mutex_; reset_locked() also holds it while joining the device thread that may be
  // here. So never wait for the lock: when it is taken, the bit is left for the next locked
  // register access (the driver's Status read after the interrupt) to apply.
  std::unique_lock lock(mutex_, std::try_to_lock);
  bool notify = true;
  if (lock.owns_lock()) {
    notify = status_.set_needs_reset();
  } else {
    deferred_needs_reset_.store(true);
  }
  if (lock.owns_lock()) lock.unlock();
  if (notify) raise_interrupt(kInterruptConfigChange);
}

void MmioTransport::apply_deferred_needs_reset_locked() {
  if (deferred_needs_reset_.exchange(false)) status_.set_needs_reset();
}

}  // namespace skiff::virtio
