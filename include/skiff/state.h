// SPDX-License-Identifier: Apache-2.0
// The lifecycle of a VM as the API and embedders see it, and the one place that decides
// which state changes are allowed:
//
//   created ──start──> running ──pause──> paused
//      │                 │  <──resume──     │
//      │                 └──> stopping <────┘   (graceful shutdown or hard stop begins)
//      │                         │
//      └──────────> stopped <────┘
//
// Everything else is refused with an error that names the request and the current state,
// e.g. "cannot pause: the VM is stopped".
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string_view>

#include "skiff/error.h"

namespace skiff {

enum class VmState { created, running, paused, stopping, stopped };

// "created", "running", "paused", "stopping", "stopped": the names the API reports.
std::string_view to_string(VmState state);

// Whether `from -> to` is one of the transitions drawn above.
bool is_valid_transition(VmState from, VmState to);

// A VM's current state behind a lock. Thread-safe: the vCPU threads, the API server and
// the embedder may all call it.
class Lifecycle {
 public:
  explicit Lifecycle(VmState initial = VmState::created) : state_(initial) {}
  Lifecycle(const Lifecycle&) = delete;
  Lifecycle& operator=(const Lifecycle&) = delete;

  VmState state() const;

  // Moves to `to`, or refuses with a config error ("cannot resume: the VM is running") and
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
