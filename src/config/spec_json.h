// SPDX-License-Identifier: Apache-2.0
// The JSON form of a VmSpec (docs/config.md), for parse_spec and spec_to_json in spec.cc.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "skiff/error.h"
#include "skiff/spec.h"

namespace skiff::config {

// JSON text -> VmSpec: unknown keys, wrong types and malformed values are refused with the
// JSON pointer of the field; relative paths resolve against `base_dir`. The rules that span
// fields are not applied here (check_spec_rules).
Result<VmSpec> read_spec_json(std::string_view json_text, const std::filesystem::path& base_dir);

// VmSpec -> JSON text: every field, defaults included, so that read_spec_json gives the
// spec back.
std::string write_spec_json(const VmSpec& spec);

}  // namespace skiff::config
