// SPDX-License-Identifier: Apache-2.0
// The transport core: what every virtio transport does the same way, written once.
// MmioTransport (virtio-mmio, §4.2) and VirtioPciTransport (virtio-pci, §4.1) derive from
// it and keep only their register decoding and their interrupt delivery.
//
// The core owns, for one VirtioDevice:
//   - the device status and feature negotiation (DeviceStatus), and the configuration
//     generation (§2.5);
//   - one Queue per VirtioDevice::queue_max_sizes() entry and the driver's queue select;
//   - DRIVER_OK: every ready queue validated and activated with the negotiated features,
//     each queue's fatal error wired to DEVICE_NEEDS_RESET, then VirtioDevice::activate()
//     on the device call runner; a failure sets DEVICE_NEEDS_RESET (§2.1.2);
//   - queue notifications: each active queue's eventfd registered with the
//     NotifyRegistrar (a KVM ioeventfd) at the address the transport names, re-registered
//     when that address moves (a PCI BAR), and the slow-path notify_queue() for writes that
//     reach user space anyway;
//   - the VirtioInterrupt the device signals: used-buffer and configuration-change
//     notifications go to the transport's delivery hooks; DEVICE_NEEDS_RESET is set here;
//   - reset (§2.4): notifications unregistered, the device reset on the call runner, every
//     queue and the status back to power-on, then the transport's own interrupt state;
//   - the device-state seam (state/stateful.h): pause()/resume() of the device, and
//     save_state()/restore_state() of status, queues, device and the transport's registers.
//
// A transport implements the hooks below and decodes its registers under mutex(),
// calling the *_locked helpers.
//
// Threads and locks. vCPU threads make register accesses; device threads signal
// interrupts. Lock order: mutex() (status, queues, registrations, the transport's
// registers) -> the device's own locks (activate/reset/config) -> the transport's
// interrupt state. The interrupt path never waits for mutex(): a device thread may signal
// while a vCPU thread holds mutex() and waits in VirtioDevice::reset() for that very
// thread. So DEVICE_NEEDS_RESET from a device thread is only try-locked, and deferred to
// the next locked register access when the lock is taken.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "memory/guest_memory.h"
#include "state/stateful.h"
#include "virtio/core/device_call_runner.h"
#include "virtio/core/device_status.h"
#include "virtio/core/queue.h"
#include "virtio/core/rate_limited_log.h"
#include "virtio/core/virtio_device.h"
#include "virtio/transport/notify_registrar.h"

namespace skiff::virtio {

// Where a queue's notification write lands, for its ioeventfd.
struct NotifyAddress {
  uint64_t address = 0;
  uint32_t length = 0;                 // 0: any access width
  std::optional<uint64_t> datamatch;  // only writes of this value (MMIO: the queue index)
};

class VirtioTransport : public std::enable_shared_from_this<VirtioTransport>, public state::Stateful {
 public:
  ~VirtioTransport() override;

  const std::string& label() const { return label_; }
  const std::shared_ptr<VirtioDevice>& device() const { return device_; }
  uint8_t status() const;
  // The configuration generation the driver reads (§2.5).
  uint32_t config_generation() const { return config_generation_.load(); }

  // Resets the device (as a driver write of 0 to the status would), e.g. when the VM stops.
  void reset();
  // Where activate(), reset(), pause() and resume() of the device run
  // (device_call_runner.h); null: on the calling thread. Set before the guest runs.
  void set_device_call_runner(std::shared_ptr<DeviceCallRunner> runner);

  // Quiesces an active device for a snapshot (VirtioDevice::pause(): no worker touches
  // guest memory, the queues or the interrupt until resume()). Nothing to do for a device
  // the driver has not started.
  Result<void> pause();
  Result<void> resume();

  // ---- state::Stateful -------------------------------------------------------------------
  // Kind "virtio-transport" version 1: the transport kind ("virtio-mmio", "virtio-pci") and
  // its registers, the device type, status and features, the configuration generation,
  // every queue, and the device's own blob. Only on a paused device (or one the driver
  // has not started), so no request is half done.
  Result<state::StateBlob> save_state() const override;
  // On a transport fresh from construction (same device type and queue sizes, same spec):
  // restores the status and features, the transport's registers, the queues (activating
  // the ones that were active, against this transport's guest memory), then the device's
  // blob, and, when DRIVER_OK was set, activates the device and registers its
  // notifications as a DRIVER_OK write would. A blob that does not fit leaves the
  // transport reset and returns why.
  Result<void> restore_state(const state::StateBlob& blob) override;

 protected:
  VirtioTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
                  std::shared_ptr<NotifyRegistrar> registrar, std::string label);

