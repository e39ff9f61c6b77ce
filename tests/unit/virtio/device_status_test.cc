// SPDX-License-Identifier: Apache-2.0
#include "virtio/core/device_status.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>

#include "virtio/core/virtio_constants.h"
#include "virtio/core/virtio_device.h"

namespace skiff::virtio {
namespace {

constexpr uint64_t kOffered = feature_mask(kFeatureVersion1) |
                              feature_mask(kFeatureRingEventIdx) | feature_mask(5) | feature_mask(9);

constexpr uint8_t kAck = kStatusAcknowledge;
constexpr uint8_t kAckDriver = kStatusAcknowledge | kStatusDriver;
constexpr uint8_t kFeaturesOk = kAckDriver | kStatusFeaturesOk;
constexpr uint8_t kDriverOk = kFeaturesOk | kStatusDriverOk;

void write_features(DeviceStatus& status, uint64_t features) {
  status.set_driver_features_select(0);
  EXPECT_TRUE(status.write_driver_features_word(static_cast<uint32_t>(features)));
  status.set_driver_features_select(1);
  EXPECT_TRUE(status.write_driver_features_word(static_cast<uint32_t>(features >> 32)));
}

// Drives the §3.1.1 sequence up to FEATURES_OK with `features`.
void negotiate(DeviceStatus& status, uint64_t features) {
  EXPECT_EQ(status.write_status(kAck).action, StatusAction::kNone);
  EXPECT_EQ(status.write_status(kAckDriver).action, StatusAction::kNone);
  write_features(status, features);
  status.write_status(kFeaturesOk);
}

TEST(VirtioStatus, NormalSequenceActivatesOnce) {
  DeviceStatus status(kOffered);
  EXPECT_EQ(status.status(), 0);
  negotiate(status, feature_mask(kFeatureVersion1) | feature_mask(5));
  EXPECT_EQ(status.status(), kFeaturesOk);
  EXPECT_TRUE(status.features_ok());
  EXPECT_EQ(status.driver_features(), feature_mask(kFeatureVersion1) | feature_mask(5));
  StatusUpdate update = status.write_status(kDriverOk);
  EXPECT_EQ(update.action, StatusAction::kActivate);
  EXPECT_TRUE(update.refused.empty());
  EXPECT_TRUE(status.driver_ok());
  // Writing the same value again does not activate twice.
  EXPECT_EQ(status.write_status(kDriverOk).action, StatusAction::kNone);
}

TEST(VirtioStatus, AllStepsInOneWrite) {
  DeviceStatus status(kOffered);
  write_features(status, feature_mask(kFeatureVersion1));
  EXPECT_EQ(status.write_status(kDriverOk).action, StatusAction::kActivate);
  EXPECT_EQ(status.status(), kDriverOk);
}

TEST(VirtioStatus, WritingZeroResets) {
  DeviceStatus status(kOffered);
  negotiate(status, feature_mask(kFeatureVersion1));
  status.write_status(kDriverOk);
  status.set_needs_reset();
  status.set_driver_features_select(1);
  EXPECT_EQ(status.write_status(0).action, StatusAction::kReset);
  EXPECT_EQ(status.status(), 0);
  EXPECT_EQ(status.driver_features(), 0u);
  EXPECT_EQ(status.driver_features_select(), 0u);
  EXPECT_EQ(status.device_features(), kOffered);
}

TEST(VirtioStatus, FeaturesNotOfferedKeepFeaturesOkClear) {
  DeviceStatus status(kOffered);
  negotiate(status, feature_mask(kFeatureVersion1) | feature_mask(6));
  EXPECT_EQ(status.status(), kAckDriver);  // FEATURES_OK refused, the rest kept
  EXPECT_FALSE(status.features_ok());
  // DRIVER_OK cannot follow.
  StatusUpdate update = status.write_status(kDriverOk);
  EXPECT_EQ(update.action, StatusAction::kNone);
  EXPECT_FALSE(update.refused.empty());
  EXPECT_FALSE(status.driver_ok());
  // The driver may try again with a subset.
  write_features(status, feature_mask(kFeatureVersion1));
  EXPECT_TRUE(status.write_status(kFeaturesOk).refused.empty());
  EXPECT_TRUE(status.features_ok());
}

TEST(VirtioStatus, RefusalNamesTheFeatures) {
  DeviceStatus status(kOffered);
  status.write_status(kAckDriver);
  write_features(status, feature_mask(kFeatureVersion1) | feature_mask(6));
  StatusUpdate update = status.write_status(kFeaturesOk);
  EXPECT_NE(update.refused.find("0x40"), std::string::npos) << update.refused;
}

TEST(VirtioStatus, WithoutVersion1IsRefused) {
  DeviceStatus status(kOffered);
  status.write_status(kAckDriver);
  write_features(status, feature_mask(5));
  StatusUpdate update = status.write_status(kFeaturesOk);
  EXPECT_FALSE(status.features_ok());
  EXPECT_NE(update.refused.find("VERSION_1"), std::string::npos) << update.refused;
}

TEST(VirtioStatus, DeviceFeatureCheckCanRefuse) {
  DeviceStatus status(kOffered, [](uint64_t features) -> std::string {
    return has_feature(features, 9) && !has_feature(features, 5) ? "feature 9 needs feature 5"
                                                                  : "";
  });
  status.write_status(kAckDriver);
  write_features(status, feature_mask(kFeatureVersion1) | feature_mask(9));
  StatusUpdate update = status.write_status(kFeaturesOk);
  EXPECT_FALSE(status.features_ok());
  EXPECT_NE(update.refused.find("feature 9 needs feature 5"), std::string::npos);
  write_features(status, feature_mask(kFeatureVersion1) | feature_mask(9) | feature_mask(5));
  status.write_status(kFeaturesOk);
  EXPECT_TRUE(status.features_ok());
}

TEST(VirtioStatus, IllegalTransitionsAreRefused) {
  DeviceStatus status(kOffered);
  // DRIVER without ACKNOWLEDGE.
  EXPECT_FALSE(status.write_status(kStatusDriver).refused.empty());
  EXPECT_EQ(status.status(), 0);
  status.write_status(kAck);
  // FEATURES_OK without DRIVER.
  EXPECT_FALSE(status.write_status(kAck | kStatusFeaturesOk).refused.empty());
  status.write_status(kAckDriver);
  write_features(status, feature_mask(kFeatureVersion1));
  // DRIVER_OK without FEATURES_OK.
  StatusUpdate update = status.write_status(kAckDriver | kStatusDriverOk);
  EXPECT_EQ(update.action, StatusAction::kNone);
  EXPECT_FALSE(update.refused.empty());
  EXPECT_EQ(status.status(), kAckDriver);
}

TEST(VirtioStatus, ClearingABitIsRefused) {
  DeviceStatus status(kOffered);
  negotiate(status, feature_mask(kFeatureVersion1));
  StatusUpdate update = status.write_status(kAck);
  EXPECT_FALSE(update.refused.empty());
  EXPECT_EQ(status.status(), kFeaturesOk);
}

TEST(VirtioStatus, UndefinedBitsAreRefused) {
  DeviceStatus status(kOffered);
  EXPECT_FALSE(status.write_status(kAck | 0x10).refused.empty());
  EXPECT_FALSE(status.write_status(kAck | 0x20).refused.empty());
  EXPECT_EQ(status.status(), 0);
}

TEST(VirtioStatus, NeedsResetIsTheDevicesBit) {
  DeviceStatus status(kOffered);
  negotiate(status, feature_mask(kFeatureVersion1));
  EXPECT_FALSE(status.set_needs_reset());  // not DRIVER_OK yet: no config interrupt
  EXPECT_TRUE(status.needs_reset());
  EXPECT_EQ(status.status(), kFeaturesOk | kStatusNeedsReset);
  // The driver writes back what it read plus DRIVER_OK: NEEDS_RESET stays.
  EXPECT_EQ(status.write_status(kDriverOk | kStatusNeedsReset).action, StatusAction::kActivate);
  EXPECT_EQ(status.status(), kDriverOk | kStatusNeedsReset);
  EXPECT_TRUE(status.set_needs_reset());  // DRIVER_OK: the transport must interrupt
  // A driver write without the bit does not clear it either.
  status.write_status(kDriverOk);
  EXPECT_TRUE(status.needs_reset());
  status.write_status(0);
  EXPECT_FALSE(status.needs_reset());
}

TEST(VirtioStatus, FailedAcceptsOnlyReset) {
  DeviceStatus status(kOffered);
  status.write_status(kAckDriver);
  EXPECT_TRUE(status.write_status(kAckDriver | kStatusFailed).refused.empty());
  EXPECT_TRUE(status.failed());
  status.set_driver_features_select(1);
  EXPECT_FALSE(status.write_driver_features_word(1));  // ignored after FAILED
  EXPECT_EQ(status.driver_features(), 0u);
  EXPECT_FALSE(status.write_status(kAckDriver | kStatusFailed | kStatusFeaturesOk).refused.empty());
  EXPECT_EQ(status.write_status(0).action, StatusAction::kReset);
  EXPECT_EQ(status.status(), 0);
}

TEST(VirtioStatus, FeatureWordsBehindSelect) {
  DeviceStatus status(0x0000'0003'8000'0021);
  EXPECT_EQ(status.device_features_word(), 0x8000'0021u);
  status.set_device_features_select(1);
  EXPECT_EQ(status.device_features_select(), 1u);
  EXPECT_EQ(status.device_features_word(), 0x3u);
  status.set_device_features_select(2);
  EXPECT_EQ(status.device_features_word(), 0u);
  status.set_device_features_select(0xffffffff);
  EXPECT_EQ(status.device_features_word(), 0u);

  status.write_status(kAckDriver);
  status.set_driver_features_select(1);
  EXPECT_TRUE(status.write_driver_features_word(0x1));
  status.set_driver_features_select(0);
  EXPECT_TRUE(status.write_driver_features_word(0x21));
  EXPECT_EQ(status.driver_features(), 0x0000'0001'0000'0021u);
  EXPECT_EQ(status.driver_features_word(), 0x21u);
  status.set_driver_features_select(2);
  EXPECT_FALSE(status.write_driver_features_word(0xffffffff));
  EXPECT_EQ(status.driver_features_word(), 0u);
  EXPECT_EQ(status.driver_features(), 0x0000'0001'0000'0021u);
}

TEST(VirtioStatus, DriverFeaturesFrozenAfterFeaturesOk) {
  DeviceStatus status(kOffered);
  negotiate(status, feature_mask(kFeatureVersion1));
  ASSERT_TRUE(status.features_ok());
  status.set_driver_features_select(0);
  EXPECT_FALSE(status.write_driver_features_word(0xffffffff));
  EXPECT_EQ(status.driver_features(), feature_mask(kFeatureVersion1));
}

TEST(VirtioStatus, RestoreTakesAReachableStatus) {
  DeviceStatus status(kOffered);
  const uint8_t all = kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk;
  EXPECT_EQ(status.restore(all, feature_mask(kFeatureVersion1), 1, 1), "");
  EXPECT_TRUE(status.driver_ok());
  EXPECT_EQ(status.driver_features(), feature_mask(kFeatureVersion1));
  EXPECT_EQ(status.device_features_select(), 1u);
  // Before FEATURES_OK the driver may have written anything (checked at FEATURES_OK).
  DeviceStatus early(kOffered);
  EXPECT_EQ(early.restore(kStatusAcknowledge | kStatusDriver, ~uint64_t{0}, 0, 0), "");
}

TEST(VirtioStatus, RestoreRefusesUnreachableStatus) {
  DeviceStatus status(kOffered);
  // Undefined bit, a skipped step, FEATURES_OK with features never offered or without VERSION_1.
  EXPECT_NE(status.restore(0x10, 0, 0, 0), "");
  EXPECT_NE(status.restore(kStatusAcknowledge | kStatusFeaturesOk, feature_mask(kFeatureVersion1), 0, 0), "");
  const uint8_t features_ok = kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk;
  EXPECT_NE(status.restore(features_ok, ~uint64_t{0}, 0, 0), "");
  EXPECT_NE(status.restore(features_ok, 0, 0, 0), "");
  // Nothing changed.
  EXPECT_EQ(status.status(), 0);
  EXPECT_EQ(status.driver_features(), 0u);
}

TEST(VirtioStatusConfigBytes, ReadOutOfRangeIsZero) {
  std::array<uint8_t, 4> config{1, 2, 3, 4};
  std::array<uint8_t, 4> out{};
  out.fill(0xaa);
  read_config_bytes(config, 2, out);
  EXPECT_EQ(out, (std::array<uint8_t, 4>{3, 4, 0, 0}));
  out.fill(0xaa);
  read_config_bytes(config, 4, out);
  EXPECT_EQ(out, (std::array<uint8_t, 4>{0, 0, 0, 0}));
  out.fill(0xaa);
  read_config_bytes(config, ~uint64_t{0}, out);
  EXPECT_EQ(out, (std::array<uint8_t, 4>{0, 0, 0, 0}));
}

TEST(VirtioStatusConfigBytes, WriteOutOfRangeIsDropped) {
  std::array<uint8_t, 4> config{};
  std::array<uint8_t, 3> data{7, 8, 9};
  EXPECT_EQ(write_config_bytes(config, 2, data), 2u);
  EXPECT_EQ(config, (std::array<uint8_t, 4>{0, 0, 7, 8}));
  EXPECT_EQ(write_config_bytes(config, 4, data), 0u);
  EXPECT_EQ(write_config_bytes(config, ~uint64_t{0}, data), 0u);
}

}  // namespace
}  // namespace skiff::virtio
