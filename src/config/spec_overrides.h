// SPDX-License-Identifier: Apache-2.0
// The command line's overrides of a VmSpec: `skiff run` / `skiff test` flags that replace
// spec fields (--kernel, --vcpus, --memory, ...). They take precedence over the spec file;
// Vm::create validates the result with the spec's own rules.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "skiff/error.h"
#include "skiff/spec.h"

namespace skiff::config {

// Each field that is set replaces the spec's; unset fields leave the spec alone.
struct SpecOverrides {
  std::optional<std::string> kernel;          // --kernel: boot.kernel
  std::optional<std::string> initrd;          // --initrd: boot.initrd
  std::optional<std::string> cmdline;         // --cmdline: boot.cmdline
  std::optional<uint32_t> vcpus;              // --vcpus: machine.vcpus
  std::optional<std::string> memory;          // --memory (parse_memory_size): machine.memory_mib
  // --balloon-target (parse_memory_size, or "0"): balloon.target_mib; adds a balloon when the
  // spec has none.
  std::optional<std::string> balloon_target;
  // `skiff test`: the console goes to stdout and nothing is read from stdin.
  bool console_to_stdout = false;
};

// Applies `overrides` to `spec`. Errors name the flag, e.g. `--memory: memory size "5x": ...`.
Result<void> apply_spec_overrides(const SpecOverrides& overrides, VmSpec& spec);

// Parses a guest memory size as the CLI takes it and returns it in MiB: a plain number is
// MiB ("512"); the suffixes M/MiB and G/GiB (and T/TiB) are binary units, case-insensitive
// ("512M", "512MiB", "2G", "2GiB"). Rejects 0, junk, signs, spaces, decimal units such as
// "MB" and sizes that overflow. Range limits are left to validate_spec.
Result<uint64_t> parse_memory_size(std::string_view text);

}  // namespace skiff::config
