// SPDX-License-Identifier: Apache-2.0
// Dropping root after the privileged set-up (docs/security.md, "Privilege model").
#pragma once

#include <sys/types.h>

#include "skiff/error.h"

namespace skiff::security {

// Gives up root for good: clears the supplementary groups, then sets the real, effective
// and saved gid and uid to `gid` and `uid`, and checks that root cannot be regained
// (setuid(0) must fail). Call it after /dev/kvm, the taps, the disks and every other file
// are open, and before any thread installs a seccomp filter: glibc makes every thread
// repeat setgroups/setgid/setuid (the process-wide credential change), which the filters
// do not allow. `uid` and `gid` must not be 0.
Result<void> drop_privileges(uid_t uid, gid_t gid);

}  // namespace skiff::security
