// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <optional>

#include "skiff/error.h"

namespace skiff::virtio {

// How a transport hands a queue's notification eventfd to the hypervisor, so that the
// guest's notify write signals the device thread without a user-space exit (KVM
// ioeventfd). The VMM implements it over KvmVm; tests use a fake.
class NotifyRegistrar {
 public:
  virtual ~NotifyRegistrar() = default;
  virtual Result<void> add(int event_fd, uint64_t address, uint32_t length, std::optional<uint64_t> datamatch) = 0;
  virtual void remove(int event_fd, uint64_t address, uint32_t length, std::optional<uint64_t> datamatch) = 0;
};

}  // namespace skiff::virtio
