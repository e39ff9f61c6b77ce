// SPDX-License-Identifier: Apache-2.0
// The seam between virtio devices (blk, net, balloon, ...) and virtio transports (PCI, MMIO).
// A device implements VirtioDevice and never learns which transport carries it; a transport
// implements VirtioInterrupt and owns the device's Queues and DeviceStatus.
//
// What a transport does, in order:
//   - construction: one Queue per entry of queue_max_sizes(), a DeviceStatus over
//     device_features();
//   - register accesses: status and feature words → DeviceStatus; queue size, addresses and
//     enable → the Queue's setters; device config → read_config()/write_config();
//   - DRIVER_OK (StatusAction::kActivate): install each queue's fatal-error handler
//     (→ signal_needs_reset()), Queue::activate(memory, driver_features) every ready queue,
//     then activate(driver_features, queues, interrupt). Any error → DEVICE_NEEDS_RESET;
//   - queue notification: if queue_notify_fd(i) gave an eventfd, it is registered as a KVM
//     ioeventfd on the queue's notify address, so the guest's write wakes the device thread
//     without an exit to user space; otherwise the transport calls notify_queue(i);
//   - reset (status 0, or the transport goes away): reset(), then Queue::reset() on every
//     queue and DeviceStatus::reset().
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "skiff/error.h"
#include "skiff/vm.h"  // SeccompMode
#include "state/stateful.h"
#include "virtio/core/queue.h"

namespace skiff::virtio {

// Interrupts from a device to its driver, implemented by the transport: MSI-X vectors
// through irqfd for PCI, or the ISR status plus an INTx/IOAPIC line for MMIO and PCI
// without MSI-X. Callable from any device thread; implementations lock what they need.
class VirtioInterrupt {
 public:
  virtual ~VirtioInterrupt() = default;
  // A used-buffer notification for queue `queue_index` (§2.3). The device first asks
  // Queue::needs_notification() whether the driver wants one.
  virtual void signal_used_queue(uint16_t queue_index) = 0;
  // A configuration change notification (§2.3). The transport bumps the configuration
  // generation (DeviceStatus::bump_config_generation()) before raising it.
  virtual void signal_config_change() = 0;
  // The device entered an error state only a reset can clear: the transport sets
  // DEVICE_NEEDS_RESET and, when DRIVER_OK is set, sends a configuration change
  // notification (§2.1.2).
  virtual void signal_needs_reset() = 0;
};

class VirtioDevice : public state::Stateful {
 public:
  virtual ~VirtioDevice() = default;

  // The device ID (§5, kDeviceId* in virtio_constants.h).
  virtual uint32_t device_type() const = 0;
  // The maximum size of each queue, one entry per queue; each a power of two <= 32768.
  virtual std::vector<uint16_t> queue_max_sizes() const = 0;
  // The features offered. Always includes VIRTIO_F_VERSION_1; never VIRTIO_F_RING_PACKED.
  virtual uint64_t device_features() const = 0;
  // Device-specific rules on the driver's features beyond "offered and VERSION_1" (§2.2.1,
  // e.g. a feature that depends on another). Returns why it refuses, or an empty string.
  // The transport passes it to DeviceStatus as its FeatureCheck.
  virtual std::string check_features(uint64_t /*driver_features*/) const { return {}; }

