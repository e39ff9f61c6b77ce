// SPDX-License-Identifier: Apache-2.0
// Closing a KVM VM fd without waiting for KVM's teardown of the VM.
#pragma once

#include "common/unique_fd.h"

namespace skiff {

// Drops this process's reference to `vm_fd` so that the kernel's destruction of the VM runs
// in a short-lived orphaned process instead of in the caller's close() (or, if the caller is
// about to exit, in its exit). Why: the last close of a VM fd waits for SRCU grace periods
// and frees the memslots, ~15 ms on our hosts, which a `skiff run`/`skiff test` caller would
// otherwise wait for after the verdict is already known.
//
// How: fork twice (the middle process exits at once and is reaped here, so no zombie stays
// behind even in a long-lived embedder); the grandchild closes every other fd it inherited
// (stdout, disks, sockets: nobody waits on them because of us, and no file lock outlives
// the caller's own close), then waits for a pipe's EOF, which comes once the caller has
// closed its copy of the VM fd, so that the grandchild's close is the last one and the
// teardown is charged to it. Only raw system calls run after the forks (the caller may have
// other threads). When the forks fail, the fd is closed here as usual.
//
// Requirements: the caller's other references to the VM (vCPU fds, guest memory mappings)
// should be gone already, or the teardown still happens wherever the last one is dropped.
void close_vm_fd_in_background(UniqueFd vm_fd);

}  // namespace skiff
