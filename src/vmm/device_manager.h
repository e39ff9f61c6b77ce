// SPDX-License-Identifier: Apache-2.0
// The VM's device manager thread ("skiff-devices"): it runs virtio activate() and reset()
// for the vCPU thread that wrote the status register, which waits for the result. Starting
// a device creates threads, io_uring rings, epoll sets and timers and sets tap offloads;
// doing it here keeps all of that out of the vCPU threads' seccomp filter (docs/security.md).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "security/seccomp_filter.h"
#include "skiff/error.h"
#include "virtio/core/device_call_runner.h"

namespace skiff {

class DeviceManagerThread final : public virtio::DeviceCallRunner {
 public:
  DeviceManagerThread() = default;
  ~DeviceManagerThread() override;  // stop()
  DeviceManagerThread(const DeviceManagerThread&) = delete;
  DeviceManagerThread& operator=(const DeviceManagerThread&) = delete;

  // Starts the thread under the device_manager filter in `mode`. Calls made before start()
  // or after stop() run on the calling thread.
  Result<void> start(SeccompMode mode);
  // Finishes the calls already queued, then ends and joins the thread. Idempotent.
  void stop();

  // virtio::DeviceCallRunner: runs `call` on the thread and waits for it. A call from the
  // thread itself runs at once.
  void run(const std::function<void()>& call) override;

 private:
  struct Request {
    const std::function<void()>* call = nullptr;
    bool done = false;
  };
  void loop();

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Request*> queue_;  // guarded by mutex_; each waits in run() until done
  bool running_ = false;        // guarded by mutex_: the thread takes requests
  bool stopping_ = false;       // guarded by mutex_
  std::thread::id thread_id_;
  std::thread thread_;
};

}  // namespace skiff
