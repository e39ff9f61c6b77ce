// SPDX-License-Identifier: Apache-2.0
// Starting a thread under its seccomp filter (docs/security.md, "Threads").
#pragma once

#include <functional>
#include <string>
#include <thread>

#include "common/event_loop.h"
#include "security/seccomp_filter.h"
#include "skiff/error.h"

namespace skiff::security {

// Starts a thread that names itself `name` (at most 15 characters are kept), installs
// `kind`'s filter in `mode`, and only then runs `body`. Returns once the filter is in
// place. When installing it fails, the thread ends without running `body` and the error
// (naming the thread) is returned; the caller then has nothing to join.
Result<std::thread> start_filtered_thread(std::string name, ThreadKind kind, SeccompMode mode,
                                          std::function<void()> body);

// start_filtered_thread with `kind` and `mode` bound: how a device's EventLoop starts, so
// its thread installs the filter before it runs any handler.
EventLoop::ThreadStarter filtered_thread_starter(ThreadKind kind, SeccompMode mode);

}  // namespace skiff::security