  // Size of the device-specific configuration space in bytes (§2.5).
  virtual uint32_t config_size() const = 0;
  // Reads config bytes at `offset`; bytes outside the config space read as 0 (see
  // read_config_bytes()). Writes outside it, or to read-only fields, are ignored.
  virtual void read_config(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write_config(uint64_t offset, std::span<const uint8_t> data) = 0;

  // The driver set DRIVER_OK. `queues` has one entry per queue_max_sizes() entry, owned by
  // the transport and valid until reset() returns; queues the driver did not enable are
  // not active (Queue::active() is false) and must be left alone. The device starts its
  // worker(s) here. An error puts the device into DEVICE_NEEDS_RESET.
  virtual Result<void> activate(uint64_t acked_features, std::vector<Queue*> queues,
                                std::shared_ptr<VirtioInterrupt> interrupt) = 0;

  // The driver notified queue `queue_index` (§2.3) and the notification reached user
  // space. Called on a vCPU thread: must not block (typically it writes the device's own
  // eventfd for its worker).
  virtual void notify_queue(uint16_t queue_index) = 0;
  // An eventfd the transport registers as KVM ioeventfd for the queue's notifications,
  // valid from activate() until reset(); nullopt when the device wants notify_queue().
  virtual std::optional<int> queue_notify_fd(uint16_t /*queue_index*/) const {
    return std::nullopt;
  }

  // Stops the device's workers, drops its references to the queues and the interrupt, and
  // returns it to its initial state (§2.4). Chains still held are dropped before it
  // returns. Called on reset even if activate() was never called.
  virtual void reset() = 0;

  // ---- The device-state seam (state/stateful.h). -----------------------------------------
  // The transport saves what every device shares (status, features, queues with their
  // progress, interrupt state); the device saves only its own part: what the guest wrote
  // to its configuration space, what its backend must pick up again (a balloon's target,
  // a disk's cache mode), counters the stats report.
  //
  // Snapshot order, as a transport drives it: pause() (workers stop once every chain they
  // popped is back in the used ring, or in the available ring when not started on, so no
  // request is half done), then save_state(), then
  // resume() or reset(). pause() and resume() are only called between activate() and
  // reset(); pause() on a paused device and resume() on a running one do nothing. reset()
  // of a paused device is fine (it stops nothing more and drops what pause() kept).
  //
  // Restore order: restore_state() on a freshly built device, before activate() is
  // called with queues that already carry their saved progress.
  //
  // What pause() guarantees when it returns: no device thread runs, and until resume() or
  // reset() nothing of the device touches guest memory, the queues or the interrupt. Every
  // chain a worker popped went back with Queue::add_used(), or, when the device had not
  // started on it (a request waiting for the rate limiter, a receive buffer waiting for a
  // frame), with Queue::undo_pop(), so the next pop() finds it again. Requests in flight in a
  // backend were waited for and answered. The device keeps its queues and interrupt.
  //
  // Interrupts: pause() and resume() run on the transport's thread, which may hold its own
  // lock, and VirtioInterrupt takes that lock: so neither calls the interrupt. What pause()
  // completed is left for Queue::needs_notification(), i.e. pending in the queue's state
  // (next_used past signalled_used), which the queue blob carries. A device's workers ask
  // needs_notification() on every queue on their first pass after resume() and after
  // activate(), so the driver gets the interrupts it asked for, on the resumed device and on
  // a restored one alike. Device-level interrupts (a configuration change requested while
  // paused) are kept by the device, saved in its blob, and raised by its worker the same way.
  //
  // notify_queue() may come from a vCPU at any time, paused or not: while paused it only
  // leaves the notification pending (an eventfd stays signalled), never blocks on pause().
  virtual Result<void> pause() = 0;
  virtual Result<void> resume() = 0;
  // Only while paused, before activate() or after reset(): a running device's state changes
  // under it.
  Result<state::StateBlob> save_state() const override = 0;
  Result<void> restore_state(const state::StateBlob& blob) override = 0;

  // The seccomp mode of the worker threads activate() starts, each under its device's
  // thread kind (docs/security.md). The VM sets it before the guest runs; a device built
  // on its own (tests, fuzzers) starts unfiltered workers.
  void set_worker_seccomp(SeccompMode mode) { worker_seccomp_ = mode; }
  SeccompMode worker_seccomp() const { return worker_seccomp_; }

 private:
  SeccompMode worker_seccomp_ = SeccompMode::off;
};

// Copies config bytes for read_config(): `out` gets config[offset, offset + out.size()),
// with every byte beyond the end of `config` (or an offset past it) read as 0.
void read_config_bytes(std::span<const uint8_t> config, uint64_t offset, std::span<uint8_t> out);

// The write side: copies `data` into config[offset, ...) where it fits, dropping the rest.
// Returns the number of bytes written.
size_t write_config_bytes(std::span<uint8_t> config, uint64_t offset,
                          std::span<const uint8_t> data);

}  // namespace skiff::virtio
