// SPDX-License-Identifier: Apache-2.0
// The JSON documents of the control API (docs/api.md).
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "skiff/spec.h"
#include "skiff/state.h"
#include "skiff/stats.h"

namespace skiff::api {

// GET /vm: {"state": "running", "uptime_s": 12.5, "spec": {...}}.
nlohmann::json vm_info_to_json(VmState state, const VmSpec& spec, double uptime_s);

// GET /vm/stats.
nlohmann::json stats_to_json(const VmStats& stats);

// Every error response: {"error": "<message>"}.
std::string error_body(std::string_view message);

}  // namespace skiff::api
