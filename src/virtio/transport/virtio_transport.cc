// SPDX-License-Identifier: Apache-2.0
#include "virtio/transport/virtio_transport.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {

// The VirtioInterrupt the device gets: forwards to the transport while it exists, so a
// device thread that outlives the transport by a moment signals nothing.
class VirtioTransport::Interrupt : public VirtioInterrupt {
 public:
  explicit Interrupt(std::weak_ptr<VirtioTransport> transport) : transport_(std::move(transport)) {}
  void signal_used_queue(uint16_t queue_index) override {
    if (auto t = transport_.lock(); t && queue_index < t->queues_.size()) t->deliver_used_queue(queue_index);
  }
  void signal_config_change() override {
    if (auto t = transport_.lock()) t->signal_config_change();
  }
  void signal_needs_reset() override {
    if (auto t = transport_.lock()) t->needs_reset();
  }

 private:
  std::weak_ptr<VirtioTransport> transport_;
};

RateLimitedLog& VirtioTransport::guest_log() {
  static RateLimitedLog log;
  return log;
}

VirtioTransport::VirtioTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
                                 std::shared_ptr<NotifyRegistrar> registrar, std::string label)
    : device_(std::move(device)),
      memory_(memory),
      registrar_(std::move(registrar)),
      label_(std::move(label)),
      status_(device_->device_features(),
              [device = device_](uint64_t features) { return device->check_features(features); }) {
  const std::vector<uint16_t> sizes = device_->queue_max_sizes();
  for (size_t i = 0; i < sizes.size(); ++i) {
    queues_.push_back(std::make_unique<Queue>(sizes[i], fmt::format("{} queue {}", label_, i)));
  }
}

VirtioTransport::~VirtioTransport() {
  // The derived transport is gone already: only the part that needs no hook runs here. The
  // device's workers stop before the queues they use, and before guest memory goes.
  std::lock_guard lock(mutex_);
  reset_device_and_queues_locked();
}

uint8_t VirtioTransport::status() const {
  std::lock_guard lock(mutex_);
  return status_.status();
}

void VirtioTransport::reset() {
  std::lock_guard lock(mutex_);
  reset_locked();
}

void VirtioTransport::set_device_call_runner(std::shared_ptr<DeviceCallRunner> runner) {
  std::lock_guard lock(mutex_);
  call_runner_ = std::move(runner);
}

Queue* VirtioTransport::selected_queue_locked() {
  return queue_select_ < queues_.size() ? queues_[queue_select_].get() : nullptr;
}

bool VirtioTransport::queue_writable_locked(const char* what) {
  const Queue* queue = selected_queue_locked();
  if (!queue) {
    guest_log().warn("{}: {} write for queue {} that does not exist", label_, what, queue_select_);
    return false;
  }
  if (queue->ready()) {
    guest_log().warn("{}: {} write to queue {} while it is enabled ignored", label_, what, queue_select_);
    return false;
  }
  return true;
}

void VirtioTransport::notify_from_register(uint64_t queue) {
  // Reached only when no ioeventfd took the write (none registered, or registration failed).
  if (queue >= queues_.size()) {
    guest_log().warn("{}: notify for queue {} that does not exist", label_, queue);
    return;
  }
  device_->notify_queue(static_cast<uint16_t>(queue));
}

// ---- Status, activation and reset -------------------------------------------------------

void VirtioTransport::write_status_locked(uint8_t value) {
  StatusUpdate update = status_.write_status(value);
  if (!update.refused.empty()) guest_log().warn("{}: status {:#04x}: {}", label_, value, update.refused);
  switch (update.action) {
    case StatusAction::kNone:
      break;
    case StatusAction::kReset:
      // Synchronous: the driver polls the status until it reads 0 (§4.1.4.3.2, §4.2.2.1).
      reset_locked();
      break;
    case StatusAction::kActivate:
      if (auto activated = activate_locked(); !activated) {
        guest_log().warn("{}: activation failed: {}", label_, activated.error().message());
        if (status_.set_needs_reset()) signal_config_change();
      }
      apply_deferred_needs_reset_locked();
      break;
  }
}

Result<void> VirtioTransport::activate_locked() {
  std::vector<Queue*> list;
  list.reserve(queues_.size());
  for (const auto& queue : queues_) {
    // A driver that breaks a queue puts the device into DEVICE_NEEDS_RESET (§2.1.2).
    queue->set_fatal_error_handler([weak = weak_from_this()](const Error&) {
      if (auto self = weak.lock()) self->needs_reset();
    });
    if (queue->ready()) {
      if (auto activated = queue->activate(memory_, status_.driver_features()); !activated) return activated;
    }
    list.push_back(queue.get());
  }
  return start_device_locked(list);
}

