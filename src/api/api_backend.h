// SPDX-License-Identifier: Apache-2.0
// What the API server needs from a VM. The Vm implements it; tests use a fake. The server
// calls it from its own thread, one request at a time, so implementations must be
// thread-safe against the VM's threads but not against each other.
//
// Errors: a request the VM's state does not allow (pause a stopped VM, ...) is an
// ErrorKind::kState error and becomes 409 Conflict; a config error (set_balloon_target_mib:
// no balloon, target too large) becomes 400; host, guest and internal errors become 500.
#pragma once

#include <chrono>
#include <cstdint>

#include "skiff/error.h"
#include "skiff/spec.h"
#include "skiff/state.h"
#include "skiff/stats.h"

namespace skiff::api {

class ApiBackend {
 public:
  virtual ~ApiBackend() = default;

  virtual VmState state() const = 0;
  // The spec the VM was built from (GET /vm).
  virtual VmSpec spec() const = 0;
  // Seconds since the VM started; 0 before it has.
  virtual double uptime_s() const = 0;

  virtual Result<void> pause() = 0;
  virtual Result<void> resume() = 0;
  // Begins a graceful shutdown and returns at once; the VM is stopped hard when the guest
  // has not powered off after `timeout`.
  virtual Result<void> shutdown(std::chrono::milliseconds timeout) = 0;
  // Stops the VM now (no guest involvement); returns once it is asked, not when it ended.
  virtual Result<void> stop() = 0;

  virtual VmStats stats() const = 0;
  virtual Result<void> set_balloon_target_mib(uint64_t mib) = 0;
};

}  // namespace skiff::api
