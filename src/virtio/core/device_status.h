// SPDX-License-Identifier: Apache-2.0
// The device status field and feature negotiation (virtio 1.2 §2.1, §2.2, §3.1.1), shared by
// the PCI and MMIO transports: both expose the same status byte, the same 64-bit feature
// words through a 32-bit select/value window, and the same configuration generation.
//
// A transport forwards the driver's register accesses here and acts on the returned
// StatusUpdate: kReset → reset the device and its queues; kActivate → validate and
// activate the queues, then VirtioDevice::activate(); if that fails, set_needs_reset().
//
// Threads: not internally locked. The transport serializes calls under its own lock,
// including set_needs_reset() coming from a device thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace skiff::virtio {

// What the transport must do after a status write.
enum class StatusAction {
  kNone,
  kReset,     // the driver wrote 0 (§2.4): reset the device and every queue
  kActivate,  // DRIVER_OK was just set: activate the queues and the device
};

struct StatusUpdate {
  StatusAction action = StatusAction::kNone;
  // Why all or part of the write was refused (empty when it was accepted); the transport
  // logs it rate-limited, as it is the guest's doing.
  std::string refused;
};

class DeviceStatus {
 public:
  // Extra, device-specific checks of the driver's features beyond "offered and
  // VERSION_1" (e.g. a feature that requires another one, §2.2.1). Returns an empty string
  // to accept, or why it refuses.
  using FeatureCheck = std::function<std::string(uint64_t driver_features)>;

  explicit DeviceStatus(uint64_t device_features, FeatureCheck check = {});

  // ---- The status byte. -------------------------------------------------------------------
  uint8_t status() const { return status_; }
  // The driver writes the status register.
  //  - 0 resets (§2.4): status, driver features and selects go back to 0.
  //  - The driver may only add bits (§2.1.1 "MUST NOT clear a device status bit"); a write
  //    that clears one is refused as a whole.
  //  - DEVICE_NEEDS_RESET is the device's bit: ignored in writes, kept in status.
  //  - Bits come in order (§3.1.1): DRIVER needs ACKNOWLEDGE, FEATURES_OK needs DRIVER,
  //    DRIVER_OK needs FEATURES_OK. A write that breaks the order is refused as a whole.
  //  - FEATURES_OK is only kept when the driver's features are a subset of the device's,
  //    include VIRTIO_F_VERSION_1 and pass the FeatureCheck (§2.2.2: otherwise the device
  //    MUST fail to set FEATURES_OK; the driver re-reads status and sees it clear).
  //  - After FAILED only a reset is accepted.
  StatusUpdate write_status(uint8_t value);

  bool driver_ok() const;
  bool features_ok() const;
  bool failed() const;
  bool needs_reset() const;

  // The device entered an error state that only a reset clears (§2.1.2). Returns true when
  // DRIVER_OK is set, in which case the transport MUST send a configuration change
  // notification (§2.1.2).
  bool set_needs_reset();

  // ---- Features, as two 32-bit words behind a select register (§4.1.4.3 device_feature /
  // driver_feature, §4.2.2 DeviceFeatures / DriverFeatures). -------------------------------
  uint64_t device_features() const { return device_features_; }
  uint64_t driver_features() const { return driver_features_; }

  uint32_t device_features_select() const { return device_features_select_; }
  void set_device_features_select(uint32_t select) { device_features_select_ = select; }
  // Bits [32 * select, 32 * select + 31] of the offered features; 0 for select >= 2.
  uint32_t device_features_word() const;

  uint32_t driver_features_select() const { return driver_features_select_; }
  void set_driver_features_select(uint32_t select) { driver_features_select_ = select; }
  uint32_t driver_features_word() const;
  // Stores the driver's word for the current select. Ignored once FEATURES_OK is set
  // (§3.1.1: the driver MUST NOT accept new features after that), after FAILED, and for
  // select >= 2. Returns false when ignored.
  bool write_driver_features_word(uint32_t value);

  // Back to the power-on state (what a status write of 0 does), keeping device_features.
  void reset();

  // Puts back a saved status, driver features and selects (the device-state seam),
  // after checking a driver could have reached them: defined bits only, the §3.1.1 order,
  // and, with FEATURES_OK, features that pass the same checks as a FEATURES_OK write.
  // Returns why not (and changes nothing), or an empty string.
  std::string restore(uint8_t status, uint64_t driver_features, uint32_t device_features_select,
                      uint32_t driver_features_select);

 private:
  // Why the current driver features cannot be accepted, or empty.
  std::string check_features() const;

  const uint64_t device_features_;
  const FeatureCheck check_;
  uint8_t status_ = 0;
  uint64_t driver_features_ = 0;
  uint32_t device_features_select_ = 0;
  uint32_t driver_features_select_ = 0;
};

}  // namespace skiff::virtio