Result<void> VirtioTransport::start_device_locked(const std::vector<Queue*>& queues) {
  interrupt_ = std::make_shared<Interrupt>(weak_from_this());
  Result<void> activated;
  run_device_call(call_runner_.get(),
                  [&] { activated = device_->activate(status_.driver_features(), queues, interrupt_); });
  if (!activated) return activated;
  active_ = true;
  paused_ = false;
  // Notifications straight to the device thread: KVM signals the queue's eventfd on the
  // guest's notify write, without an exit to user space.
  if (registrar_) {
    for (size_t i = 0; i < queues_.size(); ++i) {
      if (!queues_[i]->active()) continue;
      if (auto fd = device_->queue_notify_fd(static_cast<uint16_t>(i))) {
        notifications_.push_back({*fd, static_cast<uint16_t>(i)});
      }
    }
    register_notifications_locked();
  }
  return {};
}

void VirtioTransport::register_notifications_locked() {
  if (!registrar_) return;
  for (const Notification& n : notifications_) {
    std::optional<NotifyAddress> where = notify_address_locked(n.queue);
    // Nowhere to listen (a BAR that does not decode): the guest's writes go nowhere either.
    if (!where) continue;
    if (auto r = registrar_->add(n.fd, where->address, where->length, where->datamatch); !r) {
      spdlog::warn("{}: queue {} notifications stay on the slow path: {}", label_, n.queue, r.error().message());
      continue;
    }
    registered_.push_back({n.fd, *where});
  }
}

void VirtioTransport::unregister_notifications_locked() {
  if (registrar_) {
    for (const Registration& r : registered_) {
      registrar_->remove(r.fd, r.where.address, r.where.length, r.where.datamatch);
    }
  }
  registered_.clear();
}

void VirtioTransport::refresh_notifications_locked() {
  unregister_notifications_locked();
  register_notifications_locked();
}

void VirtioTransport::reset_device_and_queues_locked() {
  unregister_notifications_locked();
  notifications_.clear();
  // The device stops its workers before the queues it used are reset (§2.4).
  run_device_call(call_runner_.get(), [&] { device_->reset(); });
  for (auto& queue : queues_) queue->reset();
  status_.reset();
  interrupt_.reset();
  queue_select_ = 0;
  active_ = false;
  paused_ = false;
  deferred_needs_reset_.store(false);
}

void VirtioTransport::reset_locked() {
  reset_device_and_queues_locked();
  reset_transport_locked();
}

// ---- Interrupts ---------------------------------------------------------------------------

void VirtioTransport::signal_config_change() {
  config_generation_.fetch_add(1);
  deliver_config_change();
}

void VirtioTransport::apply_deferred_needs_reset_locked() {
  if (deferred_needs_reset_.exchange(false)) status_.set_needs_reset();
}

void VirtioTransport::needs_reset() {
  // Called on device threads (a queue's fatal error) and, during activation, on the thread
  // that holds mutex_; reset_locked() also holds it while joining the device thread that
  // may be here. So never wait for the lock: when it is taken, the bit is left for the next
  // locked register access (the driver's status read after the notification) to apply.
  std::unique_lock lock(mutex_, std::try_to_lock);
  bool notify = true;
  if (lock.owns_lock()) {
    notify = status_.set_needs_reset();
    lock.unlock();
  } else {
    deferred_needs_reset_.store(true);
  }
  // §2.1.2: with DRIVER_OK set, the device sends a configuration change notification.
  if (notify) signal_config_change();
}

// ---- Pause and resume for the device-state seam --------------------------------------------

Result<void> VirtioTransport::pause() {
  std::lock_guard lock(mutex_);
  if (!active_ || paused_) return {};
  Result<void> paused;
  run_device_call(call_runner_.get(), [&] { paused = device_->pause(); });
  if (!paused) return std::unexpected(paused.error().with_context(label_));
  paused_ = true;
  return {};
}

Result<void> VirtioTransport::resume() {
  std::lock_guard lock(mutex_);
  if (!paused_) return {};
  Result<void> resumed;
  run_device_call(call_runner_.get(), [&] { resumed = device_->resume(); });
  if (!resumed) return std::unexpected(resumed.error().with_context(label_));
  paused_ = false;
  return {};
}

// ---- The device-state seam -------------------------------------------------------------------

namespace {
constexpr const char* kTransportStateKind = "virtio-transport";
constexpr uint32_t kTransportStateVersion = 1;
}  // namespace

