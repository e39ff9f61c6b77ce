// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "memory/guest_memory.h"
#include "skiff/error.h"
#include "virtio/core/queue.h"

namespace skiff::virtio {

// The queue half of DRIVER_OK, shared by every transport (virtio_device.h): installs
// `on_fatal_error` as each queue's fatal-error handler (a driver that breaks a queue puts the
// device into DEVICE_NEEDS_RESET), activates every queue the driver made ready with the
// negotiated features, and returns the list handed to VirtioDevice::activate() (all queues,
// active or not). Fails on the first queue whose rings do not validate.
Result<std::vector<Queue*>> activate_queues(const std::vector<std::unique_ptr<Queue>>& queues,
                                            const GuestMemory& memory, uint64_t driver_features,
                                            const std::function<void()>& on_fatal_error);

}  // namespace skiff::virtio
