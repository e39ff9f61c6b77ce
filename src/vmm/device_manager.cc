// SPDX-License-Identifier: Apache-2.0
#include "vmm/device_manager.h"

#include <utility>

#include "security/filtered_thread.h"

namespace skiff {

DeviceManagerThread::~DeviceManagerThread() { stop(); }

Result<void> DeviceManagerThread::start(SeccompMode mode) {
  std::unique_lock lock(mutex_);
  if (running_ || stopping_) return internal_error("the device manager thread was already started");
  lock.unlock();
  auto thread = security::start_filtered_thread("skiff-devices", security::ThreadKind::device_manager, mode,
                                                [this] { loop(); });
  if (!thread) return std::unexpected(thread.error());
  lock.lock();
  thread_id_ = thread->get_id();
  thread_ = std::move(*thread);
  running_ = true;
  changed_.notify_all();
  return {};
}

void DeviceManagerThread::stop() {
  std::thread thread;
  {
    std::lock_guard lock(mutex_);
    if (!thread_.joinable()) return;
    stopping_ = true;
    thread = std::move(thread_);
  }
  changed_.notify_all();
  thread.join();
  std::lock_guard lock(mutex_);
  running_ = false;
}

void DeviceManagerThread::run(const std::function<void()>& call) {
  std::unique_lock lock(mutex_);
  if (!running_ || stopping_ || std::this_thread::get_id() == thread_id_) {
    lock.unlock();
    call();
    return;
  }
  Request request;
  request.call = &call;
  queue_.push_back(&request);
  changed_.notify_all();
  changed_.wait(lock, [&] { return request.done; });
}

void DeviceManagerThread::loop() {
  std::unique_lock lock(mutex_);
  // start() records the thread's id and sets running_ once this thread exists; requests can
  // only arrive after that.
  for (;;) {
    changed_.wait(lock, [this] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) return;  // stopping, nothing left
    Request* request = queue_.front();
    queue_.pop_front();
    lock.unlock();
    (*request->call)();
    lock.lock();
    request->done = true;
    changed_.notify_all();
  }
}

}  // namespace skiff
