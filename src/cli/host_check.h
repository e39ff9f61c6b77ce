// SPDX-License-Identifier: Apache-2.0
#pragma once

namespace skiff::cli {

// `skiff host-check`: what this host offers skiff. Returns the process exit code.
int run_host_check(bool json_output);

}  // namespace skiff::cli
