// SPDX-License-Identifier: Apache-2.0
// GET /metrics: a VmStats in the Prometheus text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/): "# HELP" and "# TYPE"
// before each family, names prefixed skiff_, counters ending in _total, base units
// (bytes, seconds), one label per device (vcpu="0", disk="root", net="eth0").
#pragma once

#include <string>
#include <string_view>

#include "skiff/stats.h"

namespace skiff::api {

// The Content-Type of the text format.
inline constexpr std::string_view kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string format_prometheus_metrics(const VmStats& stats);

// A label value with \, " and newline escaped as the format requires.
std::string escape_label_value(std::string_view value);

}  // namespace skiff::api
