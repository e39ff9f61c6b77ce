// SPDX-License-Identifier: Apache-2.0
// The state machine drawn in include/skiff/state.h, behind a lock: which state changes are
// allowed, and the refusal (ErrorKind::kState) for the others.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string_view>

#include "skiff/error.h"
#include "skiff/state.h"

namespace skiff {

// Whether `from -> to` is one of the transitions drawn in skiff/state.h.
bool is_valid_transition(VmState from, VmState to);

// A VM's current state behind a lock. Thread-safe: the vCPU threads, the API server and
// the embedder may all call it.
class Lifecycle {
 public:
  explicit Lifecycle(VmState initial = VmState::created) : state_(initial) {}
  Lifecycle(const Lifecycle&) = delete;
  Lifecycle& operator=(const Lifecycle&) = delete;

  VmState state() const;

  // Moves to `to`, or refuses with a state error ("cannot resume: the VM is running") and
  // leaves the state as it was. Moving to the current state is refused as well: callers
  // that want "pause a paused VM does nothing" check state() first.
  Result<void> transition(VmState to);
  // The same, naming the request in the refusal ("resume", "start"): use it where the
  // target state alone does not say what was asked (running is reached by start and resume).
  Result<void> transition(VmState to, std::string_view request);

  // Waits until the state is `target` (true) or `timeout` passes (false).
  bool wait_for(VmState target, std::chrono::milliseconds timeout) const;

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  VmState state_;
};

}  // namespace skiff
