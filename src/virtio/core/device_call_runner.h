// SPDX-License-Identifier: Apache-2.0
// Where a transport runs VirtioDevice::activate() and reset(). The driver triggers both
// from a vCPU thread (a write to the status register), but starting a device takes system
// calls a vCPU thread should not be allowed (threads, io_uring rings, epoll sets, tap
// offloads: docs/security.md). A VM therefore gives its transports a runner that makes the
// call on its device manager thread while the vCPU waits. Without a runner (unit tests,
// fuzzers) the transport calls the device directly.
#pragma once

#include <functional>

namespace skiff::virtio {

class DeviceCallRunner {
 public:
  virtual ~DeviceCallRunner() = default;
  // Runs `call` and returns once it has returned. Calls from several threads are run one
  // at a time.
  virtual void run(const std::function<void()>& call) = 0;
};

// `runner` when there is one, else the calling thread.
inline void run_device_call(DeviceCallRunner* runner, const std::function<void()>& call) {
  if (runner != nullptr) {
    runner->run(call);
  } else {
    call();
  }
}

}  // namespace skiff::virtio
