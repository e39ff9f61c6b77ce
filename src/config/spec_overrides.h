// SPDX-License-Identifier: Apache-2.0
// Helpers for command-line flags that override fields of a VmSpec.
#pragma once

#include <cstdint>
#include <string_view>

#include "skiff/error.h"

namespace skiff::config {

// Parses a guest memory size as the CLI takes it and returns it in MiB: a plain number is
// MiB ("512"); the suffixes M/MiB and G/GiB (and T/TiB) are binary units, case-insensitive
// ("512M", "512MiB", "2G", "2GiB"). Rejects 0, junk, signs, spaces, decimal units such as
// "MB" and sizes that overflow. Range limits are left to validate_spec.
Result<uint64_t> parse_memory_size(std::string_view text);

}  // namespace skiff::config