  // ---- Hooks the transport implements. ---------------------------------------------------
  // "virtio-mmio" / "virtio-pci": recorded in state so a blob is not restored into the
  // other transport.
  virtual const char* transport_kind() const = 0;
  // Where queue `queue`'s notifications are written now; nullopt while they cannot reach
  // the device (a PCI BAR that does not decode). Called with mutex() held.
  virtual std::optional<NotifyAddress> notify_address_locked(uint16_t queue) const = 0;
  // Deliver a used-buffer notification for `queue` (§2.3). Never under mutex().
  virtual void deliver_used_queue(uint16_t queue) = 0;
  // Deliver a configuration change notification (§2.3); the generation was bumped already.
  // Never waits for mutex(); may be called with it held.
  virtual void deliver_config_change() = 0;
  // The transport's own part of a reset (§2.4): its interrupt status, its vectors and
  // registers. Called with mutex() held, after the device and the queues were reset.
  virtual void reset_transport_locked() = 0;
  // The transport's registers and interrupt state, into / out of `blob` (a nested blob
  // of kind transport_kind(); mutex() held).
  virtual void save_transport_locked(state::StateBlob& blob) const = 0;
  virtual Result<void> restore_transport_locked(const state::StateBlob& blob) = 0;

  // ---- Helpers for the register decoding, called with mutex() held. -----------------------
  std::mutex& mutex() const { return mutex_; }
  DeviceStatus& status_locked() { return status_; }
  const DeviceStatus& status_locked() const { return status_; }
  size_t queue_count() const { return queues_.size(); }
  Queue& queue(size_t index) { return *queues_[index]; }
  uint32_t queue_select_locked() const { return queue_select_; }
  void set_queue_select_locked(uint32_t select) { queue_select_ = select; }
  // The selected queue, or null when the select names none.
  Queue* selected_queue_locked();
  // Whether the driver may write the selected queue's size or addresses (§2.7, §4.1.4.3.2,
  // §4.2.2.3: only while the queue is not enabled); logs why not. `what` names the register.
  bool queue_writable_locked(const char* what);
  // A driver write of the device status: reset, activation, refusals, all as §2.1/§3.1.1 say.
  void write_status_locked(uint8_t value);
  // Applies a DEVICE_NEEDS_RESET a device thread could not set because the lock was taken.
  void apply_deferred_needs_reset_locked();
  // Unregisters and re-registers the notification eventfds where notify_address_locked()
  // now says (a moved or (de)activated BAR).
  void refresh_notifications_locked();
  bool has_notifications_locked() const { return !notifications_.empty(); }

  // A notification write that reached user space (no ioeventfd took it). Not under mutex():
  // the device only wakes its worker.
  void notify_from_register(uint64_t queue);

  // Rate-limited log for what the guest does wrong, shared by every transport.
  static RateLimitedLog& guest_log();

 private:
  class Interrupt;
  struct Notification {
    int fd;
    uint16_t queue;
  };
  struct Registration {
    int fd;
    NotifyAddress where;
  };

  Result<void> activate_locked();
  // The device half of DRIVER_OK, shared by activation and restore: the interrupt, the
  // device's activate() on the call runner, the notification eventfds.
  Result<void> start_device_locked(const std::vector<Queue*>& queues);
  // Registers the eventfds of notifications_ where the transport says.
  void register_notifications_locked();
  void unregister_notifications_locked();
  void reset_locked();
  // The common part of reset_locked(), which the destructor can run (no virtual calls).
  void reset_device_and_queues_locked();
  void signal_config_change();
  void needs_reset();
  void on_queue_fatal_error();
  Result<void> restore_locked(const state::StateBlob& blob);

  const std::shared_ptr<VirtioDevice> device_;
  const GuestMemory& memory_;
  const std::shared_ptr<NotifyRegistrar> registrar_;
  const std::string label_;

  mutable std::mutex mutex_;
  std::shared_ptr<DeviceCallRunner> call_runner_;  // guarded by mutex_
  DeviceStatus status_;                            // guarded by mutex_
  std::vector<std::unique_ptr<Queue>> queues_;     // guarded by mutex_ (the vector is fixed)
  uint32_t queue_select_ = 0;                      // guarded by mutex_
  std::shared_ptr<Interrupt> interrupt_;           // guarded by mutex_
  std::vector<Notification> notifications_;       // wanted since activation; guarded by mutex_
  std::vector<Registration> registered_;           // those registered; guarded by mutex_
  bool active_ = false;  // the device accepted activate(); guarded by mutex_
  bool paused_ = false;  // guarded by mutex_
  std::atomic<bool> deferred_needs_reset_{false};
  // §2.5: bumped on every configuration change notification, which device threads raise
  // without mutex_, so it is an atomic here rather than a DeviceStatus field.
  std::atomic<uint32_t> config_generation_{0};
};

}  // namespace skiff::virtio
