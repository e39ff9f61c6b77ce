// SPDX-License-Identifier: Apache-2.0
// The lifecycle of a VM as the API and embedders see it (Vm::state(), VmStats::state):
//
//   created ──start──> running ──pause──> paused
//      │                 │  <──resume──     │
//      │                 └──> stopping <────┘   (graceful shutdown or hard stop begins)
//      │                         │
//      └──────────> stopped <────┘
//
// A request the current state does not allow fails with ErrorKind::kState and a message
// that names the request and the state, e.g. "cannot pause: the VM is stopped".
#pragma once

#include <string_view>

namespace skiff {

enum class VmState { created, running, paused, stopping, stopped };

// "created", "running", "paused", "stopping", "stopped": the names the API reports.
std::string_view to_string(VmState state);

}  // namespace skiff