Result<state::StateBlob> VirtioTransport::save_state() const {
  std::lock_guard lock(mutex_);
  if (active_ && !paused_) {
    return internal_error(fmt::format("{}: state saved while the device runs: pause() it first", label_));
  }
  state::StateBlob blob(kTransportStateKind, kTransportStateVersion);
  blob.put_string("transport", transport_kind())
      .put("device_type", device_->device_type())
      .put("status", status_.status())
      .put("driver_features", status_.driver_features())
      .put("device_features_select", status_.device_features_select())
      .put("driver_features_select", status_.driver_features_select())
      .put("queue_select", queue_select_)
      .put("config_generation", config_generation_.load())
      .put_bool("deferred_needs_reset", deferred_needs_reset_.load())
      .put_bool("active", active_);
  std::vector<state::StateBlob> queues;
  for (const auto& queue : queues_) queues.push_back(queue->save_state());
  blob.put_blobs("queues", queues);
  state::StateBlob registers(transport_kind(), 1);
  save_transport_locked(registers);
  blob.put_blob("registers", registers);
  auto device = device_->save_state();
  if (!device) return std::unexpected(device.error().with_context(label_));
  blob.put_blob("device", *device);
  return blob;
}

Result<void> VirtioTransport::restore_state(const state::StateBlob& blob) {
  std::lock_guard lock(mutex_);
  if (status_.status() != 0 || active_) {
    return internal_error(fmt::format("{}: state restored into a device the driver already uses", label_));
  }
  if (auto restored = restore_locked(blob); !restored) {
    // Whatever part was applied goes: the transport is as new, the error says why.
    reset_locked();
    return std::unexpected(restored.error().with_context(label_));
  }
  return {};
}

Result<void> VirtioTransport::restore_locked(const state::StateBlob& blob) {
  if (auto r = blob.expect(kTransportStateKind, kTransportStateVersion); !r) return r;
  auto transport = blob.string("transport", 32);
  if (!transport) return std::unexpected(transport.error());
  if (*transport != transport_kind()) {
    return config_error(fmt::format("state of a {} device restored into {}", *transport, transport_kind()));
  }
  auto type = blob.get<uint32_t>("device_type");
  if (!type) return std::unexpected(type.error());
  if (*type != device_->device_type()) {
    return config_error(fmt::format("state of virtio device type {} restored into type {}", *type,
                                    device_->device_type()));
  }
  auto status = blob.get<uint8_t>("status");
  auto features = blob.u64("driver_features");
  auto device_select = blob.get<uint32_t>("device_features_select");
  auto driver_select = blob.get<uint32_t>("driver_features_select");
  auto queue_select = blob.get<uint32_t>("queue_select");
  auto generation = blob.get<uint32_t>("config_generation");
  auto deferred = blob.boolean("deferred_needs_reset");
  auto active = blob.boolean("active");
  if (!status) return std::unexpected(status.error());
  if (!features) return std::unexpected(features.error());
  if (!device_select) return std::unexpected(device_select.error());
  if (!driver_select) return std::unexpected(driver_select.error());
  if (!queue_select) return std::unexpected(queue_select.error());
  if (!generation) return std::unexpected(generation.error());
  if (!deferred) return std::unexpected(deferred.error());
  if (!active) return std::unexpected(active.error());
  if (std::string why = status_.restore(*status, *features, *device_select, *driver_select); !why.empty()) {
    return config_error(fmt::format("state of {}: {}", kTransportStateKind, why));
  }
  if (*active && !status_.driver_ok()) {
    return config_error(fmt::format("state of {}: an active device without DRIVER_OK", kTransportStateKind));
  }
  auto queues = blob.blobs("queues", queues_.size());
  if (!queues) return std::unexpected(queues.error());
  if (queues->size() != queues_.size()) {
    return config_error(fmt::format("state of {}: {} queues where the device has {}", kTransportStateKind,
                                    queues->size(), queues_.size()));
  }
  std::vector<Queue*> list;
  for (size_t i = 0; i < queues_.size(); ++i) {
    queues_[i]->set_fatal_error_handler([weak = weak_from_this()](const Error&) {
      if (auto self = weak.lock()) self->needs_reset();
    });
    if (auto r = queues_[i]->restore_state((*queues)[i], memory_, status_.driver_features()); !r) {
      return std::unexpected(r.error().with_context(fmt::format("queue {}", i)));
    }
    // Only an active device has active queues: the driver enables them before DRIVER_OK.
    if (queues_[i]->active() && !*active) {
      return config_error(fmt::format("state of {}: queue {} active on an inactive device", kTransportStateKind, i));
    }
    list.push_back(queues_[i].get());
  }
  auto registers = blob.blob("registers");
  if (!registers) return std::unexpected(registers.error());
  if (auto r = registers->expect(transport_kind(), 1); !r) return r;
  if (auto r = restore_transport_locked(*registers); !r) return r;
  auto device = blob.blob("device");
  if (!device) return std::unexpected(device.error());
  if (auto r = device_->restore_state(*device); !r) return r;
  queue_select_ = *queue_select;
  config_generation_.store(*generation);
  deferred_needs_reset_.store(*deferred);
  if (!*active) return {};
  // As a DRIVER_OK write would, with the queues carrying their saved progress.
  return start_device_locked(list);
}

}  // namespace skiff::virtio
