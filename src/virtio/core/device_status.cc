// SPDX-License-Identifier: Apache-2.0
#include "virtio/core/device_status.h"

#include <utility>

#include <fmt/format.h>

#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {
namespace {

// The bits the driver sets, in the order §3.1.1 sets them.
constexpr uint8_t kDriverBits =
    kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk | kStatusFailed;

// Status bits that are not defined in §2.1: the driver has no business setting them.
constexpr uint8_t kUndefinedBits = static_cast<uint8_t>(~(kDriverBits | kStatusNeedsReset));

}  // namespace

DeviceStatus::DeviceStatus(uint64_t device_features, FeatureCheck check)
    : device_features_(device_features), check_(std::move(check)) {}

bool DeviceStatus::driver_ok() const { return (status_ & kStatusDriverOk) != 0; }
bool DeviceStatus::features_ok() const { return (status_ & kStatusFeaturesOk) != 0; }
bool DeviceStatus::failed() const { return (status_ & kStatusFailed) != 0; }
bool DeviceStatus::needs_reset() const { return (status_ & kStatusNeedsReset) != 0; }

void DeviceStatus::reset() {
  status_ = 0;
  driver_features_ = 0;
  device_features_select_ = 0;
  driver_features_select_ = 0;
}

std::string DeviceStatus::check_features() const {
  if (uint64_t extra = driver_features_ & ~device_features_; extra != 0) {
    return fmt::format("the driver accepted features {:#x} the device did not offer (§2.2.1)",
                       extra);
  }
  // Only the modern interface is implemented: a driver without VERSION_1 is a legacy
  // driver, which this device cannot serve (§6: VIRTIO_F_VERSION_1).
  if (!has_feature(driver_features_, kFeatureVersion1)) {
    return "the driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)";
  }
  if (check_) return check_(driver_features_);
  return {};
}

StatusUpdate DeviceStatus::write_status(uint8_t value) {
  StatusUpdate update;
  if (value == 0) {
    // §2.4: writing 0 resets the device.
    reset();
    update.action = StatusAction::kReset;
    return update;
  }
  if ((value & kUndefinedBits) != 0) {
    update.refused = fmt::format("status {:#04x} sets undefined bits", value);
    return update;
  }
  uint8_t current = status_ & kDriverBits;
  uint8_t requested = value & kDriverBits;  // NEEDS_RESET is the device's
  if ((current & ~requested) != 0) {
    update.refused = fmt::format("status {:#04x} clears bits of {:#04x} (§2.1.1)", value, status_);
    return update;
  }
  if (failed() && requested != current) {
    update.refused = fmt::format("status {:#04x} after FAILED; only a reset is accepted", value);
    return update;
  }
  auto has = [requested](uint8_t bit) { return (requested & bit) != 0; };
  // §3.1.1: ACKNOWLEDGE, then DRIVER, then FEATURES_OK, then DRIVER_OK.
  if ((has(kStatusDriver) && !has(kStatusAcknowledge)) ||
      (has(kStatusFeaturesOk) && !has(kStatusDriver)) ||
      (has(kStatusDriverOk) && !has(kStatusFeaturesOk))) {
    update.refused = fmt::format(
        "status {:#04x} skips a step of ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK (§3.1.1)",
        value);
    return update;
  }
  uint8_t added = requested & ~current;
  if ((added & kStatusFeaturesOk) != 0) {
    if (std::string why = check_features(); !why.empty()) {
      // §2.2.2: the device MUST fail to set FEATURES_OK; the rest of the write stands,
      // except DRIVER_OK, which needs FEATURES_OK.
      update.refused = fmt::format("FEATURES_OK refused: {}", why);
      requested &= static_cast<uint8_t>(~(kStatusFeaturesOk | kStatusDriverOk));
      added &= static_cast<uint8_t>(~(kStatusFeaturesOk | kStatusDriverOk));
    }
  }
  status_ = static_cast<uint8_t>(requested | (status_ & kStatusNeedsReset));
  if ((added & kStatusDriverOk) != 0) update.action = StatusAction::kActivate;
  return update;
}

std::string DeviceStatus::restore(uint8_t status, uint64_t driver_features, uint32_t device_features_select,
                                  uint32_t driver_features_select) {
  if ((status & kUndefinedBits) != 0) return fmt::format("status {:#04x} sets undefined bits", status);
  auto has = [status](uint8_t bit) { return (status & bit) != 0; };
  if ((has(kStatusDriver) && !has(kStatusAcknowledge)) || (has(kStatusFeaturesOk) && !has(kStatusDriver)) ||
      (has(kStatusDriverOk) && !has(kStatusFeaturesOk))) {
    return fmt::format("status {:#04x} skips a step of ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK", status);
  }
  const uint64_t saved_features = driver_features_;
  driver_features_ = driver_features;
  if (has(kStatusFeaturesOk)) {
    if (std::string why = check_features(); !why.empty()) {
      driver_features_ = saved_features;
      return fmt::format("status {:#04x} has FEATURES_OK but {}", status, why);
    }
  }
  status_ = status;
  device_features_select_ = device_features_select;
  driver_features_select_ = driver_features_select;
  return {};
}

bool DeviceStatus::set_needs_reset() {
  status_ |= kStatusNeedsReset;
  return driver_ok();
}

uint32_t DeviceStatus::device_features_word() const {
  if (device_features_select_ >= 2) return 0;
  return static_cast<uint32_t>(device_features_ >> (32 * device_features_select_));
}

uint32_t DeviceStatus::driver_features_word() const {
  if (driver_features_select_ >= 2) return 0;
  return static_cast<uint32_t>(driver_features_ >> (32 * driver_features_select_));
}

bool DeviceStatus::write_driver_features_word(uint32_t value) {
  if (features_ok() || failed() || driver_features_select_ >= 2) return false;
  unsigned shift = 32 * driver_features_select_;
  driver_features_ = (driver_features_ & ~(uint64_t{0xffffffff} << shift)) |
                     (uint64_t{value} << shift);
  return true;
}

}  // namespace skiff::virtio
