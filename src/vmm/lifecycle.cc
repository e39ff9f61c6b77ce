// SPDX-License-Identifier: Apache-2.0
// Also defines to_string(VmState) of include/skiff/state.h: the state machine's names.
#include "vmm/lifecycle.h"

#include <fmt/format.h>

namespace skiff {

std::string_view to_string(VmState state) {
  switch (state) {
    case VmState::created:
      return "created";
    case VmState::running:
      return "running";
    case VmState::paused:
      return "paused";
    case VmState::stopping:
      return "stopping";
    case VmState::stopped:
      return "stopped";
  }
  return "unknown";
}

bool is_valid_transition(VmState from, VmState to) {
  switch (from) {
    case VmState::created:
      return to == VmState::running || to == VmState::stopped;
    case VmState::running:
      return to == VmState::paused || to == VmState::stopping;
    case VmState::paused:
      return to == VmState::running || to == VmState::stopping;
    case VmState::stopping:
      return to == VmState::stopped;
    case VmState::stopped:
      return false;
  }
  return false;
}

namespace {

// What a user asked for when they asked to move from `from` to `to`, for the refusal.
std::string_view request_name(VmState from, VmState to) {
  switch (to) {
    case VmState::created:
      return "return to created";
    case VmState::running:
      return from == VmState::created ? "start" : "resume";
    case VmState::paused:
      return "pause";
    case VmState::stopping:
      return "shut down";
    case VmState::stopped:
      return "stop";
  }
  return "change state";
}

}  // namespace

VmState Lifecycle::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

Result<void> Lifecycle::transition(VmState to) { return transition(to, {}); }

Result<void> Lifecycle::transition(VmState to, std::string_view request) {
  {
    std::lock_guard lock(mutex_);
    if (!is_valid_transition(state_, to)) {
      return state_error(fmt::format("cannot {}: the VM is {}",
                                     request.empty() ? request_name(state_, to) : request, to_string(state_)));
    }
    state_ = to;
  }
  changed_.notify_all();
  return {};
}

bool Lifecycle::wait_for(VmState target, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return state_ == target; });
}

}  // namespace skiff
